"""Threads sharing one network: the GIL hand-off on and off, side by side.

    .venv/bin/python bench/gil_handoff_ab.py                 # defaults below
    .venv/bin/python bench/gil_handoff_ab.py --threads 2 16 --repeat 9 --json out.json
    .venv/bin/python bench/gil_handoff_ab.py --case large/train/1 --budget 0 \
        --library before=/tmp/ab/head --library after=build    # two builds of libkortexdl.so.0
    .venv/bin/python bench/gil_handoff_ab.py --case 100-200-10/train/1 --threads 2   # other layer sizes

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

--library NAME=DIR (repeatable) compares builds of the library instead:
each variant runs with DIR first on LD_LIBRARY_PATH if it holds a
libkortexdl.so.0 (e.g. a copy of an older build's) and first on PYTHONPATH
if it holds a kortexdl/ package (a copy of python_bindings/kortexdl, for
changes to the bindings), with the GIL settings at their defaults; the last column is the last variant's speedup over the
first's. --budget sets kortexdl.set_num_threads (default 1: one core per
call; 0: the default budget). --busy N keeps N other processes spinning
for the whole run (a machine shared with busy neighbours). Besides the
speedups, the median time per call of the sequential timings is printed.
Every timing runs on threads started for it,
so the sequential timing's thread does not keep the intra-op team
(docs/CONCURRENCY.md, "Threads per call") while the threads time theirs.
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

# The spec benchmark's networks (python_bindings/benchmark_gil_release.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_bindings"))
from benchmark_gil_release import ALL_CONFIGS, CONFIGS  # noqa: E402

SIZES = {name: CONFIGS[name] for name in ALL_CONFIGS}

WORKER = r"""
import json, sys, threading, time
import numpy as np
import kortexdl

