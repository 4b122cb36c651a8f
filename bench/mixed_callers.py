"""Threads with short calls beside threads with longer ones, sharing the GIL.

    .venv/bin/python bench/mixed_callers.py                       # defaults below
    .venv/bin/python bench/mixed_callers.py --short 4 --long 1 --seconds 1 --repeat 7 \\
        --library before=/tmp/ab/before --library after=/tmp/ab/after

--short threads call forward on 100-50-10 at batch 1 (calls shorter than
the Python between them: GIL-bound), --long threads call forward on
784-256-128-10 at batch 1 (about 10 us of compute), all at once for
--seconds, with kortexdl.set_num_threads(1) and thread safety on. Each
repeat runs every variant in a fresh worker process, in a rotating order;
reported are the medians of each group's calls per second, and the work
done, counting a long call as `--long-weight` short ones (its compute time
over a short call's, about 10 on this machine). Variants: the GIL settings'
defaults, or builds chosen with --library NAME=DIR (as in
bench/gil_handoff_ab.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gil_handoff_ab import library_variants  # noqa: E402

WORKER = r"""
import json, sys, threading, time
import numpy as np
import kortexdl

spec = json.loads(sys.argv[1])
kortexdl.set_num_threads(1)
small = kortexdl.Network([100, 50, 10], seed=1)
medium = kortexdl.Network([784, 256, 128, 10], seed=1)
for net in (small, medium):
    net.enable_thread_safety(True)
x_small = np.ones((1, 100), np.float32)
x_medium = np.ones((1, 784), np.float32)
jobs = [(small, x_small)] * spec["short"] + [(medium, x_medium)] * spec["long"]
counts = [0] * len(jobs)
stop = threading.Event()
barrier = threading.Barrier(len(jobs) + 1)

def run(i, net, x):
    net.forward(x)  # the first call in a thread sets up its workspace
    barrier.wait()
    n = 0
    while not stop.is_set():
        net.forward(x)
        n += 1
    counts[i] = n

threads = [threading.Thread(target=run, args=(i, net, x)) for i, (net, x) in enumerate(jobs)]
for t in threads:
    t.start()
barrier.wait()
start = time.perf_counter()
time.sleep(spec["seconds"])
stop.set()
for t in threads:
    t.join()
elapsed = time.perf_counter() - start
print(json.dumps({"short": sum(counts[:spec["short"]]) / elapsed, "long": sum(counts[spec["short"]:]) / elapsed}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", type=int, default=4, help="threads with GIL-bound calls")
    parser.add_argument("--long", type=int, default=1, help="threads with longer calls")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--long-weight", type=float, default=10.0, help="a long call's work in short calls")
    parser.add_argument("--library", action="append", metavar="NAME=DIR",
                        help="compare builds: run variant NAME with DIR first on LD_LIBRARY_PATH (repeatable)")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    if not (0 <= args.short <= 64 and 0 <= args.long <= 64 and args.short + args.long >= 1):
        parser.error("--short and --long in 0..64, at least one thread")
    if args.seconds <= 0 or args.repeat < 1 or args.long_weight <= 0:
        parser.error("--seconds > 0, --repeat >= 1, --long-weight > 0")
    variants = library_variants(parser, args.library) if args.library else {"default": {}}
    names = list(variants)
    spec = json.dumps({"short": args.short, "long": args.long, "seconds": args.seconds})
    rates = {name: {"short": [], "long": []} for name in names}
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for repeat in range(args.repeat):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            done = subprocess.run([sys.executable, "-c", WORKER, spec], env=dict(os.environ, **variants[name]),
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                sys.exit(f"worker {name} failed:\n{done.stderr}")
            result = json.loads(done.stdout)
            for group in ("short", "long"):
                rates[name][group].append(result[group])
        print(f"repeat {repeat + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    print(f"# mixed callers, {started}, {os.cpu_count()} CPUs, {args.short} short + {args.long} long threads, "
          f"{args.seconds} s, medians of {args.repeat} repeats")
    print(f"# {' '.join(sys.argv)}")
    print()
    print("| variant | short calls/s | long calls/s | work (short-call units/s) |")
    print("|:---|---:|---:|---:|")
    for name in names:
        short = statistics.median(rates[name]["short"])
        long_ = statistics.median(rates[name]["long"])
        work = statistics.median(s + args.long_weight * l for s, l in zip(rates[name]["short"], rates[name]["long"]))
        print(f"| {name} | {short:,.0f} | {long_:,.0f} | {work:,.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"started": started, "argv": sys.argv, "variants": variants, "rates": rates}, f, indent=1)


if __name__ == "__main__":
    main()
