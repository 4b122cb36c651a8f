#!/usr/bin/env python3
"""Thread scaling of kortexdl from Python (spec: gil-release-optimization.md).

    python benchmark_gil_release.py --threads 1 2 4 8 16 --config all
    python benchmark_gil_release.py --threads 1 2 4 --config medium
    python benchmark_gil_release.py --overhead          # per-call cost at batch 1
    python benchmark_gil_release.py --wait-idle 0.1     # on a shared machine

For every configuration and thread count, T Python threads share one network
and call the operation in a loop for --seconds; the throughput (calls/s) is
compared with one thread's. Every compute method releases the GIL, so on C
cores throughput should grow ~linearly up to C threads and never fall below
the one-thread figure beyond that (the library splits its intra-op thread
budget between concurrent calls instead of oversubscribing the cores).
"""

import argparse
import os
import statistics
import sys
import threading
import time

import numpy as np

import kortexdl

CONFIGS = {
    "small": [100, 50, 10],
    "medium": [784, 256, 128, 10],
    "large": [1000, 512, 256, 128, 10],
}


def make_call(net, op, batch, rng):
    x = rng.standard_normal((batch, net.input_size)).astype(np.float32)
    y = (rng.standard_normal((batch, net.output_size)) * 0.1).astype(np.float32)
    if op == "forward":
        return lambda: net.forward(x)
    if op == "train":
        return lambda: net.train_batch(x, y, kortexdl.LossType.MSE, 1e-4)
    if op == "evaluate":
        return lambda: net.evaluate(x, y, kortexdl.LossType.MSE)
    raise ValueError(op)


def busy_fraction(interval=0.5):
    """Fraction of the machine's CPU time spent busy over `interval` (Linux)."""

    def read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    idle0, total0 = read()
    time.sleep(interval)
    idle1, total1 = read()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_idle(threshold, timeout=120.0):
    """On a shared machine: wait until other processes leave the CPUs idle
    (busy below `threshold`), so a point measures this program alone."""
    if threshold is None or not os.path.exists("/proc/stat"):
        return None
    deadline = time.time() + timeout
    busy = busy_fraction()
    while busy >= threshold and time.time() < deadline:
        busy = busy_fraction()
    return busy


def throughput(net, op, batch, threads, seconds, seed=0):
    """Calls per second of `threads` Python threads sharing `net`."""
    rng = np.random.default_rng(seed)
    calls = [make_call(net, op, batch, rng) for _ in range(threads)]
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(i):
        call = calls[i]
        call()  # warm up this thread's workspace
        start.wait()
        n = 0
        while not stop.is_set():
            call()
            n += 1
        counts[i] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def scaling(args):
    names = list(CONFIGS) if args.config == "all" else [args.config]
    print(f"kortexdl {kortexdl.__version__} ({kortexdl.backend_name()}), {os.cpu_count()} CPUs, "
          f"budget {kortexdl.get_num_threads()} threads, op={args.op}, batch={args.batch}, "
          f"{args.seconds:g} s x {args.repeats} per point (median)")
    results = {}
    for name in names:
        net = kortexdl.Network(CONFIGS[name], seed=1)
        if args.op == "train":
            net.enable_thread_safety(True)
        print(f"\n{name} {CONFIGS[name]}")
        print(f"{'threads':>8} {'calls/s':>12} {'rows/s':>12} {'vs 1 thread':>12}")
        base = None
        for threads in args.threads:
            rates = []
            for r in range(args.repeats):
                wait_idle(args.wait_idle)
                rates.append(throughput(net, args.op, args.batch, threads, args.seconds, seed=r))
            rate = statistics.median(rates)
            base = base or rate
            results[(name, threads)] = rate / base
            print(f"{threads:>8} {rate:>12.0f} {rate * args.batch:>12.0f} {rate / base:>11.2f}x")
    return results


def overhead(args):
    """Median cost of one forward call at batch 1 on 100-50-10, and the part
    spent inside the GIL-released region (from gil_stats)."""
    net = kortexdl.Network([100, 50, 10], seed=1)
    x2 = np.random.default_rng(0).standard_normal((1, 100)).astype(np.float32)
    flat = x2.ravel()
    variants = {
        "forward(x) 2-D": lambda: net.forward(x2),
        "forward(flat, 1)": lambda: net.forward(flat, 1),
        "forward(flat, batch_size=1)": lambda: net.forward(flat, batch_size=1),
    }
    n = args.calls
    print(f"forward on 100-50-10 at batch 1: median of {args.repeats} runs of {n} calls")
    for label, call in variants.items():
        for _ in range(1000):
            call()
        per_call, region = [], []
        for _ in range(args.repeats):
            wait_idle(args.wait_idle)
            kortexdl.reset_gil_stats()
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            per_call.append((time.perf_counter() - t0) / n * 1e6)
            s = kortexdl.gil_stats()["forward"]
            region.append(s["total_seconds"] / s["calls"] * 1e6)
        total, inside = statistics.median(per_call), statistics.median(region)
        print(f"  {label:30s} {total:6.2f} us/call, of which {inside:5.2f} us in C++ "
              f"(GIL released), {total - inside:5.2f} us Python-side")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    parser.add_argument("--op", choices=["forward", "train", "evaluate"], default="forward")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead", action="store_true", help="measure the per-call cost instead")
    parser.add_argument("--wait-idle", type=float, default=None, metavar="FRACTION",
                        help="before each point wait (up to 2 min) until the machine is less busy than FRACTION "
                             "(e.g. 0.1), for shared machines")
    parser.add_argument("--calls", type=int, default=20000, help="calls per run with --overhead")
    args = parser.parse_args(argv)
    if args.overhead:
        overhead(args)
    else:
        scaling(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
