#!/usr/bin/env bash
# `make test`: run every gate even when an earlier one fails, so one run shows every failure, then print one
# summary line. pytest gates count their test cases; lint, sanity and each molecule scenario count as one each.
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

count_junit() {  # prints "passed failed" from a junit XML report
  python - "$1" <<'PY'
import sys
import xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suites = [suite] if suite.tag == "testsuite" else suite.findall("testsuite")
total = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(total - bad - skipped, bad)
PY
}

gate() {  # gate NAME [junit] -- make-target [make args...]
  local name="$1" junit="" t0=$SECONDS rc
  shift
  if [ "$1" = junit ]; then junit="$reports/$name.xml"; shift; fi
  echo "==== gate: $name"
  if [ -n "$junit" ]; then
    PYTEST_ADDOPTS="--junitxml=$junit" make --no-print-directory "$@" 2>&1 | tee "$reports/$name.log"
  else
    make --no-print-directory "$@" 2>&1 | tee "$reports/$name.log"
  fi
  rc=${PIPESTATUS[0]}
  if [ -n "$junit" ] && [ -s "$junit" ]; then
    read -r p f < <(count_junit "$junit")
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
gate unit junit unit
gate integration junit integration
for scenario in $(make --no-print-directory -s print-molecule-scenarios); do
  gate "molecule-$scenario" molecule ROLE="$scenario"
done

# CI keeps only the tail of this output: end with why each failed gate failed.
for name in "${failed_gates[@]}"; do
  echo "==== why $name failed (full log: tests/output/gates/$name.log)"
  # Molecule frames its output in colour and a box; strip both before looking for pytest/Ansible failure lines.
  sed -E 's/\x1b\[[0-9;]*m//g; s/^ *│ ?//' "$reports/$name.log" \
    | grep -a -E '^(FAILED|ERROR) |^E   |fatal: \[|^ERROR|\*\*\* ' | grep -a -v 'RETRYING' | cut -c1-400 | tail -n 40
done
echo "make test took $((SECONDS - started)) s; failed gates: ${failed_gates[*]:-none}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
