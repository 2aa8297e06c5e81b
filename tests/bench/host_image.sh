#!/usr/bin/env bash
# Build the bench's "EC2 host": Debian bookworm with systemd, from Debian's packages with debootstrap and
# `docker import` (no image registry is reachable). The tag carries a hash of this recipe, so the image is
# built once and reused; the rootfs tarball is cached too, so a wiped Docker data root re-imports in seconds.
# Prints the image name on the last line of stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}"
mirror="${LLMSERVE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# libnuma1: vllm._C links it; python3-venv: roles build venvs on the host; the rest: Ansible + systemd.
packages=systemd,systemd-sysv,dbus,python3,python3-apt,python3-venv,iproute2,procps,ca-certificates,sudo,curl,libnuma1

recipe_hash="$(sha256sum < "${BASH_SOURCE[0]}" | cut -c1-12)"
image="llmserve-bench-host:${recipe_hash}"
tarball="$cache/host-image-${recipe_hash}.tar"

"$here/dockerd.sh" >&2

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

if [ ! -s "$tarball" ]; then
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  echo "bench: debootstrap bookworm into $rootfs (1-3 min, once per recipe)" >&2
  debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
  # An empty machine-id lets systemd generate one per container; apt lists are dead weight.
  : >"$rootfs/etc/machine-id"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi

echo "bench: importing $tarball as $image" >&2
docker import \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change 'ENV container=docker' \
  "$tarball" "$image" >&2
echo "$image"
