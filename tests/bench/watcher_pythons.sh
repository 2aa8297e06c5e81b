#!/usr/bin/env bash
# The spot watcher's unit tests under the host Pythons the spot_interruption role claims: the watcher runs with the
# host's system python3 (Amazon Linux 2023: 3.9, Ubuntu 22.04: 3.10; Debian 12's 3.11 is the control venv's).
#
# Usage: tests/bench/watcher_pythons.sh [VERSION...]   (default: 3.9.18 3.10.13, from pyenv)
# Each version gets a small cached venv holding only pytest (8.4: the last line that still runs on 3.9), built once
# under the bench cache and reused; a `.complete` marker is written last, so an interrupted build is redone.
#
# Environment:
#   LLMSERVE_CACHE  cache root (default ~/.cache/llmserve-aws)
#   PYENV_ROOT      where pyenv keeps its interpreters (default: `pyenv root`, else ~/.pyenv)
#   LLMSERVE_VERIFY_REPORTS  a folder (make test's gate): one junit report per version goes there
set -euo pipefail

readonly PYTEST_VERSION=8.4.2
readonly TESTS=(tests/unit/test_spot_watcher.py)

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "$script_path")/../.." && pwd)
cache_root=${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}
pyenv_root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
versions=("$@")
[[ ${#versions[@]} -gt 0 ]] || versions=(3.9.18 3.10.13)

log() { printf '[watcher_pythons] %s\n' "$*" >&2; }

cd "$repo_root"
for version in "${versions[@]}"; do
  python="$pyenv_root/versions/$version/bin/python"
  if [[ ! -x "$python" ]]; then
    log "Python $version not found at $python (pyenv install $version)"
    exit 2
  fi
  venv="$cache_root/watcher-py$version-pytest$PYTEST_VERSION"
  if [[ ! -f "$venv/.complete" ]]; then
    log "building $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pytest==$PYTEST_VERSION"
    touch "$venv/.complete"
  fi
  log "Python $version: ${TESTS[*]}"
  # -c /dev/null and --noconftest: neither the project's pytest.ini nor its conftest files (control-side code,
  # Python 3.11); the watcher's unit tests need neither.
  report=()
  [[ -n ${LLMSERVE_VERIFY_REPORTS:-} ]] && report=(--junitxml "$LLMSERVE_VERIFY_REPORTS/watcher-py$version.xml")
  PYTEST_ADDOPTS='' "$venv/bin/python" -m pytest -q -p no:cacheprovider -c /dev/null --rootdir "$repo_root" \
    --noconftest "${report[@]}" "${TESTS[@]}"
done
