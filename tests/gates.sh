#!/usr/bin/env bash
# `make test`: run every gate even when an earlier one fails, so one run shows every failure, then print one
# summary line. Gates whose tests write junit reports (pytest, molecule's verifiers) count the test cases; lint,
# sanity and galaxy-import count as one each, and so does a scenario that fails before its verifier.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1
reports="$repo/tests/output/gates"
rm -rf "$reports"
mkdir -p "$reports"
started=$SECONDS

junit() {  # junit counts|failures REPORT...: "passed failed" over the reports, or one line per failed test
  python - "$@" <<'PY'
import sys
import xml.etree.ElementTree as ET
mode, paths = sys.argv[1], sys.argv[2:]
passed = failed = 0
for path in paths:
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        problem = case.find("failure")
        problem = problem if problem is not None else case.find("error")
        if problem is not None:
            failed += 1
            if mode == "failures":
                message = " ".join((problem.get("message") or problem.text or "").split())
                print("FAILED %s::%s: %s" % (case.get("classname"), case.get("name"), message[:600]))
        elif case.find("skipped") is None:
            passed += 1
if mode == "counts":
    print(passed, failed)
PY
}

gate() {  # gate NAME make-target [make args...]; LLMSERVE_GATE_QUIET=1: into its log only, not on stdout too
  # pytest (PYTEST_ADDOPTS, LLMSERVE_JUNIT_DIR) and molecule's verifier (LLMSERVE_VERIFY_REPORTS) write junit
  # reports into the gate's folder; a gate with reports counts their test cases, one without counts as one. The
  # outcome goes to NAME.result ("rc passed failed seconds"), so that gates run in a background lane count too.
  local name="$1" dir="$reports/$1" t0=$SECONDS rc reports_found p=0 f=0
  shift
  mkdir -p "$dir"
  echo "==== gate: $name"
  if [ "${LLMSERVE_GATE_QUIET:-0}" = 1 ]; then
    PYTEST_ADDOPTS="--junitxml=$dir/pytest.xml" LLMSERVE_JUNIT_DIR="$dir" LLMSERVE_VERIFY_REPORTS="$dir" \
      make --no-print-directory "$@" >"$reports/$name.log" 2>&1
    rc=$?
  else
    PYTEST_ADDOPTS="--junitxml=$dir/pytest.xml" LLMSERVE_JUNIT_DIR="$dir" LLMSERVE_VERIFY_REPORTS="$dir" \
      make --no-print-directory "$@" 2>&1 | tee "$reports/$name.log"
    rc=${PIPESTATUS[0]}
  fi
  reports_found=("$dir"/*.xml)
  if [ -e "${reports_found[0]}" ]; then
    read -r p f < <(junit counts "${reports_found[@]}")
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  elif [ "$rc" -eq 0 ]; then
    p=1
  else
    f=1
  fi
  echo "$rc $p $f $((SECONDS - t0))" >"$reports/$name.result"
  echo "==== gate: $name: $([ "$rc" -eq 0 ] && echo ok || echo FAILED) in $((SECONDS - t0)) s"
}

# Build or reuse what every gate needs once, before two lanes could race to make the same venv or image (a
# failure here shows again in the first gate that needs the part).
make --no-print-directory venv host-packages bench || echo "==== set-up failed; the gates below show where"

# Two phases of two lanes each, since no gate keeps both cores busy for long on its own (pytest's and molecule's
# waits, single-threaded pip and Ansible); every wait in the gates is bounded in minutes, not tuned to an idle
# machine. First: the static gates and the AWS integration tests (no host container, no vLLM, no fixed port)
# beside the scenarios without a drill and the vLLM integration tests (their drain of 16 long streams must end
# within a Spot notice, which a machine running three more vLLMs does not leave it). Then the fleet scenario (its
# hosts serve, roll and drill through the ALB) beside the vllm_service scenario. Each background lane's log is
# shown when it ends; the gates in each phase are split so that both lanes end at about the same time.
lane() {  # lane NAME "GATE TARGET [ARGS]"...: those gates in the background, one at a time, each into its log
  local name="$1" spec
  shift
  (
    export LLMSERVE_GATE_QUIET=1
    for spec in "$@"; do
      # shellcheck disable=SC2086  # the spec's words: the gate's name, its make target and arguments
      gate $spec
    done
  ) &
  lane_pids[$name]=$!
  lane_gates[$name]="$(printf '%s\n' "$@" | cut -d' ' -f1 | tr '\n' ' ')"
}

show_lane() {  # show_lane NAME: wait for the lane, then show each of its gates' log and outcome
  local name="$1" gate_name rc seconds
  wait "${lane_pids[$name]}"
  for gate_name in ${lane_gates[$name]}; do
    echo "==== log of the $name lane's gate $gate_name"
    cat "$reports/$gate_name.log"
    read -r rc _ _ seconds <"$reports/$gate_name.result"
    echo "==== gate: $gate_name: $([ "$rc" -eq 0 ] && echo ok || echo FAILED) in $seconds s ($name lane)"
  done
}

declare -A lane_pids lane_gates
read -r -a scenarios < <(make --no-print-directory -s print-molecule-scenarios)
# First phase.
lane static "sanity sanity" "unit unit" "watcher-pythons test-watcher-pythons" "integration-aws integration-aws" \
  "lint lint"
first_phase_scenarios=(gpu_check model_sync)
for scenario in "${first_phase_scenarios[@]}"; do
  gate "molecule-$scenario" molecule ROLE="$scenario"
done
gate integration-vllm integration-vllm
gate galaxy-import galaxy-import
show_lane static
# Second phase: the fleet in the foreground (the longest), the vllm_service scenario beside it.
beside_fleet=vllm_service
lane beside-fleet "molecule-$beside_fleet molecule ROLE=$beside_fleet"
for scenario in "${scenarios[@]}"; do
  [[ " ${first_phase_scenarios[*]} $beside_fleet " == *" $scenario "* ]] && continue
  gate "molecule-$scenario" molecule ROLE="$scenario"
done
show_lane beside-fleet

failed_gates=()
passed=0
failed=0
for result in "$reports"/*.result; do
  name="$(basename "$result" .result)"
  read -r rc p f _ <"$result"
  passed=$((passed + p)); failed=$((failed + f))
  [ "$rc" -ne 0 ] && failed_gates+=("$name")
done

# CI keeps only the tail of this output: end with why each failed gate failed.
for name in "${failed_gates[@]}"; do
  echo "==== why $name failed (full log: tests/output/gates/$name.log)"
  reports_found=("$reports/$name"/*.xml)
  [ -e "${reports_found[0]}" ] && junit failures "${reports_found[@]}"
  # Molecule frames its output in colour and a box; strip both before looking for pytest/Ansible failure lines.
  sed -E 's/\x1b\[[0-9;]*m//g; s/^ *│ ?//' "$reports/$name.log" \
    | grep -a -E '^(FAILED|ERROR) |^E   |fatal: \[|^ERROR|\*\*\* ' | grep -a -v 'RETRYING' | cut -c1-400 | tail -n 40
done
echo "make test took $((SECONDS - started)) s; failed gates: ${failed_gates[*]:-none}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
