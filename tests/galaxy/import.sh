#!/usr/bin/env bash
# `make galaxy-import`: build the collection tarball and run Galaxy's import checks on it (galaxy-importer, offline,
# with tests/galaxy/galaxy-importer.cfg: ansible-doc, ansible-lint, flake8, changelog, tags, role READMEs).
# The importer logs most findings as warnings and still "completes successfully", which Galaxy then shows on the
# collection's page; so any WARNING or ERROR line fails this gate, and each is printed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}"
venv="$("$repo/tests/bench/galaxy_importer_venv.sh" | tail -n 1)"

# Outside the checkout, one per run: the importer writes importer_result.json into its working folder. Its HOME
# (ansible-lint's and ansible-doc's caches under ~/.ansible) is kept between runs: a warm one saves seconds.
home="$cache/galaxy-import/home"
mkdir -p "$home"
work="$(mktemp -d "$cache/galaxy-import/run.XXXXXX")"
trap 'rm -rf "$work"' EXIT

(cd "$repo" && "$venv/bin/ansible-galaxy" collection build --force --output-path "$work" >/dev/null)
tarballs=("$work"/llmserve-aws-*.tar.gz)
tarball="${tarballs[0]}"

# Galaxy renders module docs with the collections galaxy.yml depends on installed (the AWS modules' doc fragments
# come from amazon.aws). The importer sets ANSIBLE_COLLECTIONS_PATH to its own unpacked copy, so the dependencies
# reach ansible-doc through Python's path (ansible-core also scans sys.path for ansible_collections/), taken from the
# `ansible` package in the control venv as for `make sanity`.
site_collections="$(python -c 'import ansible_collections.amazon, os; print(os.path.dirname(list(ansible_collections.amazon.__path__)[0]))')"
for collection in $(python -c 'import sys, yaml; print(" ".join(yaml.safe_load(open(sys.argv[1]))["dependencies"]))' \
    "$repo/galaxy.yml"); do
  mkdir -p "$work/dependencies/ansible_collections/${collection%%.*}"
  ln -s "$site_collections/${collection/.//}" "$work/dependencies/ansible_collections/${collection/.//}"
done
echo "galaxy-importer $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("galaxy-importer"))')" \
  "on ${tarball##*/}"

# The importer calls ansible-doc, ansible-lint and flake8 by name: its venv's, not the control venv's.
rc=0
(cd "$work" && env PATH="$venv/bin:$PATH" GALAXY_IMPORTER_CONFIG="$repo/tests/galaxy/galaxy-importer.cfg" \
  PYTHONPATH="$work/dependencies" HOME="$home" "$venv/bin/python" -m galaxy_importer.main "$tarball") >"$work/import.log" 2>&1 || rc=$?

# galaxy-importer 0.4.44 hands flake8 the YAML documentation of filter and test plugins (plugins/filter/<name>.yml,
# the file ansible-doc names for the filter) as if it were Python; E999 there says nothing about the collection.
importer_defect='^WARNING: plugins/(filter|test)/[^:/]+[.]ya?ml:[0-9]+:[0-9]+: E999 '
grep -a -E "$importer_defect" "$work/import.log" | sed 's/^/not counted (flake8 run on YAML by the importer): /' || true
complaints="$(grep -a -E '^(WARNING|ERROR|CRITICAL)' "$work/import.log" | grep -a -v -E "$importer_defect" || true)"
tail -n 5 "$work/import.log"
if [ "$rc" -ne 0 ] || [ -n "$complaints" ]; then
  echo "*** galaxy-importer complained (exit $rc) about:"
  if [ -n "$complaints" ]; then
    printf '%s\n' "$complaints" | sed 's/^/*** /'
  else
    sed 's/^/*** /' "$work/import.log" | tail -n 40
  fi
  exit 1
fi
echo "galaxy-importer: no warnings, no errors"
