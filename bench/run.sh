#!/usr/bin/env bash
# Builds kortexdl_bench if needed, runs it (5 repetitions, medians reported)
# and prints the summary table.
#
#   bench/run.sh [OUT.json] [extra Google Benchmark flags...]
#
# OUT.json defaults to build/bench.json; the console output goes next to it
# (OUT.txt). Extra flags are passed on, e.g.
#   bench/run.sh build/b.json --benchmark_filter='train/(medium|large)'
#   bench/run.sh build/b.json --benchmark_repetitions=9
# The repetitions are randomly interleaved, so a burst of load from another
# process hits a few repetitions of many rows rather than all repetitions of
# a few, and the medians stay usable; a row and its ceiling are measured over
# the same stretch of time.
# Environment: KORTEX_BUILD_DIR (default: build); KORTEX_BENCH_NICE=-20 runs
# the benchmark in a session (scheduler autogroup) of its own with that nice
# value (negative needs root): on a machine shared with other work, that
# work then mostly gets only the CPU time the benchmark leaves idle. It is
# slowed down, not stopped; use this only for short, deliberate runs.
# Timing on a shared machine is noisy: the summary also reports how much CPU
# other processes used while the benchmark ran.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${KORTEX_BUILD_DIR:-$root/build}
out=$build/bench.json
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then  # a first argument that is not a flag
  out=$1
  shift
fi
mkdir -p "$(dirname "$out")"

if [ -z "${KORTEX_BENCH_NO_BUILD:-}" ]; then  # set by the `bench` CMake target, which built it already
  if [ ! -f "$build/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$build" --target kortexdl_bench
fi

log=${out%.json}.txt
timefile=${out%.json}.time
echo "running $build/bench/kortexdl_bench (console output: $log) ..."
prefix=()
if [ -n "${KORTEX_BENCH_NICE:-}" ]; then
  # Linux groups processes by session for CPU fairness (autogroup), so plain
  # nice only ranks us within our own session: start a new one and nice it.
  prefix=(setsid --wait sh -c 'echo "$0" > /proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"'
          "$KORTEX_BENCH_NICE")
fi
stat_before=$(head -n1 /proc/stat)
"${prefix[@]}" /usr/bin/time -f '%e %U %S' -o "$timefile" \
  "$build/bench/kortexdl_bench" \
  --benchmark_repetitions=5 \
  --benchmark_report_aggregates_only=true \
  --benchmark_enable_random_interleaving=true \
  --benchmark_out="$out" --benchmark_out_format=json \
  "$@" >"$log" 2>&1 || { echo "kortexdl_bench failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
stat_after=$(head -n1 /proc/stat)

/usr/bin/python3 "$root/bench/summarize.py" "$out" \
  --proc-stat-before "$stat_before" --proc-stat-after "$stat_after" --time-file "$timefile"
