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
#   SIDECAR_TEST_OVERLAP=0   build build-asan/ and build-fuzz/ only when their stage comes
#
# While the default ctest runs (its tests mostly wait on sockets and timers), the sanitizer tree
# and then the fuzz tree are built in the background under SCHED_IDLE: they get only CPU time no
# test wants, so the tests' deadlines see the same machine as without them. Each build's output
# is printed when its stage comes. Every stage line carries its start time and duration.
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

# CPU time of a process and of the children it has waited for (user + system), in seconds; a
# stage's CPU is the difference for this shell, which waits for everything a stage starts.
clk_tck="$(getconf CLK_TCK 2>/dev/null || echo 100)"
cpu_seconds() { # pid
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
  stat="${stat##*) }"
  # shellcheck disable=SC2086 # split into fields: after "comm)" the state is field 1
  set -- $stat
  echo $(((${12} + ${13} + ${14} + ${15}) / clk_tck))
}
stage_start=0
stage_cpu=0
stage_begin() { # title
  stage_start=$SECONDS
  stage_cpu="$(cpu_seconds $$)"
  echo "==== $1  [$(date -u +%H:%M:%S) UTC, +${SECONDS}s]"
}
took() { echo "$((SECONDS - stage_start))s, $(($(cpu_seconds $$) - stage_cpu))s CPU"; }

# Configures and builds one tree; extra args go to cmake.
configure_and_build() { # build_dir cmake_args...
  local dir="$1"
  shift
  cmake -S "$repo_root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" &&
    cmake --build "$dir" -j"$jobs"
}

