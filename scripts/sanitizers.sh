#!/usr/bin/env bash
# The sanitizer suites and the fuzz smoke runs (docs/RELIABILITY.md). Called by
# scripts/test.sh after the normal suite; each part builds only what it needs,
# in its own directory:
#
#   asan   build-rel-asan  GCC, AddressSanitizer + UndefinedBehaviorSanitizer,
#                          LeakSanitizer on: the whole C++ suite (ctest), the
#                          planted-bug controls, the single-process distributed
#                          tests with LSan, then the Python suite against an
#                          ASan build of the extension (LD_PRELOAD of libasan)
#   tsan   build-rel-tsan  clang 14, ThreadSanitizer, LLVM libomp + Archer, the
#                          CBLAS backend with an instrumented GEMM: the engine
#                          suite (concurrency, data-parallel, determinism, ...)
#                          and the reliability tests, plus the planted races
#                          (must be reported) and race-free controls (must not)
#   fuzz   build-rel-fuzz  clang 14, libFuzzer + ASan + UBSan: seeds, then a fixed
#                          number of executions of each of the four targets
#
#   scripts/sanitizers.sh [asan] [tsan] [fuzz]     (default: all three)
#
# The parts run side by side (the ASan build is the longest; TSan and fuzz
# share the other lane). Any sanitizer report, failed test or fuzz finding
# fails the script. Logs: build-rel-sanitizer-logs/.
set -euo pipefail
source "$(dirname "$0")/env.sh"

parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(asan tsan fuzz)
want() { local p; for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }

ASAN_DIR="$KORTEX_ROOT/build-rel-asan"
TSAN_DIR="$KORTEX_ROOT/build-rel-tsan"
FUZZ_DIR="$KORTEX_ROOT/build-rel-fuzz"
LOGS="$KORTEX_ROOT/build-rel-sanitizer-logs"
mkdir -p "$LOGS"
JOBS=$(nproc)
COMMON_CMAKE=(-G Ninja -DKORTEX_BUILD_BENCHMARKS=OFF -DKORTEX_BUILD_EXAMPLES=OFF -DKORTEX_BUILD_TOOLS=OFF)

stamp() { date +%s; }
say() { echo "[sanitizers $(date +%H:%M:%S)] $*"; }

