#!/usr/bin/env bash
# Make sure a Docker daemon answers: start dockerd by hand when nothing runs it (the machines this project is
# tested on have no init system). tests/bench/host_packages.sh installs it.
set -euo pipefail
cache="${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}"
mkdir -p "$cache"
"$(dirname "${BASH_SOURCE[0]}")/host_packages.sh"

if docker info >/dev/null 2>&1; then
  exit 0
fi

echo "bench: starting dockerd (log: $cache/dockerd.log)"
rm -f /var/run/docker.pid
setsid nohup dockerd --pidfile "$cache/dockerd.pid" >"$cache/dockerd.log" 2>&1 < /dev/null &
deadline=$((SECONDS + 60))
until docker info >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "bench: dockerd did not answer within 60 s; its log:" >&2
    tail -n 30 "$cache/dockerd.log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "bench: dockerd ready"
