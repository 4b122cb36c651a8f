"""Threads sharing one network: the GIL hand-off on and off, side by side.

    .venv/bin/python bench/gil_handoff_ab.py                 # defaults below
    .venv/bin/python bench/gil_handoff_ab.py --threads 2 16 --repeat 9 --json out.json

Three variants of the Python bindings, chosen with their environment
variables (docs/python.md, "Threads"), each in a fresh worker process:

* "plain": KORTEX_GIL_SPIN_US=0 KORTEX_GIL_LANES=0, CPython's own hand-off
  (every returning call waits on the GIL's condition variable);
* "poll": KORTEX_GIL_LANES=0, a returning call polls for a GIL whose holder
  is between two KortexDL calls;
* "default": polling and the return lanes.

For every case (network, operation, batch) and thread count T a worker times
N calls on one thread and the same N calls spread over T threads, back to
back (the spec's method), with kortexdl.set_num_threads(1); speedup =
sequential / threaded time. The variants take turns in a rotating order,
one worker per variant and repeat, so machine noise hits all of them alike;
every figure is the median over the repeats. Reported: each variant's
speedup and the default's over plain.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = {
    "plain": {"KORTEX_GIL_SPIN_US": "0", "KORTEX_GIL_LANES": "0"},
    "poll": {"KORTEX_GIL_LANES": "0"},
    "default": {},
}

CASES = [
    ("small", "forward", 1),
    ("small", "forward", 32),
    ("small", "train", 1),
    ("medium", "forward", 1),
    ("medium", "forward", 32),
    ("medium", "train", 1),
    ("large", "forward", 32),
]

SIZES = {"small": [100, 50, 10], "medium": [784, 256, 128, 10], "large": [1000, 512, 256, 128, 10]}

WORKER = r"""
import json, sys, threading, time
import numpy as np
import kortexdl

kortexdl.set_num_threads(1)
spec = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
results = []
for config, op, batch in spec["cases"]:
    sizes = spec["sizes"][config]
    net = kortexdl.Network(sizes, seed=1)
    net.enable_thread_safety(True)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    if op == "forward":
        call = (lambda: net.forward(x[0])) if batch == 1 else (lambda: net.forward(x))
    else:
        call = lambda: net.train_batch(x, y, kortexdl.LossType.CrossEntropy, 1e-4)
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < spec["min_time"]:
        call()
        n += 1
    for threads in spec["threads"]:
        calls = max(threads, n - n % threads)

        def work(count):
            for _ in range(count):
                call()

        t0 = time.perf_counter()
        work(calls)
        sequential = time.perf_counter() - t0
        barrier = threading.Barrier(threads + 1)

        def worker():
            barrier.wait()
            work(calls // threads)

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        threaded = time.perf_counter() - t0
        results.append({"config": config, "op": op, "batch": batch, "threads": threads,
                        "us_per_call": sequential / calls * 1e6, "speedup": sequential / threaded})
print(json.dumps({"results": results, "handoff": kortexdl.gil_stats()["gil_handoff"]}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 4, 16])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.15, help="seconds per sequential timing")
    parser.add_argument("--case", nargs="+", help="config/op/batch, e.g. small/forward/32 (default: all)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    if any(t < 1 or t > 64 for t in args.threads) or args.repeat < 1 or args.min_time <= 0:
        parser.error("--threads in 1..64, --repeat >= 1, --min-time > 0")
    cases = CASES
    if args.case:
        cases = []
        for text in args.case:
            parts = text.split("/")
            if (len(parts) != 3 or parts[0] not in SIZES or parts[1] not in ("forward", "train")
                    or not parts[2].isdigit() or not 1 <= int(parts[2]) <= 4096):
                parser.error(f"unknown case {text} (config/op/batch: small|medium|large, forward|train, 1-4096)")
            cases.append((parts[0], parts[1], int(parts[2])))
    spec = json.dumps({"cases": cases, "sizes": SIZES, "threads": args.threads, "min_time": args.min_time})
    names = list(VARIANTS)
    speedups = {}  # (variant, case, threads) -> [speedup per repeat]
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for repeat in range(args.repeat):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            env = dict(os.environ, **VARIANTS[name])
            done = subprocess.run([sys.executable, "-c", WORKER, spec], env=env, capture_output=True, text=True,
                                  timeout=1800)
            if done.returncode != 0:
                sys.exit(f"worker {name} failed:\n{done.stderr}")
            for r in json.loads(done.stdout)["results"]:
                key = (name, f"{r['config']}/{r['op']}/{r['batch']}", r["threads"])
                speedups.setdefault(key, []).append(r["speedup"])
        print(f"repeat {repeat + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    print(f"# GIL hand-off A/B, {started}, {os.cpu_count()} CPUs, medians of {args.repeat} repeats")
    print(f"# {' '.join(sys.argv)}")
    print()
    print("| case | threads | plain | poll | default | default / plain |")
    print("|:---|---:|---:|---:|---:|---:|")
    rows = []
    for config, op, batch in cases:
        case = f"{config}/{op}/{batch}"
        for threads in args.threads:
            med = {n: statistics.median(speedups[(n, case, threads)]) for n in names}
            rows.append({"case": case, "threads": threads, **{n: speedups[(n, case, threads)] for n in names}})
            print(f"| {case} | {threads} | {med['plain']:.2f} | {med['poll']:.2f} | {med['default']:.2f} | "
                  f"{med['default'] / med['plain']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"started": started, "argv": sys.argv, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
