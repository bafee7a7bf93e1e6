#!/usr/bin/env bash
# Runs one integration test file with the sidecar under valgrind memcheck and fails on any memory
# error or definite leak. Builds a RelWithDebInfo binary without sanitizers (valgrind and ASan do
# not mix) in build-valgrind/, writes a wrapper there that execs valgrind on it, and points the
# harness at the wrapper through SIDECAR_BIN.
# Usage: scripts/valgrind.sh [test file under test/integration, default test_core.py] [pytest args]
# Exits 0 when every sidecar the tests started exited with a clean valgrind report, 1 when a
# report shows errors or definite leaks, when a sidecar died without one, or when the tests failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-valgrind
test_file=${1:-test_core.py}
shift || true

if ! command -v valgrind >/dev/null; then
  echo "valgrind is not installed: apt-get install valgrind" >&2
  exit 2
fi
if [[ ! -f $root/test/integration/$test_file ]]; then
  echo "no such test file: test/integration/$test_file" >&2
  exit 2
fi

mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_SANITIZE=OFF \
  -DSIDECAR_BENCH=OFF >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2
  exit 1
}
cmake --build "$build" -j2 --target sidecar

# One report per process (%p), in a directory emptied first so that old reports cannot pass or
# fail this run.
reports=$build/valgrind-reports
rm -rf "$reports"
mkdir -p "$reports"

# The harness drops SIDECAR_* variables from the child's environment, so the wrapper carries
# every path it needs itself. --error-exitcode makes a bad report visible in the exit status too,
# for tests that check how the sidecar exited.
wrapper=$build/sidecar-valgrind
cat >"$wrapper" <<EOF
#!/bin/sh
exec valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite \\
  --show-leak-kinds=definite --error-exitcode=99 --track-origins=yes --num-callers=30 \\
  --log-file="$reports/valgrind.%p.log" "$build/sidecar" "\$@"
EOF
chmod +x "$wrapper"

echo "== $test_file with the sidecar under valgrind (reports in $reports)"
test_status=0
(cd "$root/test/integration" &&
  SIDECAR_BIN=$wrapper timeout --kill-after=30 1800 \
    /usr/bin/python3 -m pytest -q "$test_file" "$@") || test_status=$?

# Judge every report. A process killed before it could exit (SIGKILL after the harness's stop
# timeout) writes no ERROR SUMMARY: that is a failure too, since its leaks went unchecked.
bad=0
checked=0
for log in "$reports"/valgrind.*.log; do
  [[ -f $log ]] || continue
  # --version, --help and --check-config runs are checked like any other.
  checked=$((checked + 1))
  summary=$(grep -E 'ERROR SUMMARY: [0-9]+ errors' "$log" | tail -n 1 || true)
  definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tail -n 1 | tr -d ,)
  if [[ -z $summary ]]; then
    echo "NO SUMMARY (killed before exit?): $log" >&2
    bad=$((bad + 1))
  elif ! grep -qE 'ERROR SUMMARY: 0 errors' <<<"$summary" || [[ ${definite:-0} != 0 ]]; then
    echo "ERRORS: $log: $summary definitely-lost=${definite:-0}" >&2
    grep -E '^==[0-9]+== (Invalid|Conditional|Syscall|Mismatched|Source and dest| *at |  by |[0-9,]+ bytes in)' \
      "$log" | head -n 60 >&2 || true
    bad=$((bad + 1))
  fi
done

echo "== valgrind: $checked report(s), $bad bad; pytest exit $test_status"
if ((checked == 0)); then
  echo "no valgrind report was written: did the tests start the sidecar?" >&2
  exit 1
fi
if ((bad > 0 || test_status != 0)); then
  exit 1
fi
echo "valgrind: clean"
