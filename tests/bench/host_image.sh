#!/usr/bin/env bash
# Build the bench's "EC2 host": Debian bookworm with systemd, from Debian's packages with debootstrap and
# `docker import` (no image registry is reachable). The tag carries a hash of this recipe, so the image is
# built once and reused; the rootfs tarball is cached too (cache.sh), so a wiped Docker data root re-imports in
# seconds. Prints the image name on the last line of stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/bench/cache.sh
source "$here/cache.sh"
cache_init host_image
mirror="${LLMSERVE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# libnuma1: vllm._C links it; python3-venv: roles build venvs on the host; the rest: Ansible + systemd.
packages=systemd,systemd-sysv,dbus,python3,python3-apt,python3-venv,iproute2,procps,ca-certificates,sudo,curl,libnuma1

recipe_hash="$(cache_key "${BASH_SOURCE[0]}")"
image="llmserve-bench-host:${recipe_hash}"

build_rootfs_tarball() {
  local tarball=$1
  # Global, not local: the EXIT trap runs after the function has returned.
  rootfs="$(mktemp -d "$LLMSERVE_CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  cache_log "debootstrap bookworm into $rootfs (1-3 min, once per recipe)"
  debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >"$LLMSERVE_CACHE/debootstrap.log" 2>&1 \
    || { tail -n 30 "$LLMSERVE_CACHE/debootstrap.log" >&2; exit 1; }
  # An empty machine-id lets systemd generate one per container; apt lists are dead weight.
  : >"$rootfs/etc/machine-id"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -cf "$tarball" .
}

"$here/dockerd.sh" >&2

if ! docker image inspect "$image" >/dev/null 2>&1; then
  tarball="$(cache_ensure "$LLMSERVE_CACHE/host-image-${recipe_hash}.tar" build_rootfs_tarball | tail -n 1)"
  cache_log "importing $tarball as $image"
  docker import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=docker' \
    "$tarball" "$image" >&2
fi
echo "$image"
