#!/usr/bin/env bash
# Wheels for the roles' own venvs on the demo host (model_sync's S3 tools, the spot watcher's boto3): the host
# installs them offline, as hosts in private subnets do (its pip cannot reach PyPI through this machine's CA).
# Cached by the pins; prints the folder on the last line.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
# shellcheck source=tests/bench/cache.sh
source "$repo/tests/bench/cache.sh"
cache_init demo_wheelhouse
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

download_pins() {
  python -m pip download --quiet --disable-pip-version-check --only-binary=:all: --python-version 3.11 \
    --dest "$1" "${pins[@]}"
}

cache_ensure "$LLMSERVE_CACHE/wheelhouse/demo-$(printf '%s\n' "${pins[@]}" | cache_key -)" download_pins