# Runs ctest in one build directory and records the result.
run_ctest() { # label build_dir
  local label="$1" dir="$2"
  stage_begin "$label: ctest"
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
  record "$label ctest" "$rc" "$passed passed, $failed failed, $(took)"
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

sanitize=1
if [ "${SIDECAR_TEST_SANITIZE:-1}" = "0" ]; then sanitize=0; fi
fuzz=1
if [ "${SIDECAR_TEST_FUZZ:-1}" = "0" ] || [ ! -e "$repo_root/scripts/fuzz.sh" ]; then fuzz=0; fi
asan_dir="$repo_root/build-asan"
# -O1 with line tables, as the sanitizers' documentation advises: reports keep file:line, and
# it compiles in about half the CPU time of -O2 -g under ASan.
asan_flags="-O1 -g1 -DNDEBUG"
build_asan() {
  configure_and_build "$asan_dir" -DSIDECAR_SANITIZE=address,undefined \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="$asan_flags" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$asan_flags"
}
build_fuzz() { FUZZ_BUILD_ONLY=1 bash "$repo_root/scripts/fuzz.sh"; }

# The background builds run one after the other in one subshell; each leaves "status seconds" in
# $bg_dir/NAME.rc and its output in $bg_dir/NAME.log. bg_wait NAME blocks until NAME.rc exists
# (the subshell holds NAME.lock while it builds NAME).
bg_dir="$(mktemp -d -t sidecar-test-bg.XXXXXX)"
bg_pid=""
cleanup_bg() {
  if [ -n "$bg_pid" ]; then kill -- "$bg_pid" 2>/dev/null || true; fi
  rm -rf "$bg_dir"
}
trap cleanup_bg EXIT
start_background_builds() { # name...
  local name
  for name in "$@"; do : >"$bg_dir/$name.pending"; done
  (
    for name in "$@"; do
      # SCHED_IDLE for this shell and so for every compiler it starts (nice 19 where not allowed),
      # again for each build: a stage that waited on the one before moved this shell back.
      chrt --idle -p 0 "$BASHPID" >/dev/null 2>&1 || renice -n 19 -p "$BASHPID" >/dev/null 2>&1 || true
      exec {lock}>"$bg_dir/$name.lock"
      flock "$lock"
      rm -f "$bg_dir/$name.pending"
      local_start=$SECONDS
      local_cpu="$(cpu_seconds "$BASHPID")"
      "build_$name" >"$bg_dir/$name.log" 2>&1 </dev/null
      rc=$?
      echo "$rc $((SECONDS - local_start))s, $(($(cpu_seconds "$BASHPID") - local_cpu))s CPU" \
        >"$bg_dir/$name.rc"
      exec {lock}>&-
    done
  ) &
  bg_pid=$!
}
# Once a stage waits for a background build, that build needs the CPU at full priority: on a
# machine shared with other work SCHED_IDLE could starve it. Moves pid and its descendants back
# to the normal policy (children started later inherit it from their parents).
unidle_tree() { # pid
  local pid="$1" child
  chrt --other -p 0 "$pid" >/dev/null 2>&1 || renice -n 0 -p "$pid" >/dev/null 2>&1 || true
  for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do unidle_tree "$child"; done
}
# Builds NAME now, or waits for its background build; prints its output; returns its status.
build_stage() { # name
  local name="$1" rc
  bg_info=""
  if [ -e "$bg_dir/$name.rc" ] || [ -e "$bg_dir/$name.pending" ] || [ -e "$bg_dir/$name.lock" ]; then
    if [ ! -e "$bg_dir/$name.rc" ] && [ -n "$bg_pid" ]; then unidle_tree "$bg_pid"; fi
    while [ -e "$bg_dir/$name.pending" ]; do
      # Not started yet: it starts once the build before it ends; wait for that one.
      sleep 1
    done
    flock "$bg_dir/$name.lock" true
    cat "$bg_dir/$name.log"
    read -r rc _ <"$bg_dir/$name.rc"
    bg_info="built in the background: $(cut -d' ' -f2- "$bg_dir/$name.rc")"
    echo "($name $bg_info)"
    return "$rc"
  fi
  "build_$name"
}

stage_begin bootstrap
"$repo_root/scripts/bootstrap.sh"
record bootstrap $? "$(took)"

stage_begin "default: configure + build in $repo_root/build"
if configure_and_build "$repo_root/build"; then
  record "default build" 0 "$(took)"
  bg=()
  if [ "${SIDECAR_TEST_OVERLAP:-1}" != "0" ]; then
    if [ "$sanitize" = 1 ]; then bg+=(asan); fi
    if [ "$fuzz" = 1 ]; then bg+=(fuzz); fi
  fi
  if [ "${#bg[@]}" -gt 0 ]; then
    echo "==== building in the background under SCHED_IDLE while ctest runs: ${bg[*]}"
    start_background_builds "${bg[@]}"
  fi
  run_ctest default "$repo_root/build"
else
  record "default build" 1 "$(took)"
  record "default ctest" 1 "not run: build failed"
fi

if [ "$sanitize" = 1 ]; then
  stage_begin "sanitize: configure + build in $asan_dir"
  if build_stage asan; then
    record "sanitize build" 0 "$(took)${bg_info:+; $bg_info}"
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
    run_ctest sanitize "$asan_dir"
    unset ASAN_OPTIONS UBSAN_OPTIONS
  else
    record "sanitize build" 1 "$(took)${bg_info:+; $bg_info}"
    record "sanitize ctest" 1 "not run: build failed"
  fi
else
  summary+=("SKIP  sanitize (SIDECAR_TEST_SANITIZE=0)")
fi

if [ "$fuzz" = 1 ]; then
  stage_begin "fuzz: build"
  build_stage fuzz
  record "fuzz build" $? "$(took)${bg_info:+; $bg_info}"
  stage_begin fuzz
  bash "$repo_root/scripts/fuzz.sh" 20
  record fuzz $? "$(took)"
else
  summary+=("SKIP  fuzz")
fi

if [ "${SIDECAR_TEST_SOAK:-1}" != "0" ]; then
  stage_begin soak
  SOAK_BIN="$repo_root/build/sidecar" bash "$repo_root/scripts/soak.sh" 1
  record soak $? "$(took)"
else
  summary+=("SKIP  soak (SIDECAR_TEST_SOAK=0)")
fi

echo
echo "==== summary  [$(date -u +%H:%M:%S) UTC, total ${SECONDS}s]"
printf '%s\n' "${summary[@]}"
echo "$total_passed passed, $total_failed failed"
[ "$failed_stages" -eq 0 ]