spec = json.loads(sys.argv[1])
kortexdl.set_num_threads(spec["budget"])
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
    elif op == "evaluate":
        labels = y.astype(np.int32)
        call = lambda: net.evaluate(x, labels, kortexdl.LossType.CrossEntropy)
    else:
        call = lambda: net.train_batch(x, y, kortexdl.LossType.CrossEntropy, 1e-4)

    def calibrate():
        start = time.perf_counter()
        while time.perf_counter() - start < spec["min_time"]:
            call()
            calibrated[0] += 1

    calibrated = [0]
    once = threading.Thread(target=calibrate)  # not on the main thread: it would keep the intra-op team
    once.start()
    once.join()
    n = calibrated[0]

    def timed(threads, count):
        barrier = threading.Barrier(threads + 1)

        def worker():
            barrier.wait()
            for _ in range(count):
                call()

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        return time.perf_counter() - t0

    for threads in spec["threads"]:
        calls = max(threads, n - n % threads)
        sequential = timed(1, calls)
        threaded = timed(threads, calls // threads)
        results.append({"config": config, "op": op, "batch": batch, "threads": threads,
                        "us_per_call": sequential / calls * 1e6, "speedup": sequential / threaded})
print(json.dumps({"results": results, "handoff": kortexdl.gil_stats()["gil_handoff"]}))
"""


def layer_sizes(config):
    """A config name's layer sizes, or those written out (100-200-10), or
    None."""
    if config in SIZES:
        return SIZES[config]
    parts = config.split("-")
    if len(parts) < 2 or not all(p.isdigit() and 1 <= int(p) <= 65536 for p in parts):
        return None
    return [int(p) for p in parts]


def library_variants(parser, texts):
    """--library NAME=DIR arguments as {name: environment}: DIR first on
    LD_LIBRARY_PATH if it holds libkortexdl.so.0, first on PYTHONPATH if it
    holds a kortexdl/ package."""
    variants = {}
    for text in texts:
        name, _, directory = text.partition("=")
        if not name or not directory or name in variants:
            parser.error(f"--library {text}: expected NAME=DIR with a new NAME")
        has_library = os.path.isfile(os.path.join(directory, "libkortexdl.so.0"))
        has_package = os.path.isfile(os.path.join(directory, "kortexdl", "__init__.py"))
        if not has_library and not has_package:
            parser.error(f"--library {text}: neither libkortexdl.so.0 nor kortexdl/__init__.py in {directory}")
        variants[name] = {}
        for variable, wanted in (("LD_LIBRARY_PATH", has_library), ("PYTHONPATH", has_package)):
            if wanted:
                path = os.path.abspath(directory)
                if os.environ.get(variable):
                    path += os.pathsep + os.environ[variable]
                variants[name][variable] = path
    return variants


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 4, 16])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.15, help="seconds per sequential timing")
    parser.add_argument("--case", nargs="+", help="config/op/batch, e.g. small/forward/32 (default: all)")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--budget", type=int, default=1, help="kortexdl.set_num_threads (0: the default budget)")
    parser.add_argument("--library", action="append", metavar="NAME=DIR",
                        help="compare builds: run variant NAME with DIR first on LD_LIBRARY_PATH (repeatable)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="keep N other processes spinning during the run")
    args = parser.parse_args()
    if not 0 <= args.busy <= 256:
        parser.error("--busy in 0..256")
    if any(t < 1 or t > 64 for t in args.threads) or args.repeat < 1 or args.min_time <= 0:
        parser.error("--threads in 1..64, --repeat >= 1, --min-time > 0")
    if not 0 <= args.budget <= 4096:
        parser.error("--budget in 0..4096")
    variants = library_variants(parser, args.library) if args.library else VARIANTS
    cases = CASES
    sizes = dict(SIZES)
    if args.case:
        cases = []
        for text in args.case:
            parts = text.split("/")
            if (len(parts) != 3 or layer_sizes(parts[0]) is None or parts[1] not in ("forward", "evaluate", "train")
                    or not parts[2].isdigit() or not 1 <= int(parts[2]) <= 4096):
                parser.error(f"unknown case {text} (config/op/batch: small|medium|large or layer sizes "
                             "such as 100-200-10, forward|evaluate|train, 1-4096)")
            sizes.setdefault(parts[0], layer_sizes(parts[0]))
            cases.append((parts[0], parts[1], int(parts[2])))
    spec = json.dumps({"cases": cases, "sizes": sizes, "threads": args.threads, "min_time": args.min_time,
                       "budget": args.budget})
    names = list(variants)
    speedups = {}  # (variant, case, threads) -> [speedup per repeat]
    per_call = {}  # (variant, case, threads) -> [sequential us per call, per repeat]
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        for repeat in range(args.repeat):
            order = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in order:
                env = dict(os.environ, **variants[name])
                done = subprocess.run([sys.executable, "-c", WORKER, spec], env=env, capture_output=True,
                                      text=True, timeout=1800)
                if done.returncode != 0:
                    sys.exit(f"worker {name} failed:\n{done.stderr}")
                for r in json.loads(done.stdout)["results"]:
                    key = (name, f"{r['config']}/{r['op']}/{r['batch']}", r["threads"])
                    speedups.setdefault(key, []).append(r["speedup"])
                    per_call.setdefault(key, []).append(r["us_per_call"])
            print(f"repeat {repeat + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    what = "library builds" if args.library else "GIL hand-off"
    busy = f", {args.busy} busy processes beside it" if args.busy else ""
    print(f"# {what} A/B, {started}, {os.cpu_count()} CPUs, budget {args.budget}{busy}, "
          f"medians of {args.repeat} repeats")
    print(f"# {' '.join(sys.argv)}")
    print()
    first, last = names[0], names[-1]
    print(f"| case | threads | {' | '.join(names)} | {last} / {first} |")
    print("|:---|---:|" + "---:|" * (len(names) + 1))
    rows = []
    for config, op, batch in cases:
        case = f"{config}/{op}/{batch}"
        for threads in args.threads:
            med = {n: statistics.median(speedups[(n, case, threads)]) for n in names}
            rows.append({"case": case, "threads": threads, **{n: speedups[(n, case, threads)] for n in names}})
            cells = " | ".join(f"{med[n]:.2f}" for n in names)
            print(f"| {case} | {threads} | {cells} | {med[last] / med[first]:.2f}x |")
    print()
    print(f"| case | sequential us per call: {' | '.join(names)} |")
    print("|:---|" + "---:|" * len(names))
    for config, op, batch in cases:
        case = f"{config}/{op}/{batch}"
        cells = " | ".join(
            f"{statistics.median(x for t in args.threads for x in per_call[(n, case, t)]):.1f}" for n in names)
        print(f"| {case} | {cells} |")
    if args.json:
        for row in rows:
            row["us_per_call"] = {n: per_call[(n, row["case"], row["threads"])] for n in names}
        with open(args.json, "w") as f:
            json.dump({"started": started, "argv": sys.argv, "budget": args.budget, "busy": args.busy,
                       "variants": variants, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
