# shellcheck shell=bash
# The bench's one cache helper, sourced by the scripts that build its parts (host_image.sh, vllm_venv.sh,
# vllm_wheelhouse.sh, models.sh, s3_tools.sh, demo/wheelhouse.sh). Each part lives under $LLMSERVE_CACHE at a
# path carrying the hash of its recipe, is built once (one builder per path, others wait on its lock), and the
# script prints its path on stdout's last line; progress goes to stderr.
#
#   source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/cache.sh"
#   cache_init my_part                                      # names the log lines
#   key=$(cache_key recipe-file...)                         # or: printf '%s\n' "${pins[@]}" | cache_key -
#   cache_ensure "$LLMSERVE_CACHE/part-$key" build_part     # build_part DEST: writes the part at DEST
#   cache_ensure --in-place "$LLMSERVE_CACHE/venv-$key" build_venv
#
# A part is built at a temporary path and renamed into place, so an existing path is always whole; venvs are not
# relocatable, so --in-place builds at the final path and marks it complete with a `.complete` file written last
# (a folder without it is an interrupted build, removed and rebuilt).

export LLMSERVE_CACHE=${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}
cache_name=bench

cache_init() { cache_name=$1; }

cache_log() { printf '[%s] %s\n' "$cache_name" "$*" >&2; }

# 12 hex digits of the SHA-256 of the files given, one after the other (- is stdin): a recipe's key.
cache_key() {
    cat -- "$@" | sha256sum | cut -c1-12
}

# Debian's python3.11 with venv and pip, the interpreter the bench host runs (venvs built with it run there
# unchanged, wheels collected with its pip carry its tags).
readonly CACHE_BASE_PYTHON=/usr/bin/python3.11
cache_require_base_python() {
    if ! "$CACHE_BASE_PYTHON" -c 'import ensurepip, pip' 2>/dev/null; then
        cache_log "installing Debian's python3.11, python3.11-venv and python3-pip (apt-get)"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv python3-pip >&2
    fi
}

# cache_ensure [--in-place] PATH BUILD [ARGS...]: build PATH once with `BUILD DEST ARGS...`, then print PATH.
cache_ensure() {
    local in_place=false
    if [[ "$1" == --in-place ]]; then in_place=true; shift; fi
    local path=$1 build=$2
    shift 2
    local done_marker=$path
    if $in_place; then done_marker=$path/.complete; fi
    if [[ -e "$done_marker" ]]; then
        cache_log "cached: $path"
        printf '%s\n' "$path"
        return 0
    fi
    mkdir -p "$(dirname "$path")"
    local lock_fd
    exec {lock_fd}>"$path.lock"
    flock "$lock_fd"
    if [[ -e "$done_marker" ]]; then
        cache_log "built meanwhile by another process: $path"
    else
        local started=$SECONDS dest=$path
        if $in_place; then
            [[ -e "$path" ]] && cache_log "removing incomplete build $path"
            rm -rf "$path"
        else
            dest=$path.part
            rm -rf "$dest"
        fi
        cache_log "building $path"
        "$build" "$dest" "$@"
        if $in_place; then touch "$path/.complete"; else mv -T "$dest" "$path"; fi
        cache_log "built $path in $((SECONDS - started)) s"
    fi
    exec {lock_fd}>&-
    printf '%s\n' "$path"
}
