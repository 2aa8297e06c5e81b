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
passed=0
failed=0
failed_gates=()
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

gate() {  # gate NAME make-target [make args...]
  # pytest (PYTEST_ADDOPTS) and molecule's verifier (LLMSERVE_VERIFY_REPORTS) write junit reports into the gate's
  # folder; a gate with reports counts their test cases, one without counts as one.
  local name="$1" dir="$reports/$1" t0=$SECONDS rc reports_found
  shift
  mkdir -p "$dir"
  echo "==== gate: $name"
  PYTEST_ADDOPTS="--junitxml=$dir/pytest.xml" LLMSERVE_VERIFY_REPORTS="$dir" \
    make --no-print-directory "$@" 2>&1 | tee "$reports/$name.log"
  rc=${PIPESTATUS[0]}
  reports_found=("$dir"/*.xml)
  if [ -e "${reports_found[0]}" ]; then
    read -r p f < <(junit counts "${reports_found[@]}")
    passed=$((passed + p)); failed=$((failed + f))
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && failed=$((failed + 1))
  elif [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
  [ "$rc" -ne 0 ] && failed_gates+=("$name")
  echo "==== gate: $name: $([ "$rc" -eq 0 ] && echo ok || echo FAILED) in $((SECONDS - t0)) s"
}

gate lint lint
gate sanity sanity
gate galaxy-import galaxy-import
gate unit unit
gate watcher-pythons test-watcher-pythons
gate integration integration
for scenario in $(make --no-print-directory -s print-molecule-scenarios); do
  gate "molecule-$scenario" molecule ROLE="$scenario"
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
