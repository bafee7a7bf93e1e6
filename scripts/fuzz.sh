#!/usr/bin/env bash
# Builds every libFuzzer target with clang in build-fuzz/ and runs each for a bounded time.
# Usage: scripts/fuzz.sh [seconds-per-target, default 30] [target...]
#   e.g. scripts/fuzz.sh 300 fuzz_jwt fuzz_xff   (only those two, five minutes each)
#   FUZZ_BUILD_ONLY=1 scripts/fuzz.sh   only configure and build build-fuzz/
# Each fuzzer starts from a scratch copy of test/fuzz/corpus/<name>/ in test/fuzz/corpus-run/
# (git-ignored), so the checked-in seeds never grow. Crash inputs and logs go to build-fuzz/.
# After fuzzing, the grown corpus is replayed once with FUZZ_STATS=1 (test/fuzz/fuzz_stats.h):
# that prints how often each limit branch was reached (431, 1009, accepted and refused tokens...)
# and the target fails if a branch it must reach was never reached.
# Exits non-zero if any fuzzer finds a crash, a leak, a timeout or a sanitizer report, or leaves
# a required branch unreached.
set -euo pipefail

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: $0 [seconds-per-target] [target...]" >&2
  exit 2
fi
shift $(($# > 0 ? 1 : 0))
only=("$@")

# Inputs longer than the limit a target tests are needed to reach it. fuzz_http and fuzz_ws set
# small limits from the input itself (a head limit of 64..4144 bytes, a message limit of
# 16..1036), so 8 KiB passes both; the others test nothing that long inputs reach.
max_len_for() {
  case $1 in
    fuzz_http | fuzz_ws) echo 8192 ;;
    fuzz_jwt) echo 4096 ;;
    *) echo 2048 ;;
  esac
}

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-fuzz
run_corpus=$root/test/fuzz/corpus-run
logs=$build/fuzz-logs
artifacts=$build/fuzz-artifacts

mkdir -p "$build"
# libFuzzer is clang's; the bench tools are not fuzzed, so they stay out of this tree.
# -O1 with line tables is what OSS-Fuzz builds fuzzers with: sanitizer reports keep file:line,
# and the instrumented build costs 10-15 % less CPU than -O2 -g.
fuzz_flags="-O1 -gline-tables-only -DNDEBUG"
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSIDECAR_FUZZ=ON -DSIDECAR_BENCH=OFF \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="$fuzz_flags" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$fuzz_flags" \
  >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2
  exit 1
}
cmake --build "$build" -j2 --target fuzz
# FUZZ_BUILD_ONLY=1: build the targets and stop (scripts/test.sh builds them ahead of the run).
if [[ ${FUZZ_BUILD_ONLY:-0} == 1 ]]; then exit 0; fi

# Artifacts from an earlier run would make this run's failure report ambiguous.
rm -rf "$logs" "$artifacts"
mkdir -p "$logs" "$artifacts"
# One target: fuzz for $seconds from a scratch copy of its seeds, then replay the grown corpus
# with the branch counters on. Prints its report and leaves "ok" or "failed" in $logs/NAME.result.
fuzz_target() { # bin
  local bin=$1 name seeds work log max_len status execs cov stats_log rc
  name=$(basename "$bin")
  seeds=$root/test/fuzz/corpus/${name#fuzz_}
  work=$run_corpus/${name#fuzz_}
  rm -rf "$work"
  mkdir -p "$work"
  if [[ -d $seeds ]]; then cp -r "$seeds"/. "$work"/; fi

  log=$logs/$name.log
  max_len=$(max_len_for "$name")
  echo "== $name: ${seconds}s, -max_len=$max_len, from $(find "$work" -type f | wc -l) seed files"
  status=0
  # -timeout bounds one input; -max_total_time bounds the run. The outer timeout is a backstop
  # in case the fuzzer ignores both (for example stuck in a sanitizer report).
  timeout --kill-after=10 $((seconds + 60)) "$bin" -max_total_time="$seconds" -timeout=10 \
    -max_len="$max_len" -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$name-" "$work" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  echo "   exit=$status executions=${execs:-?} ${cov} corpus=$(find "$work" -type f | wc -l) log=$log"
  if ((status != 0)); then
    grep -E 'ERROR|SUMMARY|fuzz_[a-z0-9]+:|Test unit written' "$log" | head -n 20 || true
    echo failed >"$logs/$name.result"
    return
  fi

  # One pass over the grown corpus with the branch counters on: shows that the limits were
  # reached, and fails the target when a required one was not.
  stats_log=$logs/$name.stats.log
  rc=0
  FUZZ_STATS=1 timeout --kill-after=10 120 "$bin" -runs=0 -max_len="$max_len" \
    -rss_limit_mb=2048 "$work" >"$stats_log" 2>&1 || rc=$?
  # fuzz_utf8 has no limit branches and so no counters; the others print one line each.
  grep '^fuzz_stats:' "$stats_log" | sed 's/^/   /' || true
  if ((rc != 0)) || grep -q 'UNREACHED' "$stats_log"; then
    echo "   $name: the corpus replay failed or left a required branch unreached"
    echo failed >"$logs/$name.result"
    return
  fi
  echo ok >"$logs/$name.result"
}

# Targets run side by side, one per core (FUZZ_JOBS to change it); each one's report is printed
# whole, in target order, once it is done.
fuzz_jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
names=()
for bin in "$build"/test/fuzz/fuzz_*; do
  [[ -f $bin && -x $bin ]] || continue
  name=$(basename "$bin")
  if ((${#only[@]} > 0)) && [[ " ${only[*]} " != *" $name "* ]]; then continue; fi
  names+=("$name")
  while (($(jobs -rp | wc -l) >= fuzz_jobs)); do wait -n || true; done
  fuzz_target "$bin" >"$logs/$name.report" 2>&1 &
done
wait
failed=()
ran=${#names[@]}
for name in "${names[@]}"; do
  cat "$logs/$name.report"
  if [[ $(cat "$logs/$name.result" 2>/dev/null) != ok ]]; then
    failed+=("$name")
  fi
done

if ((ran == 0)); then
  echo "fuzz: no fuzz targets were built in $build/test/fuzz" >&2
  exit 1
fi
if ((${#failed[@]} > 0)); then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $artifacts)" >&2
  exit 1
fi
echo "fuzz: all targets ran ${seconds}s without a crash"
