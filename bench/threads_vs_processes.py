"""Threads sharing one network against processes with a network each.

    .venv/bin/python bench/threads_vs_processes.py                    # forward at batch 1, every network
    .venv/bin/python bench/threads_vs_processes.py --case medium/forward/1 small/train/1 --repeat 9

For every case (network, operation, batch) four runs, each in fresh worker
processes, take turns in every round:

* "single": one process calling on one thread;
* "processes": P processes (P = the usable CPUs, or --workers), each with a
  network of its own, calling at the same time;
* "threads": one process whose P threads share one network;
* "own networks": one process whose P threads call a network each.

Each counts its calls over --duration seconds; efficiency = combined calls
per second / (P x single's). The processes share nothing but the machine
(its caches, memory bandwidth and hypervisor), so their efficiency is what
the hardware leaves; the threads' is that, less what sharing a process
costs (the GIL, reference counts, the library's shared state), and the
threads with a network each tell the interpreter's share (the GIL) from the
shared network's (its parameters moving between the cores' caches after
every training step, its reference count and locks). The spec's efficiency
target for threads can only be met where processes meet it.
Every run uses kortexdl.set_num_threads(1) (one core per call); training
runs with thread safety on in every run, as threads sharing a network need
it. Medians over --repeat rounds, with min-max.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

# The spec benchmark's networks (python_bindings/benchmark_gil_release.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_bindings"))
from benchmark_gil_release import ALL_CONFIGS, CONFIGS  # noqa: E402
OPS = ("forward", "train")
RUNS = ("single", "processes", "threads")


def parse_case(text):
    parts = text.split("/")
    if len(parts) != 3 or parts[0] not in ALL_CONFIGS or parts[1] not in OPS or not parts[2].isdigit() or int(parts[2]) < 1:
        raise argparse.ArgumentTypeError(f"unknown case {text!r}: expected config/op/batch, e.g. medium/forward/1 "
                                         f"(configs {', '.join(ALL_CONFIGS)}; ops {', '.join(OPS)})")
    return parts[0], parts[1], int(parts[2])


def usable_cpus():
    return len(os.sched_getaffinity(0))


# ---- the worker (a child process) -------------------------------------------


def make_call(config, op, batch):
    import numpy as np

    import kortexdl

    kortexdl.set_num_threads(1)
    sizes = CONFIGS[config]
    net = kortexdl.Network(sizes)
    rng = np.random.default_rng(1)
    x = rng.random((batch, sizes[0]), dtype=np.float32)
    if op == "forward":
        x = x[0] if batch == 1 else x
        return net, lambda: net.forward(x)
    net.enable_thread_safety(True)
    y = np.zeros((batch, sizes[-1]), dtype=np.float32)
    y[:, 0] = 1.0
    return net, lambda: net.train_batch(x, y, kortexdl.LossType.CrossEntropy, 0.001)


def count_calls(call, deadline):
    calls = 0
    while True:
        for _ in range(20):
            call()
        calls += 20
        if time.perf_counter() >= deadline:
            return calls


def worker(config, op, batch, threads, duration, start_at, own_networks):
    nets, calls = zip(*[make_call(config, op, batch) for _ in range(threads if own_networks else 1)])
    for call in calls:
        count_calls(call, time.perf_counter() + 0.05)  # warm-up: workspaces, code paths
    while time.time() < start_at:  # processes of one run start together
        time.sleep(0.001)
    counts = [0] * threads
    t0 = time.perf_counter()
    deadline = t0 + duration

    def run(i):
        counts[i] = count_calls(calls[i % len(calls)], deadline)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    print(sum(counts) / (time.perf_counter() - t0), len({id(net) for net in nets}))


# ---- the driver ---------------------------------------------------------------


def launch(case, threads, processes, duration, own_networks=False):
    start_at = time.time() + 0.3 + 0.05 * max(processes, threads)  # after every worker's import and warm-up
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "/".join(map(str, case)), str(threads),
           str(duration), repr(start_at), "own" if own_networks else "shared"]
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    total = 0.0
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"worker failed ({child.returncode}): {' '.join(cmd)}")
        rate, networks = out.split()
        if int(networks) != (threads if own_networks else 1):
            raise SystemExit(f"worker called {networks} networks from {threads} threads: {' '.join(cmd)}")
        total += float(rate)
    return total


def measure(case, workers, duration):
    return {
        "single": launch(case, 1, 1, duration),
        "processes": launch(case, 1, workers, duration),
        "threads": launch(case, workers, 1, duration),
        "own_networks": launch(case, workers, 1, duration, own_networks=True),
    }


def summary(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        config, op, batch = parse_case(sys.argv[2])
        worker(config, op, batch, int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6] == "own")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", nargs="+", type=parse_case,
                        default=[parse_case(f"{c}/forward/1") for c in ALL_CONFIGS], help="config/op/batch")
    parser.add_argument("--workers", type=int, default=usable_cpus(), help="processes and threads (default: CPUs)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=float, default=0.4, help="seconds each run counts calls")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    if args.workers < 1 or args.repeat < 1 or args.duration <= 0:
        parser.error("--workers and --repeat must be >= 1 and --duration > 0")

    rows = []
    for case in args.case:
        rounds = [measure(case, args.workers, args.duration) for _ in range(args.repeat)]
        rows.append({
            "case": "/".join(map(str, case)),
            "rounds": rounds,
            "processes_efficiency": [r["processes"] / (args.workers * r["single"]) for r in rounds],
            "threads_efficiency": [r["threads"] / (args.workers * r["single"]) for r in rounds],
            "own_networks_efficiency": [r["own_networks"] / (args.workers * r["single"]) for r in rounds],
        })
        print(f"{rows[-1]['case']} done", file=sys.stderr, flush=True)

    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"# threads vs processes, {when}, {usable_cpus()} CPUs, {args.workers} workers, one core per call, "
          f"medians of {args.repeat} rounds (min-max)")
    print(f"# {' '.join(sys.argv)}\n")
    print(f"| case | single: calls/s | {args.workers} processes: efficiency | {args.workers} threads: efficiency "
          f"| {args.workers} threads, a network each: efficiency |")
    print("|:---|---:|---:|---:|---:|")
    for row in rows:
        single = statistics.median(r["single"] for r in row["rounds"])
        print(f"| {row['case']} | {single:,.0f} | {summary(row['processes_efficiency'])} | "
              f"{summary(row['threads_efficiency'])} | {summary(row['own_networks_efficiency'])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": when, "workers": args.workers, "duration": args.duration, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
