#!/usr/bin/env bash
# Ensure the cached galaxy-importer venv exists; print its path on stdout's last line (progress goes to stderr).
#
# galaxy-importer runs the checks Galaxy and Automation Hub run on upload (tests/galaxy/import.sh). It gets a venv
# of its own, keyed by a hash of requirements/galaxy-importer.txt and this script, so its pins (flake8,
# pycodestyle, ansible-builder, bindep) never touch the control venv. Built in place; a `.complete` marker is
# written last, and a folder without it is an interrupted build, removed and rebuilt.
#
# Environment:
#   LLMSERVE_CACHE  cache root (default ~/.cache/llmserve-aws)
set -euo pipefail

readonly PIP_VERSION=24.2

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "$script_path")/../.." && pwd)
requirements="$repo_root/requirements/galaxy-importer.txt"
cache_root=${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}
base_python=${PYTHON:-python3.11}

log() { printf '[galaxy_importer_venv] %s\n' "$*" >&2; }

recipe_hash=$(cat "$requirements" "$script_path" | sha256sum | cut -c1-12)
venv="$cache_root/galaxy-importer-venv-$recipe_hash"

if [[ -f "$venv/.complete" ]]; then
    log "cached: $venv"
    printf '%s\n' "$venv"
    exit 0
fi

mkdir -p "$cache_root"
# One builder at a time per recipe: a second checkout waits here instead of building twice.
exec {lock_fd}>"$venv.lock"
flock "$lock_fd"
if [[ -f "$venv/.complete" ]]; then
    log "built meanwhile by another process: $venv"
    printf '%s\n' "$venv"
    exit 0
fi

started=$SECONDS
if [[ -e "$venv" ]]; then
    log "removing incomplete build $venv"
    rm -rf "$venv"
fi
log "creating $venv with $base_python"
"$base_python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install -q "pip==$PIP_VERSION" >&2
# --no-deps: the file is the complete, resolved set.
"$venv/bin/python" -m pip install -q --no-deps -r "$requirements" >&2
"$venv/bin/python" -m pip check >&2
touch "$venv/.complete"
log "built $venv in $((SECONDS - started)) s"
printf '%s\n' "$venv"
