#!/usr/bin/env bash
# Run `ansible-test sanity` for real, offline from Ansible's CI file host: ansible-test bootstraps pip in its
# venvs with a get-pip.py it downloads from there, so we cache a stand-in where it looks for one
# (~/.ansible/test/cache, under a project HOME kept in the bench cache, which also keeps its venvs warm).
# The collection must sit at ansible_collections/llmserve/aws/, so the tree is copied to .build/ first.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}"
test_home="$cache/ansible-test-home"
wheel_dir="$test_home/.ansible/test/cache/pip-wheels"
python_version="$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

mkdir -p "$test_home/.ansible/test/cache" "$wheel_dir"
if ! ls "$wheel_dir"/pip-24.2-*.whl >/dev/null 2>&1; then
  python -m pip download -q --no-deps --only-binary=:all: -d "$wheel_dir" 'pip==24.2'
fi
cp "$repo/tests/sanity/get_pip_standin.py" "$test_home/.ansible/test/cache/get_pip_24_2.py"

# Outside the checkout (inside it, ansible-test would ask git and find the copy ignored), one per run, so that
# concurrent runs from several checkouts do not share it.
mkdir -p "$cache/sanity"
work="$(mktemp -d "$cache/sanity/run.XXXXXX")"
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/llmserve/aws"
mkdir -p "$dest"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) \
  | (cd "$repo" && tar --null -T - -cf -) | tar -C "$dest" -xf -
# The collections ours imports (amazon.aws module_utils, community.aws) sit beside it, as ansible-test expects,
# taken from the `ansible` package in the control venv.
site_collections="$(python -c 'import ansible_collections.amazon, os; print(os.path.dirname(list(ansible_collections.amazon.__path__)[0]))')"
for namespace in amazon community; do
  ln -sfn "$site_collections/$namespace" "$dest/../../$namespace"
done

cd "$dest"
export HOME="$test_home"
ansible-test sanity --venv --python "$python_version" --color no "$@"
