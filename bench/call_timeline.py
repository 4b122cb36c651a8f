"""Where a calling thread's time goes: inside its calls, and between them.

    .venv/bin/python bench/call_timeline.py --case small/train/1 --threads 1 2 --network shared own
    perf record -F 20000 -g -- .venv/bin/python bench/call_timeline.py --case small/train/1 --threads 2 --seconds 3

The calls are the spec benchmark's (python_bindings/benchmark_gil_release.py).
Each thread reads time.perf_counter_ns() before and after every call of its
loop, for --seconds after a warm-up and a barrier. Only the calls that
start and end while every thread is still calling count. Per thread it
prints the quartiles of the time inside a call (the call's Python side, the
C++ work and any wait for another thread's step) and between two calls (the
loop itself, and a wait for the GIL), and the steps or calls per second of
all threads together. With --network own
every thread calls a network of its own: the difference to "shared" is what
sharing one network costs, apart from the GIL. One core per call
(kortexdl.set_num_threads(1)); training with thread safety on.
"""

import argparse
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python_bindings"))
import kortexdl  # noqa: E402
from benchmark_gil_release import KortexBackend  # noqa: E402  (the spec benchmark's calls)
from threads_vs_processes import parse_case  # noqa: E402  (the same config/op/batch cases)


def timeline(case, threads, network, seconds):
    """Per thread: (starts, ends) of its calls, in ns."""
    config, op, batch = case
    # A backend keeps one network per config: one for all threads, or one each.
    shared = KortexBackend() if network == "shared" else None
    backends = [shared or KortexBackend() for _ in range(threads)]
    if len({id(b.net(config, op)) for b in backends}) != (1 if shared else threads):
        raise SystemExit(f"{threads} threads were to call {'one network' if shared else 'a network each'}")
    made = [b.make_call(config, op, batch, 1) for b in backends]
    stamps = [None] * threads
    errors = []
    barrier = threading.Barrier(threads)

    def body(i):
        try:
            call = made[i]
            for _ in range(100):
                call()
            starts, ends = [], []
            now = time.perf_counter_ns
            barrier.wait()
            deadline = now() + int(seconds * 1e9)
            while not ends or ends[-1] < deadline:
                starts.append(now())
                call()
                ends.append(now())
            stamps[i] = (starts, ends)
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:  # report it, do not hang the others
            errors.append(repr(e))
            barrier.abort()

    pool = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise SystemExit(f"a calling thread failed: {errors[0]}")
    return stamps


def quartiles_us(values):
    q = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75]) / 1000.0
    return f"{q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}"


def report(stamps):
    """Rows per thread over the window in which every thread was calling,
    and the calls per second of all threads in it."""
    first = max(starts[0] for starts, _ in stamps)
    last = min(ends[-1] for _, ends in stamps)
    if last <= first:
        raise SystemExit("the threads did not call at the same time: raise --seconds")
    rows, counted = [], 0
    for starts, ends in stamps:
        inside = [j for j in range(1, len(starts)) if starts[j] >= first and ends[j] <= last]
        counted += len(inside)
        rows.append((quartiles_us([ends[j] - starts[j] for j in inside]),
                     quartiles_us([starts[j] - ends[j - 1] for j in inside])))
    return rows, counted / ((last - first) / 1e9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", nargs="+", type=parse_case, default=[parse_case("small/train/1")],
                        help="config/op/batch")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--network", nargs="+", choices=("shared", "own"), default=["shared", "own"])
    parser.add_argument("--seconds", type=float, default=0.5, help="how long every thread calls")
    args = parser.parse_args()
    if any(t < 1 or t > 64 for t in args.threads):
        parser.error("--threads must be 1-64")
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    kortexdl.set_num_threads(1)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    print(f"# call timeline, {when}, {len(os.sched_getaffinity(0))} CPUs, one core per call; "
          "quartiles (25 / 50 / 75%) in us")
    print(f"# {' '.join(sys.argv)}\n")
    print("| case | threads | network | thread | in a call | between calls | calls/s, all threads |")
    print("|:---|---:|:---|---:|---:|---:|---:|")
    for case in args.case:
        for threads in args.threads:
            for network in (args.network if threads > 1 else ["shared"]):
                rows, rate = report(timeline(case, threads, network, args.seconds))
                for i, (inside, between) in enumerate(rows):
                    label = network if threads > 1 else "-"
                    print(f"| {'/'.join(map(str, case))} | {threads} | {label} | {i} | {inside} | {between} | "
                          f"{rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
