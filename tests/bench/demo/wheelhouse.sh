#!/usr/bin/env bash
# Wheels for the roles' own venvs on the demo host (model_sync's S3 tools, the spot watcher's boto3): the host
# installs them offline, as hosts in private subnets do (its pip cannot reach PyPI through this machine's CA).
# Cached by the pins; prints the folder on the last line.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cache="${LLMSERVE_CACHE:-$HOME/.cache/llmserve-aws}"
mapfile -t pins < <(python - "$repo" <<'PY'
import sys
import yaml
repo = sys.argv[1]
model_sync = yaml.safe_load(open(repo + "/roles/model_sync/defaults/main.yml"))
spot = yaml.safe_load(open(repo + "/roles/spot_interruption/defaults/main.yml"))
pins = set(model_sync["model_sync_pip_packages"]) | {"boto3==" + str(spot["spot_interruption_boto3_version"])}
print("\n".join(sorted(pins)))
PY
)
dest="$cache/wheelhouse/demo-$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-12)"
if [ ! -d "$dest" ]; then
  rm -rf "$dest.tmp"
  python -m pip download --quiet --disable-pip-version-check --only-binary=:all: --python-version 3.11 \
    --dest "$dest.tmp" "${pins[@]}"
  mv "$dest.tmp" "$dest"
fi
echo "$dest"
