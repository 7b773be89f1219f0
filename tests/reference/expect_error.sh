# Sourced by the bad-input tests: `expect NAME PATTERN... -- COMMAND...` runs COMMAND and
# passes when it fails cleanly -- non-zero exit, no signal or crash report, no hang
# (EXPECT_TIMEOUT seconds, default 60) -- with every PATTERN in its output. Counts `failures`.
failures=${failures:-0}
expect() {
  local name="$1"; shift
  local patterns=()
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  local out rc
  out=$(timeout "${EXPECT_TIMEOUT:-60}" "$@" 2>&1); rc=$?
  if [ $rc -eq 0 ]; then echo "FAIL [$name] exited 0"; failures=$((failures+1)); return; fi
  if [ $rc -eq 124 ]; then echo "FAIL [$name] hung (timeout)"; failures=$((failures+1)); return; fi
  if [ $rc -gt 128 ] || grep -q "Segmentation fault\|signal 11\|core dumped" <<<"$out"; then
    echo "FAIL [$name] crashed (exit $rc): $out"; failures=$((failures+1)); return
  fi
  for p in "${patterns[@]}"; do
    if ! grep -qF -- "$p" <<<"$out"; then
      echo "FAIL [$name] message lacks '$p': $out"; failures=$((failures+1)); return
    fi
  done
  echo "PASS [$name] (exit $rc): $(grep -m1 'error' <<<"$out" | head -c 220)"
}
