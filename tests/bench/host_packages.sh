#!/usr/bin/env bash
# Debian packages the tests need on the machine running them: Docker (the systemd host), debootstrap (its
# image), shellcheck (ansible-test sanity), HAProxy (the ALB stand-in, tests/bench/alb_standin.py). Installs only what is missing, so a second run costs nothing.
set -euo pipefail
declare -A wanted=([dockerd]=docker.io [debootstrap]=debootstrap [shellcheck]=shellcheck [haproxy]=haproxy)
missing=()
for program in "${!wanted[@]}"; do
  command -v "$program" >/dev/null || missing+=("${wanted[$program]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "bench: missing ${missing[*]}; install them with your OS's package manager (see README 'Other systems')" >&2
  exit 1
fi
echo "bench: installing ${missing[*]} from Debian"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
