#!/usr/bin/env bash
# Runs every check the project has, in order: bootstrap, a RelWithDebInfo build with all ctest
# tests (unit + integration), the same under ASan/UBSan, a short fuzz run (20 s per target) and a
# one-minute soak of the default build (scripts/soak.sh). Every stage runs
# even when an earlier one failed, so one report shows everything; the exit status is non-zero
# when any stage failed.
#   SIDECAR_TEST_SANITIZE=0  skip the sanitizer stage
#   SIDECAR_TEST_FUZZ=0      skip the fuzz stage
#   SIDECAR_TEST_SOAK=0      skip the soak stage
#   SIDECAR_TEST_TIMEOUT=N   per-test timeout in seconds for tests without their own (default 600)
#   SIDECAR_TEST_REGEX=RE    only ctest tests whose name matches RE
#   SIDECAR_TEST_JOBS=N      ctest tests run at once (default: the number of cores)
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# Two runs at once would rebuild build/ and build-asan/ under each other's running tests, so
# runs on one checkout take turns.
lock_file="${TMPDIR:-/tmp}/sidecar-test-$(printf '%s' "$repo_root" | cksum | cut -d' ' -f1).lock"
exec 9>"$lock_file"
if ! flock -n 9; then
  echo "test.sh: another run on $repo_root is in progress; waiting for it (at most 1 hour)"
  flock -w 3600 9 || { echo "test.sh: gave up waiting for $lock_file" >&2; exit 1; }
fi

jobs="$(nproc 2>/dev/null || echo 2)"
test_jobs="${SIDECAR_TEST_JOBS:-$jobs}"
timeout_s="${SIDECAR_TEST_TIMEOUT:-600}"
summary=()
failed_stages=0
total_passed=0
total_failed=0

record() { # name status detail
  local name="$1" status="$2" detail="${3:-}"
  if [ "$status" -eq 0 ]; then
    summary+=("PASS  $name${detail:+  ($detail)}")
  else
    summary+=("FAIL  $name${detail:+  ($detail)}")
    failed_stages=$((failed_stages + 1))
  fi
}

# Configures, builds and runs ctest in one build directory; extra args go to cmake.
build_and_test() { # label build_dir cmake_args...
  local label="$1" dir="$2"
  shift 2
  echo "==== $label: configure + build in $dir"
  if ! cmake -S "$repo_root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" ||
    ! cmake --build "$dir" -j"$jobs"; then
    record "$label build" 1
    record "$label ctest" 1 "not run: build failed"
    return
  fi
  record "$label build" 0

  echo "==== $label: ctest"
  local log="$dir/ctest-summary.log" regex=()
  if [ -n "${SIDECAR_TEST_REGEX:-}" ]; then regex=(-R "$SIDECAR_TEST_REGEX"); fi
  # One test per core: most integration files wait on sockets and timers; the ones that load a
  # core themselves are RUN_SERIAL in CMakeLists.txt.
  (cd "$dir" && ctest --output-on-failure --timeout "$timeout_s" -j"$test_jobs" "${regex[@]}") \
    2>&1 | tee "$log"
  local rc="${PIPESTATUS[0]}"
  # ctest ends with "N% tests passed, F tests failed out of T".
  local line passed=0 failed=0 total=0
  line="$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1)"
  if [ -n "$line" ]; then
    failed="$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")"
    total="$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")"
    passed=$((total - failed))
  elif [ "$rc" -ne 0 ]; then
    failed=1
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  record "$label ctest" "$rc" "$passed passed, $failed failed"
  # ctest hides the output of tests that passed, so a pytest skip would pass unseen; every
  # skipped test is listed with its reason (pytest -rs prints "SKIPPED [n] file:line: reason").
  local skipped
  skipped="$(grep -hE '^SKIPPED \[' "$dir/Testing/Temporary/LastTest.log" 2>/dev/null || true)"
  if [ -n "$skipped" ]; then
    echo "==== $label: skipped tests"
    echo "$skipped"
    while IFS= read -r line; do summary+=("SKIP  $label: ${line#SKIPPED }"); done <<<"$skipped"
  fi
}

echo "==== bootstrap"
"$repo_root/scripts/bootstrap.sh"
record bootstrap $?

build_and_test default "$repo_root/build"

if [ "${SIDECAR_TEST_SANITIZE:-1}" != "0" ]; then
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
  build_and_test sanitize "$repo_root/build-asan" -DSIDECAR_SANITIZE=address,undefined
  unset ASAN_OPTIONS UBSAN_OPTIONS
else
  summary+=("SKIP  sanitize (SIDECAR_TEST_SANITIZE=0)")
fi

if [ -x "$repo_root/scripts/fuzz.sh" ] && [ "${SIDECAR_TEST_FUZZ:-1}" != "0" ]; then
  echo "==== fuzz"
  "$repo_root/scripts/fuzz.sh" 20
  record fuzz $?
elif [ -e "$repo_root/scripts/fuzz.sh" ] && [ "${SIDECAR_TEST_FUZZ:-1}" != "0" ]; then
  echo "==== fuzz"
  bash "$repo_root/scripts/fuzz.sh" 20
  record fuzz $?
else
  summary+=("SKIP  fuzz")
fi

if [ "${SIDECAR_TEST_SOAK:-1}" != "0" ]; then
  echo "==== soak"
  SOAK_BIN="$repo_root/build/sidecar" bash "$repo_root/scripts/soak.sh" 1
  record soak $?
else
  summary+=("SKIP  soak (SIDECAR_TEST_SOAK=0)")
fi

echo
echo "==== summary"
printf '%s\n' "${summary[@]}"
echo "$total_passed passed, $total_failed failed"
[ "$failed_stages" -eq 0 ]
