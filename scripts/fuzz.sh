#!/usr/bin/env bash
# Builds every libFuzzer target with clang in build-fuzz/ and runs each for a bounded time.
# Usage: scripts/fuzz.sh [seconds-per-target, default 30]
# Each fuzzer starts from a scratch copy of test/fuzz/corpus/<name>/ in test/fuzz/corpus-run/
# (git-ignored), so the checked-in seeds never grow. Crash inputs and logs go to build-fuzz/.
# Exits non-zero if any fuzzer finds a crash, a leak, a timeout or a sanitizer report.
set -euo pipefail

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: $0 [seconds-per-target]" >&2
  exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-fuzz
run_corpus=$root/test/fuzz/corpus-run
logs=$build/fuzz-logs
artifacts=$build/fuzz-artifacts

mkdir -p "$build"
# libFuzzer is clang's; the bench tools are not fuzzed, so they stay out of this tree.
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DSIDECAR_FUZZ=ON -DSIDECAR_BENCH=OFF \
  >"$build/configure.log" 2>&1 || {
  cat "$build/configure.log" >&2
  exit 1
}
cmake --build "$build" -j2 --target fuzz

# Artifacts from an earlier run would make this run's failure report ambiguous.
rm -rf "$logs" "$artifacts"
mkdir -p "$logs" "$artifacts"
failed=()
ran=0
for bin in "$build"/test/fuzz/fuzz_*; do
  [[ -f $bin && -x $bin ]] || continue
  name=$(basename "$bin")
  ran=$((ran + 1))
  seeds=$root/test/fuzz/corpus/${name#fuzz_}
  work=$run_corpus/${name#fuzz_}
  rm -rf "$work"
  mkdir -p "$work"
  if [[ -d $seeds ]]; then cp -r "$seeds"/. "$work"/; fi

  log=$logs/$name.log
  echo "== $name: ${seconds}s from $(find "$work" -type f | wc -l) seed files"
  status=0
  # -timeout bounds one input; -max_total_time bounds the run. The outer timeout is a backstop
  # in case the fuzzer ignores both (for example stuck in a sanitizer report).
  timeout --kill-after=10 $((seconds + 60)) "$bin" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/$name-" \
    "$work" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  echo "   exit=$status executions=${execs:-?} ${cov} corpus=$(find "$work" -type f | wc -l) log=$log"
  if ((status != 0)); then
    failed+=("$name")
    grep -E 'ERROR|SUMMARY|fuzz_[a-z0-9]+:|Test unit written' "$log" | head -n 20 >&2 || true
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
