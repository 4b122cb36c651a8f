#!/usr/bin/env bash
# The distributed performance note of docs/distributed.md, measured side by
# side in one run: the configurations alternate, ROUNDS times, STEPS
# measured steps each (after 3 warm-up steps), and the medians over every
# measured step are printed.
#   tests/distributed/bench_distributed.sh BUILD_DIR [ROUNDS] [STEPS]
#  A  1 process x 2 cores: one replica, an OpenMP team of 2
#  Ap the same with OMP_WAIT_POLICY=PASSIVE (what `import kortexdl` sets)
#  A2 1 process x 2 cores: 2 (virtual) NUMA replicas of 1 core each
#  B  2 ranks x 1 core each (mpirun -np 2 --bind-to core)
# All at a global batch of 1000 rows per step (B: 500 per rank).
# KORTEX_BENCH_NICE=-20 runs everything in a scheduler session (autogroup) of
# its own at that nice level, as bench/run.sh does, so other work on a shared
# machine takes less of the two cores.
set -euo pipefail
if [ -n "${KORTEX_BENCH_NICE:-}" ] && [ -z "${KORTEX_BENCH_NICED:-}" ]; then
  export KORTEX_BENCH_NICED=1
  exec setsid --wait sh -c 'echo "$0" > /proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' \
    "$KORTEX_BENCH_NICE" bash "$0" "$@"
fi
build="$1"
rounds="${2:-5}"
steps="${3:-20}"
bench="$build/tests/distributed/kortexdl_distributed_bench"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
echo "# $(date -u), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  KORTEX_NUM_THREADS=2 KORTEX_NUMA_NODES=1 taskset -c 0,1 "$bench" "$steps" >>"$scratch/A"
  OMP_WAIT_POLICY=PASSIVE KORTEX_NUM_THREADS=2 KORTEX_NUMA_NODES=1 taskset -c 0,1 "$bench" "$steps" >>"$scratch/Ap"
  KORTEX_NUM_THREADS=2 KORTEX_NUMA_NODES=2 taskset -c 0,1 "$bench" "$steps" >>"$scratch/A2"
  KORTEX_NUM_THREADS=1 KORTEX_NUMA_NODES=1 mpirun --allow-run-as-root -np 2 --bind-to core "$bench" "$steps" \
    >>"$scratch/B"
  echo "round $round of $rounds done" >&2
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -h '^#' "$scratch/A" "$scratch/Ap" "$scratch/A2" "$scratch/B" | sort -u
/usr/bin/python3 - "$scratch" <<'PY'
import statistics, sys
names = {"A": "1 process x 2 cores (one replica, 2 threads)",
         "Ap": "  the same, OMP_WAIT_POLICY=PASSIVE",
         "A2": "1 process x 2 cores (2 NUMA replicas x 1 thread)",
         "B": "2 ranks x 1 core (MPI)"}
print(f"{'configuration':52s} {'steps':>5s} {'step ms':>8s} {'rows/s':>8s} {'allreduce ms':>12s} {'share':>6s} {'in-proc reduce ms':>17s}")
for key, name in names.items():
    rows = [list(map(float, l.split()[1:])) for l in open(f"{sys.argv[1]}/{key}") if l.startswith("step")]
    step = statistics.median(r[0] for r in rows)
    allreduce = statistics.median(r[1] for r in rows)
    share = statistics.median(r[1] / r[0] for r in rows)
    reduce = statistics.median(r[2] for r in rows)
    print(f"{name:52s} {len(rows):5d} {step * 1e3:8.2f} {1000 / step:8.0f} {allreduce * 1e3:12.3f} {share * 100:5.1f}% {reduce * 1e3:17.3f}")
alone = [float(l.split()[1]) for l in open(f"{sys.argv[1]}/B") if l.startswith("allreduce")]
if alone:
    median = statistics.median(alone)
    print(f"B's allreduce of the 940,584-byte gradient alone (after a barrier): median {median * 1e3:.3f} ms "
          f"over {len(alone)}, {940584 / median / 1e9:.2f} GB/s of gradient per rank")
PY