# ---- ASan + UBSan (GCC, as the asan preset) ---------------------------------------
run_asan() {
  local reports="$LOGS/asan-reports"
  rm -rf "$reports" && mkdir -p "$reports"
  cmake -S "$KORTEX_ROOT" -B "$ASAN_DIR" "${COMMON_CMAKE[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    "-DKORTEX_SANITIZE=address;undefined" -DKORTEX_BUILD_PYTHON=ON -DPython3_EXECUTABLE=/usr/bin/python3 \
    -DKORTEX_PYTHON_OUTPUT_DIR="$ASAN_DIR/python/kortexdl" >/dev/null
  cmake --build "$ASAN_DIR" -j"$1"

  say "asan: C++ suite (ctest), reports to $reports"
  ASAN_OPTIONS="detect_leaks=1:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
    ctest --test-dir "$ASAN_DIR" --output-on-failure -j"$1" -E "NOT_BUILT"
  # The multi-process distributed tests run with detect_leaks=0 (Open MPI's
  # plugins leak at exit, see docs/RELIABILITY.md); the same tests in one
  # process, without MPI, run with LeakSanitizer.
  KORTEX_MPI=0 KORTEX_NUM_THREADS=1 ASAN_OPTIONS="detect_leaks=1:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
    "$ASAN_DIR/tests/distributed/kortexdl_distributed_tests" --gtest_brief=1

  say "asan: Python suite against the ASan build of kortexdl._core"
  local pkg="$ASAN_DIR/python/kortexdl"
  find "$KORTEX_ROOT/python_bindings/kortexdl" -maxdepth 1 -type f ! -name '*.so' -exec cp {} "$pkg/" \;
  local preload
  preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
  (
    cd "$ASAN_DIR"  # not python_bindings/: its in-place package would shadow PYTHONPATH
    export LD_PRELOAD="$preload" PYTHONPATH="$ASAN_DIR/python"
    export ASAN_OPTIONS="detect_leaks=0:log_path=$reports/asan-python"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan-python"
    "$KORTEX_PYTHON" -c 'import sys, kortexdl; assert kortexdl.__file__.startswith(sys.argv[1]), kortexdl.__file__' \
      "$pkg"
    # Deselected: the GIL detector's control test times a pure-Python builtin
    # (nothing of ours runs) and is timing-sensitive; the normal suite runs it.
    "$KORTEX_PYTHON" -m pytest -q -p no:cacheprovider "$KORTEX_ROOT/python_bindings/tests" \
      -k "not test_detector_sees_a_gil_holding_call"
  )

  if [ -n "$(ls -A "$reports")" ]; then
    echo "asan: sanitizer reports found:" >&2
    head -n 60 "$reports"/* >&2
    return 1
  fi
  say "asan: zero AddressSanitizer/LeakSanitizer/UBSan reports"
}

# ---- TSan (clang, libomp + Archer, CBLAS backend) ---------------------------------
run_tsan() {
  cmake -S "$KORTEX_ROOT" -B "$TSAN_DIR" "${COMMON_CMAKE[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DKORTEX_SANITIZE=thread -DKORTEX_BACKEND=cblas \
    -DKORTEX_WITH_MPI=OFF -DKORTEX_BUILD_PYTHON=OFF >/dev/null
  cmake --build "$TSAN_DIR" -j"$1" --target kortexdl_tests kortexdl_gil_gate_tests kortexdl_reliability_tests \
    kortex_tsan_planted_race
  local libomp
  libomp=$(ldd "$TSAN_DIR/tests/kortexdl_tests" | awk '/libomp\.so/ {print $3; exit}')
  # Archer makes OpenMP's fork/join visible to TSan; libomp's own dlopen of it
  # depends on the program's run path, so name it (a test checks it loaded).
  export OMP_TOOL_LIBRARIES="$(dirname "$libomp")/libarcher.so"
  export TSAN_OPTIONS="ignore_noninstrumented_modules=1"
  # Idle OpenMP workers sleep at once: with more threads than cores, spinning
  # workers (invisible to TSan, but not to the clock) would slow it 10x.
  export OMP_WAIT_POLICY=passive
  say "tsan: engine + reliability suites, planted races and controls (Archer: $OMP_TOOL_LIBRARIES)"
  # Every TSan report makes its process exit with 66, so a report fails its test.
  ctest --test-dir "$TSAN_DIR" --output-on-failure -j"$1" \
    -E "NOT_BUILT|^fuzz_|^install_and_consume$|^distributed_|^asan_"
  say "tsan: zero ThreadSanitizer reports; the planted races were reported"
}

# ---- fuzz smoke runs (clang, libFuzzer) ----------------------------------------------
run_fuzz() {
  cmake -S "$KORTEX_ROOT" -B "$FUZZ_DIR" "${COMMON_CMAKE[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DKORTEX_BUILD_FUZZERS=ON -DKORTEX_BUILD_TESTS=OFF \
    -DKORTEX_WITH_MPI=OFF -DKORTEX_BUILD_PYTHON=OFF >/dev/null
  cmake --build "$FUZZ_DIR" -j"$1" --target kortex_fuzzers
  say "fuzz: seed corpus, then the smoke runs"
  ctest --test-dir "$FUZZ_DIR" -j"$1" -R '^fuzz_' -V >"$LOGS/fuzz-ctest.log" 2>&1 || {
    grep -E "==ERROR|SUMMARY|Test #|artifact|deadly" "$LOGS/fuzz-ctest.log" | tail -n 40 >&2
    return 1
  }
  grep -E "Test #|stat::number_of_executed_units|stat::new_units_added" "$LOGS/fuzz-ctest.log" |
    sed 's/^[0-9]*: //'
  say "fuzz: no crash, no sanitizer report, no oversized allocation"
}

# ---- run the parts side by side -------------------------------------------------------
declare -A started status
lane() {  # lane NAME JOBS FUNCTION...
  local name=$1 jobs=$2; shift 2
  local fn
  for fn in "$@"; do
    local t0; t0=$(stamp)
    # In the background and then waited for: called directly in an `if`,
    # the function would run with `set -e` suspended and hide failures.
    "$fn" "$jobs" >"$LOGS/$fn.log" 2>&1 &
    if wait $!; then
      echo "$fn ok $(( $(stamp) - t0 ))" >>"$LOGS/summary"
    else
      echo "$fn FAILED $(( $(stamp) - t0 ))" >>"$LOGS/summary"
    fi
  done
}

rm -f "$LOGS/summary"
t_start=$(stamp)
pids=()
if want asan; then lane asan "$JOBS" run_asan & pids+=($!); fi
second=()
want tsan && second+=(run_tsan)
want fuzz && second+=(run_fuzz)
if [ ${#second[@]} -gt 0 ]; then
  # With ASan running too, the second lane builds with fewer jobs.
  second_jobs=$JOBS
  if want asan; then second_jobs=$(( JOBS > 1 ? JOBS / 2 : 1 )); fi
  lane other "$second_jobs" "${second[@]}" & pids+=($!)
fi
for pid in "${pids[@]}"; do wait "$pid" || true; done

failed=0
while read -r fn result seconds; do
  echo "== ${fn#run_}: $result (${seconds} s)"
  if [ "$result" != ok ]; then
    failed=1
    tail -n 60 "$LOGS/$fn.log"
  else
    grep -E "^\[sanitizers|tests passed|passed|skipped|stat::|Test #[0-9]+: fuzz_smoke" "$LOGS/$fn.log" | tail -n 20
  fi
done <"$LOGS/summary"
echo "== sanitizers: $(( $(stamp) - t_start )) s in total (logs: $LOGS)"
exit $failed
