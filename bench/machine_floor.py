"""What this machine and CPython give any library's calls from several threads.

    .venv/bin/python bench/machine_floor.py                      # defaults below
    .venv/bin/python bench/machine_floor.py --threads 2 4 16 --region-us 0.3 1 3 6 --repeat 7 --json out.json

Two probes, compiled here with the system C compiler (-O2 -march=native)
from bench/machine_floor/, no KortexDL in either:

* fma_threads: one thread of pure vector multiply-adds in registers, then
  two threads doing as much each; speedup = 2 x one / two. What two callers
  can get from the CPUs at all (on a 2-vCPU guest whose vCPUs may share a
  physical core, or a host, with others).
* gil_probe: a Python extension whose region(ns) releases the GIL with
  CPython's own Py_BEGIN/END_ALLOW_THREADS and spins for ns nanoseconds
  (so it needs no execution units), and whose work(n) computes instead. N
  calls on one thread, then the same N calls spread over T threads (the spec
  benchmark's method, python_bindings/benchmark_gil_release.py); speedup =
  sequential / threaded time. What the GIL lets any library's calls of that
  length overlap. KortexDL's own calls add its GIL hand-off and return
  lanes (docs/CONCURRENCY.md) to this.

Every figure is the median over --repeat rounds, with min-max. Not a test:
timings on a shared machine move by 2x.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "machine_floor")


def compile_probes(workdir):
    cc = os.environ.get("CC", "cc")
    flags = ["-O2", "-march=native", "-I", HERE]
    binary = os.path.join(workdir, "fma_threads")
    subprocess.run([cc, *flags, "-pthread", os.path.join(HERE, "fma_threads.c"), "-o", binary], check=True)
    extension = os.path.join(workdir, "gil_probe" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([cc, *flags, "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"],
                    os.path.join(HERE, "gil_probe.c"), "-o", extension], check=True)
    spec = importlib.util.spec_from_file_location("gil_probe", extension)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    return binary, probe


def seconds_per_call(call, arg, n):
    start = time.perf_counter()
    for _ in range(n):
        call(arg)
    return (time.perf_counter() - start) / n


def iterations_for(probe, seconds):
    """work() iterations that take about `seconds` on one thread."""
    per_iteration = seconds_per_call(probe.work, 1_000_000, 3) / 1_000_000
    return max(1, round(seconds / per_iteration))


def threaded_speedup(call, arg, threads, n):
    """N calls on this thread, then N calls over `threads` threads."""
    def body(count):
        for _ in range(count):
            call(arg)

    start = time.perf_counter()
    body(n)
    sequential = time.perf_counter() - start
    shares = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    pool = [threading.Thread(target=body, args=(share,)) for share in shares]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sequential / (time.perf_counter() - start)


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def fmt(s):
    return f"{s['median']:.2f} | {s['min']:.2f}-{s['max']:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 4, 16])
    parser.add_argument("--region-us", type=float, nargs="+", default=[0.3, 1, 3, 6],
                        help="lengths of the GIL-released region to probe, in microseconds")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.1, help="about how long each sequential timing runs")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    if any(not 1 <= t <= 64 for t in args.threads) or args.repeat < 1 or args.seconds <= 0:
        parser.error("--threads in 1..64, --repeat >= 1, --seconds > 0")
    if any(not 0 <= r <= 10_000 for r in args.region_us):
        parser.error("--region-us in 0..10000")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as workdir:
        binary, probe = compile_probes(workdir)
        fma_iterations = iterations_for(probe, 0.02)
        done = subprocess.run([binary, str(fma_iterations), str(args.repeat)], capture_output=True, text=True,
                              check=True, timeout=600)
        cpus = summary(json.loads(done.stdout))
        work_iterations = iterations_for(probe, 6e-6)
        cases = [("region", round(us * 1000), f"released, spinning {us:g} us") for us in args.region_us]
        cases.append(("work", work_iterations, "released, computing ~6 us"))
        speedups = {}
        for kind, arg, _ in cases:
            call = getattr(probe, kind)
            n = max(100, round(args.seconds / seconds_per_call(call, arg, 200)))
            for threads in args.threads:
                speedups[(kind, arg, threads)] = summary(
                    [threaded_speedup(call, arg, threads, n) for _ in range(args.repeat)])
    print(f"# machine floor, {started}, {os.cpu_count()} CPUs, medians of {args.repeat} rounds")
    print(f"# {' '.join(sys.argv)}")
    print()
    print("| two threads of pure compute, no Python | speedup | min-max |")
    print("|:---|---:|---:|")
    print(f"| {fma_iterations} iterations each (~20 ms on one thread) | {fmt(cpus)} |")
    print()
    print("| a bare extension's call | threads | speedup over one thread | min-max |")
    print("|:---|---:|---:|---:|")
    for kind, arg, label in cases:
        for threads in args.threads:
            print(f"| {label} | {threads} | {fmt(speedups[(kind, arg, threads)])} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"started": started, "argv": sys.argv, "cpus": os.cpu_count(),
                       "two_threads_of_compute": cpus, "fma_iterations": fma_iterations,
                       "extension": [{"kind": kind, "arg": arg, "label": label, "threads": threads,
                                      **speedups[(kind, arg, threads)]}
                                     for kind, arg, label in cases for threads in args.threads]}, f, indent=1)


if __name__ == "__main__":
    main()
