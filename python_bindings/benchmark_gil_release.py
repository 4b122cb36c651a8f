#!/usr/bin/env python3
"""The spec's GIL-release benchmark (spec: gil-release-optimization.md), with
PyTorch side by side and the machine's GEMM ceiling.

    python benchmark_gil_release.py --threads 1 2 4 8 16 --config all
    python benchmark_gil_release.py --threads 1 2 4 8 16 --config all --op all \\
        --compare torch --json out.json --plot ../docs/benchmark-threads.png
    python benchmark_gil_release.py --config medium --op train --batch 256 --compare torch
    python benchmark_gil_release.py --overhead          # per-call cost at batch 1
    python benchmark_gil_release.py --wait-idle 0.1     # on a shared machine

Method (the spec's): for every configuration, operation, batch size and
thread count T, the time of N calls made one after another on one thread
("sequential") is compared with the time of the same N calls spread over T
Python threads sharing one network (each thread makes N/T of them, all start
together at a barrier, after two warm-up calls each). speedup = sequential /
threaded time; efficiency = speedup / min(T, cores). The two timings of a
repeat are taken back to back (their order alternates), N is calibrated so a
sequential timing lasts about --min-time (0.2 s; the spec's own runs took
1.5-9 s), and every figure is the median over --repeat repeats with its
min-max. Shorter windows weigh the start of a threaded timing more than
its throughput: after the barrier, 16 Python threads took 8-10 ms before
each had made its first call (a thread waiting for the GIL while the others
keep retaking it gets it when CPython's 5 ms switch interval forces a
switch), a sixth of a 0.05 s window (docs/BENCHMARKS.md). The libraries' workers take turns, and after
each of its timings a worker is given time to go quiet (until its threads
use under a tenth of a core): PyTorch's OpenBLAS threads keep spinning for
up to ~0.1 s after a call, and a timing of the other library that started
meanwhile would share the CPUs with them.

KortexDL runs in two modes, reported separately:

* "default": the library's intra-op budget (all cores). One call already
  uses every core, so on a machine with few cores the speedup of T threads
  over one caller is near 1 by design; compare absolute throughput instead.
* "1 core/call": kortexdl.set_num_threads(1), every call single-threaded;
  here the spec's speedup and efficiency mean what they say.

--compare torch runs the same networks (Linear+ReLU, linear output), batches,
thread counts and operations in PyTorch, with its intra-op threads set to 1
and to all cores, and reports KortexDL/PyTorch throughput ratios against the
faster of the two. Each library runs in a worker process of its own, with
the environment this script was started with: `import kortexdl` sets
GOMP_SPINCOUNT=1000 for libgomp (unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is
set), PyTorch uses the same libgomp with its defaults, and whichever library
loads libgomp first in a process would decide for both. The workers take
turns (never both at once) and the order of the variants rotates per repeat.

Also: peak RSS of sequential vs threaded runs (fresh subprocesses, so the
peaks are comparable), the dnnl_sgemm ceiling from the C++ benchmark
(build/bench/kortexdl_bench, its ceil/ rows), and the targets of issue 4.
"""

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CONFIGS = {
    "small": [100, 50, 10],
    "medium": [784, 256, 128, 10],
    "large": [1000, 512, 256, 128, 10],
    "tiny": [8, 4, 2],  # for smoke tests; not part of "all"
}
ALL_CONFIGS = ["small", "medium", "large"]
OPS = ["forward", "forward_batch", "train", "evaluate"]
CONFIG_TITLE = {"small": "Small", "medium": "Medium", "large": "Large", "tiny": "Tiny"}
LEARNING_RATE = 1e-3
SPEC_TARGET = 2.0  # the spec's speedup target, for >= 4 threads on >= 4 cores
MARK = "@@BENCH@@ "  # prefix of the workers' protocol lines on stdout


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# Work per call


def layer_products(sizes):
    return sum(a * b for a, b in zip(sizes, sizes[1:]))


def rows_per_call(op, batch, chunks):
    return batch * chunks if op == "forward_batch" else batch


def flop_per_call(sizes, op, batch, chunks):
    """forward: 2*rows*sum(in*out); training: 2*batch*(3*sum(in*out) - in0*out0)
    (no input gradient for the first layer), as bench/bench_network.cpp counts."""
    if op == "train":
        return 2.0 * batch * (3 * layer_products(sizes) - sizes[0] * sizes[1])
    return 2.0 * rows_per_call(op, batch, chunks) * layer_products(sizes)


# ---------------------------------------------------------------------------
# Machine load


def proc_stat_busy():
    """(busy seconds of all CPUs, timestamp) from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = sum(v[:8]) - v[3] - v[4]  # all but idle and iowait (guest is in user)
    return busy / hz


def own_cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class LoadMeter:
    """CPU time other processes used while this process measured, in cores,
    including the time a hypervisor took from this guest's CPUs ("steal")."""

    def __enter__(self):
        self.busy0, self.own0, self.t0 = proc_stat_busy(), own_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        busy1 = proc_stat_busy()
        own = own_cpu() - self.own0
        self.own = own / wall if wall > 0 else None
        if self.busy0 is None or busy1 is None or wall <= 0:
            self.other = None
        else:
            self.other = max(0.0, ((busy1 - self.busy0) - own) / wall)
        return False


def busy_fraction(interval=0.2):
    """Fraction of all CPUs' time spent busy over `interval` (Linux)."""
    b0, t0 = proc_stat_busy(), time.perf_counter()
    time.sleep(interval)
    b1, t1 = proc_stat_busy(), time.perf_counter()
    if b0 is None:
        return 0.0
    return (b1 - b0) / ((t1 - t0) * usable_cores())


def process_cpu_ns(pid):
    """CPU time used so far by every thread of process pid, in ns (None if
    /proc does not say)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def wait_quiet(pid, window=0.01, busy_below=0.1, timeout=1.0):
    """Waits (up to `timeout` s) until process pid uses less than `busy_below`
    of a core over `window` s: its OpenMP or OpenBLAS threads stopped spinning
    after its last call. Returns the seconds waited."""
    t0 = time.perf_counter()
    before = process_cpu_ns(pid)
    while before is not None and time.perf_counter() - t0 < timeout:
        time.sleep(window)
        now = process_cpu_ns(pid)
        if now is None or now - before < busy_below * window * 1e9:
            break
        before = now
    return time.perf_counter() - t0


def wait_idle(threshold, timeout):
    """On a shared machine: wait (up to `timeout` s) until other processes
    leave the CPUs idle (busy below `threshold`). Returns (busy, waited)."""
    if threshold is None or not os.path.exists("/proc/stat"):
        return None, 0.0
    t0 = time.perf_counter()
    busy = busy_fraction()
    while busy >= threshold and time.perf_counter() - t0 < timeout:
        busy = busy_fraction()
    return busy, time.perf_counter() - t0


# ---------------------------------------------------------------------------
# The measurement harness: n calls spread over `threads` Python threads


def run_threads(make_call, threads, n, deadline_s, setup=None, context=None, warmup=2):
    """Starts `threads` threads; each runs `setup()`, enters `context()`, makes
    `warmup` calls, waits at a barrier, then makes its share of the n calls
    (shares differ by at most one). The clock starts when the barrier opens and
    stops when the last thread is done. If the clock passes `deadline_s` the
    threads stop early (between calls) and the figure is calls done / time.
    Returns {"seconds", "calls", "truncated"}."""
    shares = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    done = [0] * threads
    ends = [0.0] * threads
    start = []
    errors = []
    barrier = threading.Barrier(threads, action=lambda: start.append(time.perf_counter()))

    def body(i):
        try:
            if setup is not None:
                setup()
            with context() if context is not None else contextlib.nullcontext():
                call = make_call()
                for _ in range(warmup):
                    call()
                barrier.wait()
                deadline = start[0] + deadline_s
                share = shares[i]
                stride = max(1, share // 64)  # look at the clock ~64 times per share
                k = 0
                while k < share:
                    m = min(stride, share - k)
                    for _ in range(m):
                        call()
                    k += m
                    if time.perf_counter() > deadline:
                        break
                ends[i] = time.perf_counter()
                done[i] = k
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:  # report it, do not hang the others
            errors.append("".join(traceback.format_exception(e)))
            barrier.abort()

    pool = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    calls = sum(done)
    return {"seconds": max(ends) - start[0], "calls": calls, "truncated": calls < n}


# ---------------------------------------------------------------------------
# Backends (each imported only in its own worker process)


class KortexBackend:
    name = "kortexdl"

    def __init__(self, thread_safety=True):
        spin_before = os.environ.get("GOMP_SPINCOUNT")
        import numpy as np
        import kortexdl

        self.np, self.k = np, kortexdl
        self.thread_safety = thread_safety
        self.nets, self.data = {}, {}
        user_policy = "OMP_WAIT_POLICY" in os.environ or spin_before is not None
        self.info = {
            "version": kortexdl.__version__,
            "backend": kortexdl.backend_name(),
            "default_threads": kortexdl.get_num_threads(),
            "libgomp_spin": "as set by the user" if user_policy else "GOMP_SPINCOUNT=1000 (set by import kortexdl)",
            "thread_safety": thread_safety,
            "numpy": np.__version__,
            "built": built_files(),  # which build is measured (HEAD may be newer)
        }

    def set_mode(self, intra):
        self.k.set_num_threads(intra)  # 0 = the default budget, 1 = one core per call

    def setup(self, intra):
        return None

    def context(self, op):
        return None

    def net(self, config, op):
        key = (config, op == "train")
        if key not in self.nets:
            net = self.k.Network(CONFIGS[config], seed=1)
            if self.thread_safety:
                net.enable_thread_safety(True)
            self.nets[key] = net
        return self.nets[key]

    def make_call(self, config, op, batch, chunks):
        np, k = self.np, self.k
        net = self.net(config, op)
        key = (config, op, batch, chunks)
        if key not in self.data:
            rng = np.random.default_rng(7)
            rows = rows_per_call(op, batch, chunks)
            x = rng.standard_normal((rows, net.input_size)).astype(np.float32)
            y = rng.integers(0, net.output_size, size=rows).astype(np.int32)
            self.data[key] = (x, y)
        x, y = self.data[key]
        ce = k.LossType.CrossEntropy
        if op == "forward":
            return lambda: net.forward(x)
        if op == "forward_batch":
            return lambda: net.forward_batch(x, batch)
        if op == "train":
            return lambda: net.train_batch(x, y, ce, LEARNING_RATE)
        if op == "evaluate":
            return lambda: net.evaluate(x, y, ce)
        raise ValueError(op)


class TorchBackend:
    name = "torch"

    def __init__(self, thread_safety=True):
        import numpy as np
        import torch

        self.np, self.torch = np, torch
        self.models, self.data = {}, {}
        self.lock = threading.Lock()
        self.default_threads = torch.get_num_threads()
        self.openblas = openblas_handles()
        self.info = {
            "version": torch.__version__,
            "default_threads": self.default_threads,
            "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "openblas": [{"path": path, "core": core, "threads": lib.openblas_get_num_threads()}
                         for path, core, lib in self.openblas],
            "numpy": np.__version__,
        }

    def set_mode(self, intra):
        # PyTorch's GEMMs run in OpenBLAS here (Debian's build), whose thread
        # pool torch.set_num_threads does not control: set both.
        n = intra or self.default_threads
        self.torch.set_num_threads(n)
        for _, _, lib in self.openblas:
            lib.openblas_set_num_threads(n)

    def setup(self, intra):
        # OpenMP's team size is per thread: set it in every Python thread.
        n = intra or self.default_threads
        return lambda: self.torch.set_num_threads(n)

    def context(self, op):
        return None if op == "train" else self.torch.inference_mode

    def model(self, config, op):
        key = (config, op == "train")
        if key not in self.models:
            nn = self.torch.nn
            self.torch.manual_seed(1)
            sizes = CONFIGS[config]
            layers = []
            for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
                layers.append(nn.Linear(a, b))
                if i + 2 < len(sizes):
                    layers.append(nn.ReLU())
            self.models[key] = nn.Sequential(*layers)
        return self.models[key]

    def make_call(self, config, op, batch, chunks):
        np, torch = self.np, self.torch
        F = torch.nn.functional
        model = self.model(config, op)
        key = (config, op, batch, chunks)
        if key not in self.data:
            rng = np.random.default_rng(7)
            rows = rows_per_call(op, batch, chunks)
            x = torch.from_numpy(rng.standard_normal((rows, CONFIGS[config][0])).astype(np.float32))
            y = torch.from_numpy(rng.integers(0, CONFIGS[config][-1], size=rows).astype(np.int64))
            self.data[key] = (x, y, list(x.split(batch)))
        x, y, parts = self.data[key]
        if op == "forward":
            return lambda: model(x)
        if op == "forward_batch":
            return lambda: torch.cat([model(p) for p in parts])
        if op == "evaluate":
            def evaluate():
                out = model(x)
                return F.cross_entropy(out, y).item(), (out.argmax(1) == y).float().mean().item()
            return evaluate
        if op == "train":
            # PyTorch's leanest SGD step, with KortexDL's thread-safe semantics
            # as far as PyTorch allows: gradients computed concurrently (no
            # shared .grad buffers), each update applied whole under a lock.
            # The update goes through .data: an in-place update of the
            # parameters themselves would make a concurrent backward pass
            # fail autograd's version check. (Unlike KortexDL's, PyTorch's
            # backward may then read weights while another thread's update
            # is being written: Hogwild-style.)
            params = list(model.parameters())
            weights = [p.data for p in params]
            lock = self.lock

            def train():
                loss = F.cross_entropy(model(x), y)
                grads = torch.autograd.grad(loss, params)
                with lock:
                    torch._foreach_add_(weights, list(grads), alpha=-LEARNING_RATE)
                return loss.item()
            return train
        raise ValueError(op)


def built_files():
    """Path and modification time (UTC) of the extension module and of the
    libkortexdl it loaded, from /proc/self/maps."""
    out = {}
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "kortexdl" in line and ".so" in line})
    except OSError:
        return out
    for path in paths:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        out[path] = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return out


def openblas_handles():
    """The OpenBLAS libraries loaded in this process: [(path, core name, ctypes lib)]."""
    import ctypes

    out, seen = [], set()
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "blas" in line and ".so" in line})
    except OSError:
        return out
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if not hasattr(lib, "openblas_set_num_threads"):
            continue
        addr = ctypes.cast(lib.openblas_set_num_threads, ctypes.c_void_p).value
        if addr in seen:
            continue
        seen.add(addr)
        lib.openblas_get_corename.restype = ctypes.c_char_p
        out.append((path, lib.openblas_get_corename().decode(), lib))
    return out


def cpu_has(flag):
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return flag in line.split()
    except OSError:
        pass
    return False


def torch_environment(as_installed):
    """The torch worker's environment. Debian's OpenBLAS 0.3.21 does not know
    recent Xeons (e.g. family 6 model 207) and falls back to its Prescott (SSE3)
    kernels, 3-4x slower; unless told otherwise, give it the AVX-512 kernels
    this CPU can run (OPENBLAS_CORETYPE=SkylakeX) so PyTorch runs at its best."""
    env = dict(os.environ)
    if not as_installed and "OPENBLAS_CORETYPE" not in env and cpu_has("avx512f"):
        env["OPENBLAS_CORETYPE"] = "SkylakeX"
    return env


def make_backend(lib, thread_safety=True):
    if lib == "kortexdl":
        return KortexBackend(thread_safety)
    if lib == "torch":
        return TorchBackend(thread_safety)
    raise ValueError(lib)


def timed(backend, job, threads, n):
    backend.set_mode(job["intra"])
    make = lambda: backend.make_call(job["config"], job["op"], job["batch"], job["chunks"])  # noqa: E731
    return run_threads(make, threads, n, job["deadline"], setup=backend.setup(job["intra"]),
                       context=backend.context(job["op"]))


def in_thread(fn):
    """Runs fn() in a new thread and returns its result."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    if not out:
        raise RuntimeError("calibration failed (see stderr)")
    return out[0]


def calibrate(backend, job):
    """Seconds per call, one caller: warm-up, then double the calls until a run
    lasts job["min_seconds"]."""
    backend.set_mode(job["intra"])
    call = backend.make_call(job["config"], job["op"], job["batch"], job["chunks"])
    setup = backend.setup(job["intra"])
    if setup:
        setup()
    ctx = backend.context(job["op"])
    with ctx() if ctx else contextlib.nullcontext():
        for _ in range(3):
            call()
        calls = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(calls):
                call()
            seconds = time.perf_counter() - t0
            if seconds >= job["min_seconds"] or calls >= 1 << 22:
                return seconds / calls
            calls *= 2


def with_idle_pool(backend, job, fn):
    """Runs fn() while another thread that has made the same call (and so owns
    an OpenMP team, which libgomp keeps until the thread exits) sits idle: a
    thread pool used one call at a time. With more libgomp threads than CPUs,
    libgomp shortens its spin-wait (GOMP_SPINCOUNT is throttled to <= 100)."""
    ready, release = threading.Event(), threading.Event()

    def park():
        setup = backend.setup(job["intra"])
        if setup:
            setup()
        call = backend.make_call(job["config"], job["op"], job["batch"], job["chunks"])
        call()
        call()
        ready.set()
        release.wait()

    t = threading.Thread(target=park, daemon=True)
    t.start()
    ready.wait()
    try:
        return fn()
    finally:
        release.set()
        t.join()


def worker_main(lib, thread_safety):
    """A worker process: reads jobs (JSON lines) from stdin, answers on stdout."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write to the protocol stream

    def reply(obj):
        out.write(MARK + json.dumps(obj) + "\n")
        out.flush()

    try:
        backend = make_backend(lib, thread_safety)
    except Exception as e:
        reply({"error": f"{type(e).__name__}: {e}"})
        return 1
    reply({"info": backend.info})
    for line in sys.stdin:
        job = json.loads(line)
        try:
            if job["cmd"] == "quit":
                break
            if job["cmd"] == "calibrate":
                # In a thread of its own, like every timing: a thread that has run an
                # OpenMP team keeps it (idle) until it exits, see idle_pool below.
                reply({"per_call": in_thread(lambda: calibrate(backend, job))})
            elif job["cmd"] == "measure":
                res = {}
                order = ["seq", "conc"] if job["repeat"] % 2 == 0 else ["conc", "seq"]
                if job.get("idle_pool"):
                    order.append("seq_idle_pool")
                for which in order:
                    threads = 1 if which.startswith("seq") else job["threads"]
                    with LoadMeter() as load:
                        if which == "seq_idle_pool":
                            r = with_idle_pool(backend, job, lambda: timed(backend, job, 1, job["n"]))
                        else:
                            r = timed(backend, job, threads, job["n"])
                    r["other_cpu"], r["own_cpu"] = load.other, load.own
                    res[which] = r
                reply(res)
            else:
                raise ValueError(job["cmd"])
        except Exception:
            reply({"error": traceback.format_exc()})
    return 0


class Worker:
    """The orchestrator's handle on a worker process."""

    def __init__(self, lib, thread_safety, env=None):
        cmd = [sys.executable, os.path.abspath(__file__), "--_worker", lib]
        if not thread_safety:
            cmd.append("--no-thread-safety")
        self.lib = lib
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     cwd=HERE, env=env)
        hello = self._read()
        if "error" in hello:
            self.close()
            raise RuntimeError(f"{lib} worker: {hello['error']}")
        self.info = hello["info"]
        self.info["pid"] = self.proc.pid

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        raise RuntimeError(f"{self.lib} worker exited (code {self.proc.wait()})")

    def ask(self, job):
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        res = self._read()
        if "error" in res:
            raise RuntimeError(f"{self.lib} worker failed on {job}:\n{res['error']}")
        wait_quiet(self.proc.pid)  # the next timing, of either library, starts on quiet CPUs
        return res

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()


# ---------------------------------------------------------------------------
# Peak RSS in fresh processes


def rss_child_main(spec):
    job = json.loads(spec)
    backend = make_backend(job["lib"])
    backend.make_call(job["config"], job["op"], job["batch"], job["chunks"])  # network and data
    before = rss_now_kb()
    job["deadline"] = 1e9
    r = timed(backend, job, job["threads"], job["n"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(MARK + json.dumps({"before_kb": before, "peak_kb": peak, "seconds": r["seconds"]}))
    return 0


def rss_now_kb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measure_rss(lib, config, op, batch, chunks, threads, n, intra, env=None):
    job = dict(lib=lib, config=config, op=op, batch=batch, chunks=chunks, threads=threads, n=n, intra=intra)
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--_rss", json.dumps(job)], cwd=HERE,
                       capture_output=True, text=True, timeout=600, env=env)
    for line in p.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"RSS child failed ({p.returncode}): {p.stderr[-2000:]}")


# ---------------------------------------------------------------------------
# The dnnl_sgemm ceiling from the C++ benchmark


def run_ceiling(binary, configs, batches, repetitions):
    """Runs kortexdl_bench's ceil/ rows for these configs and batches; returns
    {"<op>/<cfg>/<batch>/<mt|st>": {"gflops": [per repetition], "other_cpu": [...],
    "runq_wait": [...]}} (forward and train rows), or None if the binary is missing."""
    if not binary or not os.path.exists(binary):
        return None
    names = [c for c in configs if c in ALL_CONFIGS]
    sizes = [str(b) for b in batches if b in (1, 32, 256, 1000)]  # the C++ benchmark's batches
    if not names or not sizes:
        return {}
    # Names look like ceil/train/medium/256/mt/min_time:0.050/min_warmup_time:0.010/real_time.
    filt = f"^ceil/(forward|train)/({'|'.join(names)})/({'|'.join(sizes)})/(mt|st)/"
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"kortexdl-ceiling-{os.getpid()}.json")
    cmd = [binary, f"--benchmark_filter={filt}", f"--benchmark_repetitions={repetitions}",
           "--benchmark_enable_random_interleaving=true", f"--benchmark_out={out}", "--benchmark_out_format=json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    try:
        with open(out) as f:
            data = json.load(f)
    except (OSError, ValueError):
        raise RuntimeError(f"{shlex.join(cmd)} failed ({p.returncode}): {p.stdout[-1000:]} {p.stderr[-1000:]}")
    finally:
        if os.path.exists(out):
            os.unlink(out)
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        key = "/".join(b["name"].split("/")[1:5])
        row = rows.setdefault(key, {"gflops": [], "other_cpu": [], "runq_wait": []})
        row["gflops"].append(b["GFLOP/s"])
        row["other_cpu"].append(b.get("other_cpu"))
        row["runq_wait"].append(b.get("runq_wait"))
    return rows


# ---------------------------------------------------------------------------
# Statistics


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def lcm_all(values):
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


# ---------------------------------------------------------------------------
# The orchestrator


def variants_for(args, cores):
    v = []
    if "default" in args.modes:
        v.append({"id": "kdl", "lib": "kortexdl", "intra": 0, "label": "KortexDL default"})
    if "one" in args.modes:
        v.append({"id": "kdl1", "lib": "kortexdl", "intra": 1, "label": "KortexDL 1 core/call"})
    if args.compare == "torch":
        v.append({"id": "torch1", "lib": "torch", "intra": 1, "label": "PyTorch 1 thread"})
        if cores > 1:
            v.append({"id": "torchN", "lib": "torch", "intra": cores, "label": f"PyTorch {cores} threads"})
    return v


def machine_info():
    info = {"cores": usable_cores(), "platform": platform.platform(), "python": sys.version.split()[0]}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src", "include",
                                "python_bindings/src"], capture_output=True, text=True).stdout.strip()
        info["library_sources_modified"] = bool(dirty)
    except OSError:
        pass
    info["loadavg"] = os.getloadavg()
    info["nice"] = os.nice(0)
    return info


def run_benchmark(args):
    cores = usable_cores()
    configs = ALL_CONFIGS if "all" in args.config else list(dict.fromkeys(args.config))
    ops = OPS if "all" in args.op else list(dict.fromkeys(args.op))
    threads = sorted(set(args.threads))
    batches = list(dict.fromkeys(args.batch))
    variants = variants_for(args, cores)
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.perf_counter()
    result = {
        "date": started.strftime("%a %b %d %Y %H:%M:%S UTC"),
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
        "args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "machine": machine_info(),
        "variants": variants,
        "configs": {c: CONFIGS[c] for c in configs},
        "method": "N calls on one thread vs the same N calls spread over T threads; medians over repeats",
    }
    print(f"# GIL-release benchmark, {result['date']}, {cores} cores ({result['machine'].get('cpu', '?')})",
          flush=True)

    ceiling_before = None
    if not args.no_ceiling:
        print("# dnnl_sgemm ceiling (C++ kortexdl_bench ceil/ rows) ...", file=sys.stderr, flush=True)
        ceiling_before = run_ceiling(args.bench_binary, configs, batches, args.ceiling_repetitions)

    workers = {}
    try:
        for lib in dict.fromkeys(v["lib"] for v in variants):
            env = torch_environment(args.torch_as_installed) if lib == "torch" else None
            workers[lib] = Worker(lib, not args.no_thread_safety, env)
        result["libraries"] = {lib: w.info for lib, w in workers.items()}
        for lib, w in workers.items():
            print(f"# {lib}: {w.info}", flush=True)
        points = measure_points(args, workers, variants, configs, ops, batches, threads, cores)
    finally:
        for w in workers.values():
            w.close()
    result["points"] = points

    ceiling_after = None
    if not args.no_ceiling:
        print("# dnnl_sgemm ceiling again ...", file=sys.stderr, flush=True)
        ceiling_after = run_ceiling(args.bench_binary, configs, batches, args.ceiling_repetitions)
    ceiling = None
    if ceiling_before is not None:
        ceiling = {}
        empty = {"gflops": [], "other_cpu": [], "runq_wait": []}
        for key in sorted(set(ceiling_before) | set(ceiling_after or {})):
            a, b = ceiling_before.get(key, empty), (ceiling_after or {}).get(key, empty)
            ceiling[key] = {"gflops": spread(a["gflops"] + b["gflops"]), "samples": a["gflops"] + b["gflops"],
                            "other_cpu": spread(a["other_cpu"] + b["other_cpu"]),
                            "runq_wait": spread(a["runq_wait"] + b["runq_wait"])}
    result["ceiling"] = ceiling
    result["ceiling_binary"] = args.bench_binary

    result["rss"] = [] if args.no_rss else measure_all_rss(args, points, configs, ops, batches, threads, variants)
    result["sequential"] = sequential_summary(points, variants, configs, ops, batches, ceiling)
    result["targets"] = evaluate_targets(result, configs, batches, threads, cores, variants)
    result["elapsed_seconds"] = time.perf_counter() - t_start
    result["machine"]["loadavg_end"] = os.getloadavg()

    print_report(result, configs, ops, batches, threads, cores, variants)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"\n# JSON written to {args.json}")
    if args.plot:
        plot(result, args.plot, configs, ops, batches, threads, cores, variants, args.plot_batch)
    print(f"# total {result['elapsed_seconds']:.0f} s")
    return 0


def measure_points(args, workers, variants, configs, ops, batches, threads, cores):
    points = []
    step = lcm_all(threads)
    min_n = step * max(1, -(-2 * max(threads) // step))  # every thread makes at least two calls
    total = len(configs) * len(ops) * len(batches) * len(threads)
    done = 0
    for config in configs:
        sizes = CONFIGS[config]
        for op in ops:
            for batch in batches:
                flop = flop_per_call(sizes, op, batch, args.chunks)
                rows = rows_per_call(op, batch, args.chunks)
                base = dict(config=config, op=op, batch=batch, chunks=args.chunks)
                # Warm-up and calibration: N so that one timing lasts ~--min-time.
                per_call, n = {}, {}
                for v in variants:
                    r = workers[v["lib"]].ask(dict(base, cmd="calibrate", intra=v["intra"],
                                                   min_seconds=max(0.01, args.min_time / 4)))
                    per_call[v["id"]] = r["per_call"]
                    n[v["id"]] = max(min_n, step * math.ceil(args.min_time / r["per_call"] / step))
                for t in threads:
                    busy, waited = wait_idle(args.wait_idle, args.wait_timeout)
                    raw = {v["id"]: [] for v in variants}
                    for rep in range(args.repeat):
                        shift = rep % len(variants)
                        for v in variants[shift:] + variants[:shift]:  # rotate the order per repeat
                            deadline = max(1.0, 20 * n[v["id"]] * per_call[v["id"]])
                            idle_pool = t == 1 and v["id"] == "kdl" and not args.no_idle_pool
                            raw[v["id"]].append(workers[v["lib"]].ask(dict(
                                base, cmd="measure", intra=v["intra"], threads=t, n=n[v["id"]], repeat=rep,
                                deadline=deadline, idle_pool=idle_pool)))
                    point = dict(base, threads=t, flop_per_call=flop, rows_per_call=rows, idle_wait_s=waited,
                                 busy_before=busy, variants={})
                    for v in variants:
                        point["variants"][v["id"]] = summarize_point(raw[v["id"]], n[v["id"]], flop, t, cores,
                                                                     per_call[v["id"]])
                    points.append(point)
                    done += 1
                    print_progress(point, variants, done, total)
    return points


def summarize_point(reps, n, flop, threads, cores, per_call):
    seq_rate = [r["seq"]["calls"] / r["seq"]["seconds"] for r in reps]
    conc_rate = [r["conc"]["calls"] / r["conc"]["seconds"] for r in reps]
    speedup = [c / s for c, s in zip(conc_rate, seq_rate)]
    return {
        "n": n,
        "calibrated_seconds_per_call": per_call,
        "sequential_time": spread([n / r for r in seq_rate]),  # seconds for N calls
        "threaded_time": spread([n / r for r in conc_rate]),
        "speedup": spread(speedup),
        "efficiency": spread([s / min(threads, cores) for s in speedup]),
        "calls_per_s": spread(conc_rate),
        "sequential_calls_per_s": spread(seq_rate),
        "gflops": spread([r * flop / 1e9 for r in conc_rate]),
        "sequential_gflops": spread([r * flop / 1e9 for r in seq_rate]),
        "other_cpu": spread([r["conc"]["other_cpu"] for r in reps] + [r["seq"]["other_cpu"] for r in reps]),
        "own_cpu_sequential": spread([r["seq"]["own_cpu"] for r in reps]),  # cores this library kept busy
        "own_cpu_threaded": spread([r["conc"]["own_cpu"] for r in reps]),
        "truncated": any(r["conc"]["truncated"] or r["seq"]["truncated"] for r in reps),
        "sequential_idle_pool_calls_per_s": spread([r["seq_idle_pool"]["calls"] / r["seq_idle_pool"]["seconds"]
                                                   for r in reps if "seq_idle_pool" in r]),
        "repeats": reps,
    }


def print_progress(point, variants, done, total):
    parts = []
    for v in variants:
        s = point["variants"][v["id"]]
        parts.append(f"{v['id']} {s['calls_per_s']['median']:9.0f}/s x{s['speedup']['median']:.2f}")
    print(f"[{done:3d}/{total}] {point['config']:6s} {point['op']:13s} b{point['batch']:<5d} T{point['threads']:<3d} "
          + "  ".join(parts), file=sys.stderr, flush=True)


def measure_all_rss(args, points, configs, ops, batches, threads, variants):
    """Peak RSS of a sequential and of each threaded run, each in a fresh process,
    at the largest batch, for KortexDL (default mode) and, with --compare torch,
    PyTorch (1 intra-op thread) at the largest thread count."""
    batch = max(batches)
    out = []
    libs = [("kortexdl", 0, threads)]
    if args.compare == "torch":
        libs.append(("torch", 1, sorted({1, max(threads)})))
    print("# peak RSS (fresh processes) ...", file=sys.stderr, flush=True)
    for lib, intra, tlist in libs:
        env = torch_environment(args.torch_as_installed) if lib == "torch" else None
        for config in configs:
            for op in ops:
                n = max(4 * max(threads), 16)
                res = {}
                for t in tlist:
                    res[t] = measure_rss(lib, config, op, batch, args.chunks, t, n, intra, env)
                seq = res[1]
                for t in tlist:
                    if t == 1:
                        continue
                    r = res[t]
                    out.append({
                        "lib": lib, "config": config, "op": op, "batch": batch, "threads": t, "n": n,
                        "sequential_peak_kb": seq["peak_kb"], "threaded_peak_kb": r["peak_kb"],
                        "sequential_before_kb": seq["before_kb"], "threaded_before_kb": r["before_kb"],
                        "overhead_percent": 100.0 * (r["peak_kb"] - seq["peak_kb"]) / seq["peak_kb"],
                        "delta_kb": r["peak_kb"] - seq["peak_kb"],
                    })
    return out


def sequential_summary(points, variants, configs, ops, batches, ceiling):
    """Per variant, config, op, batch: the sequential (one caller) throughput,
    the median over all its sequential timings (every thread count, every
    repeat), and the fraction of the dnnl_sgemm ceiling."""
    out = []
    for config in configs:
        for op in ops:
            for batch in batches:
                pts = [p for p in points if p["config"] == config and p["op"] == op and p["batch"] == batch]
                if not pts:
                    continue
                row = {"config": config, "op": op, "batch": batch, "flop_per_call": pts[0]["flop_per_call"],
                       "rows_per_call": pts[0]["rows_per_call"], "variants": {}}
                for v in variants:
                    rates = [r["seq"]["calls"] / r["seq"]["seconds"] for p in pts for r in p["variants"][v["id"]]["repeats"]]
                    s = spread(rates)
                    row["variants"][v["id"]] = {
                        "calls_per_s": s,
                        "us_per_call": 1e6 / s["median"],
                        "gflops": spread([x * row["flop_per_call"] / 1e9 for x in rates]),
                    }
                one = [p for p in pts if p["threads"] == 1 and "kdl" in p["variants"]]
                if one and one[0]["variants"]["kdl"]["sequential_idle_pool_calls_per_s"]["median"]:
                    v = one[0]["variants"]["kdl"]
                    idle = v["sequential_idle_pool_calls_per_s"]
                    row["idle_pool"] = {"calls_per_s": idle, "plain_calls_per_s": v["sequential_calls_per_s"],
                                        "slowdown": v["sequential_calls_per_s"]["median"] / idle["median"]}
                ceil_op = "train" if op == "train" else "forward"
                row["ceiling"] = {}
                if ceiling:
                    # A chunk of forward_batch is a forward at `batch` rows: same ceiling GFLOP/s.
                    mt = ceiling.get(f"{ceil_op}/{config}/{batch}/mt", {}).get("gflops", {}).get("median")
                    st = ceiling.get(f"{ceil_op}/{config}/{batch}/st", {}).get("gflops", {}).get("median")
                    if mt is not None and st is not None:
                        # The library's default mode may use every core or one (small calls run on one):
                        # its ceiling is the faster of the two, as in bench/summarize.py.
                        row["ceiling"] = {"mt": mt, "st": st, "kdl": max(mt, st), "kdl1": st}
                        for vid in ("kdl", "kdl1"):
                            if vid in row["variants"]:
                                row["variants"][vid]["of_ceiling"] = row["variants"][vid]["gflops"]["median"] / row["ceiling"][vid]
                t1 = row["variants"].get("torch1")
                tn = row["variants"].get("torchN")
                if t1:
                    best = max([t for t in (("torch1", t1), ("torchN", tn)) if t[1]], key=lambda t: t[1]["calls_per_s"]["median"])
                    row["torch_best"] = best[0]
                    for vid in ("kdl", "kdl1"):
                        if vid in row["variants"]:
                            row["variants"][vid]["vs_torch_best"] = (row["variants"][vid]["calls_per_s"]["median"]
                                                                     / best[1]["calls_per_s"]["median"])
                out.append(row)
    return out


def torch_target(batch):
    if batch == 1:
        return 3.0
    if batch == 32:
        return 1.5
    if batch >= 256:
        return 1.3
    return None


def evaluate_targets(result, configs, batches, threads, cores, variants):
    ids = {v["id"] for v in variants}
    t = []
    seq = result["sequential"]
    # (1) sequential step vs the dnnl_sgemm ceiling
    for row in seq:
        if row["config"] in ("medium", "large") and row["batch"] >= 256 and row["op"] in ("train", "forward"):
            goal = 0.7 if row["op"] == "train" else 0.8
            for vid in ("kdl", "kdl1"):
                if vid not in ids:
                    continue
                frac = row["variants"][vid].get("of_ceiling")
                t.append({"target": f"sequential {row['op']} vs dnnl_sgemm ceiling", "config": row["config"],
                          "batch": row["batch"], "mode": vid, "measured": frac, "goal": goal,
                          "met": None if frac is None else frac >= goal,
                          "detail": (f"{row['variants'][vid]['gflops']['median']:.1f} of "
                                     f"{row['ceiling'][vid]:.1f} GFLOP/s") if frac is not None else "ceiling n/a"})
    # (2) vs PyTorch at its best thread count, one caller
    for row in seq:
        goal = torch_target(row["batch"])
        if row["op"] in ("forward", "train") and goal and "vs_torch_best" in row["variants"].get("kdl", {}):
            r = row["variants"]["kdl"]["vs_torch_best"]
            best = row["variants"][row["torch_best"]]
            t.append({"target": f"{row['op']} vs PyTorch (best of 1/{cores} threads)", "config": row["config"],
                      "batch": row["batch"], "mode": "kdl", "measured": r, "goal": goal, "met": r >= goal,
                      "detail": (f"{row['variants']['kdl']['us_per_call']:.1f} vs {best['us_per_call']:.1f} us/call "
                                 f"(PyTorch at {row['torch_best'][5:].replace('N', str(cores))} thread(s))")})
    # (3) efficiency at threads = cores, forward, batch <= 64
    for p in result["points"]:
        if p["op"] == "forward" and p["batch"] <= 64 and p["threads"] == cores and cores > 1:
            for vid in ("kdl1", "kdl"):
                if vid not in ids:
                    continue
                e = p["variants"][vid]["efficiency"]
                beside = ""
                if "torch1" in p["variants"]:
                    beside = f"PyTorch 1 thread/call: {p['variants']['torch1']['efficiency']['median']:.2f}"
                t.append({"target": f"forward efficiency at threads = cores = {cores}", "config": p["config"],
                          "batch": p["batch"], "mode": vid, "measured": e["median"], "goal": 0.9,
                          "met": e["median"] >= 0.9 if vid == "kdl1" else None,
                          "detail": f"range {e['min']:.2f}-{e['max']:.2f}; {beside}"})
    # (4) throughput never below 0.95x one thread, up to 16 threads
    groups = {}
    for p in result["points"]:
        if 1 < p["threads"] <= 16:
            groups.setdefault((p["config"], p["op"], p["batch"]), []).append(p)
    for (config, op, batch), pts in groups.items():
        for vid in ("kdl", "kdl1"):
            if vid not in ids:
                continue
            worst = min(pts, key=lambda p: p["variants"][vid]["speedup"]["median"])
            s = worst["variants"][vid]["speedup"]["median"]
            beside = []
            for tid in ("torch1", "torchN"):
                if tid in worst["variants"]:
                    tw = min(pts, key=lambda p: p["variants"][tid]["speedup"]["median"])
                    beside.append(f"{tid}: {tw['variants'][tid]['speedup']['median']:.2f} at T={tw['threads']}")
            t.append({"target": "throughput >= 0.95x one thread (T <= 16)", "config": config, "op": op,
                      "batch": batch, "mode": vid, "measured": s, "goal": 0.95, "met": s >= 0.95,
                      "detail": f"worst at T={worst['threads']}; " + ", ".join(beside)})
    # (5) the spec's 2.0x line
    applicable = cores >= 4 and any(th >= 4 for th in threads)
    t.append({"target": "spec: speedup >= 2.0x at >= 4 threads", "config": "all", "batch": None, "mode": "kdl1",
              "measured": None, "goal": SPEC_TARGET, "met": None,
              "detail": "see the scaling tables" if applicable else f"n/a: this machine has {cores} cores (needs >= 4)"})
    return t


# ---------------------------------------------------------------------------
# Printing


MODE_TITLE = {"kdl": "KortexDL, default budget (one call may use every core)",
              "kdl1": "KortexDL, one core per call (set_num_threads(1))"}


def fmt_time(s):
    return f"{s:.3g}s"


def fmt(x, spec="{:.2f}"):
    return "-" if x is None else spec.format(x)


def status(met):
    return "n/a" if met is None else ("✅" if met else "❌")


def print_headline(result, cores, ids):
    """One caller, forward and training step: KortexDL (default budget) vs PyTorch at its best."""
    if "kdl" not in ids or not any(i.startswith("torch") for i in ids):
        return
    print("\n## Headline: one caller, KortexDL (default budget) vs PyTorch at its best thread count\n")
    print("| config | op | batch | KortexDL us/call | KortexDL GFLOP/s | PyTorch us/call | PyTorch GFLOP/s | "
          "PyTorch threads | KortexDL / PyTorch |")
    print("|:---|:---|---:|---:|---:|---:|---:|---:|---:|")
    for row in result["sequential"]:
        if row["op"] not in ("forward", "train") or "torch_best" not in row:
            continue
        k, t = row["variants"]["kdl"], row["variants"][row["torch_best"]]
        print(f"| {row['config']} | {row['op']} | {row['batch']} | {k['us_per_call']:.1f} | {k['gflops']['median']:.1f} | "
              f"{t['us_per_call']:.1f} | {t['gflops']['median']:.1f} | {row['torch_best'][5:].replace('N', str(cores))} | "
              f"{k['vs_torch_best']:.2f}x |")


def print_concurrency_summary(result, configs, ops, batches, cores, ids):
    """Per config, op, batch and variant: the speedup at T = cores and the worst one up to 16 threads."""
    points = result["points"]
    print(f"\n## Concurrency summary: speedup of T threads over one (same N calls), at T = {cores} (= cores) "
          "and the worst for 2 <= T <= 16 (threads in brackets)\n")
    names = {"kdl": "KortexDL default", "kdl1": "KortexDL 1 core/call", "torch1": "PyTorch 1 thr",
             "torchN": f"PyTorch {cores} thr"}
    print("| config | op | batch | " + " | ".join(f"{names[i]} at T={cores} | {names[i]} worst" for i in ids) + " |")
    print("|:---|:---|---:|" + "---:|" * (2 * len(ids)))
    for config in configs:
        for op in ops:
            for batch in batches:
                pts = [p for p in points if p["config"] == config and p["op"] == op and p["batch"] == batch
                       and 1 < p["threads"] <= 16]
                if not pts:
                    continue
                cells = []
                for i in ids:
                    at = [p for p in pts if p["threads"] == cores]
                    cells.append(fmt(at[0]["variants"][i]["speedup"]["median"]) if at else "-")
                    w = min(pts, key=lambda p: p["variants"][i]["speedup"]["median"])
                    cells.append(f"{w['variants'][i]['speedup']['median']:.2f} ({w['threads']})")
                print(f"| {config} | {op} | {batch} | " + " | ".join(cells) + " |")


def print_report(result, configs, ops, batches, threads, cores, variants):
    ids = [v["id"] for v in variants]
    kdl_ids = [i for i in ids if i.startswith("kdl")]
    points = result["points"]

    def pts(config, op, batch):
        return [p for p in points if p["config"] == config and p["op"] == op and p["batch"] == batch]

    print_headline(result, cores, ids)
    print_concurrency_summary(result, configs, ops, batches, cores, ids)

    print("\n## Thread scaling (the spec's table; times are for N calls)")
    print("Speedup = sequential time / threaded time for the same N calls; efficiency = speedup / min(T, "
          f"{cores} cores); medians over {result['args']['repeat']} repeats, min-max of the speedup; "
          "'other CPU' = cores other processes used meanwhile. At T = 1 both timings do the same work, so "
          "that row's speedup shows the run-to-run noise.")
    for vid in kdl_ids:
        for op in ops:
            for batch in batches:
                print(f"\n### {op}, batch {batch}: {MODE_TITLE[vid]}\n")
                print(f"| Configuration | Threads | Sequential Time | T-Thread Time | Speedup | Target | "
                      f"min-max | calls/s | GFLOP/s | Efficiency | N | other CPU |")
                print("|:---|---:|---:|---:|---:|:---|---:|---:|---:|---:|---:|---:|")
                for config in configs:
                    for p in pts(config, op, batch):
                        s = p["variants"][vid]
                        t = p["threads"]
                        if cores >= 4 and t >= 4:
                            target = f"{SPEC_TARGET:.1f}x {status(s['speedup']['median'] >= SPEC_TARGET)}"
                        else:
                            target = "n/a"
                        title = f"{CONFIG_TITLE[config]} Network ({'-'.join(map(str, CONFIGS[config]))})"
                        print(f"| {title} | {t} | {fmt_time(s['sequential_time']['median'])} | "
                              f"{fmt_time(s['threaded_time']['median'])} | {s['speedup']['median']:.2f}x | {target} | "
                              f"{s['speedup']['min']:.2f}-{s['speedup']['max']:.2f} | {s['calls_per_s']['median']:.0f} | "
                              f"{s['gflops']['median']:.1f} | {s['efficiency']['median']:.2f} | {s['n']} | "
                              f"{fmt(s['other_cpu']['median'])}{' (cut short)' if s['truncated'] else ''} |")

    if any(i.startswith("torch") for i in ids):
        print("\n## KortexDL vs PyTorch (same networks, batches, thread counts; calls/s of T threads)")
        print("ratio = KortexDL calls/s / PyTorch calls/s (> 1: KortexDL faster); 'best' = the faster of PyTorch "
              f"at 1 and at {cores} intra-op threads, per point.")
        for op in ops:
            for batch in batches:
                print(f"\n### {op}, batch {batch}\n")
                cols = [i for i in ids]
                head = " | ".join({"kdl": "KortexDL", "kdl1": "KortexDL 1/call", "torch1": "PyTorch 1 thr",
                                   "torchN": f"PyTorch {cores} thr"}[i] for i in cols)
                print(f"| config | T | {head} | PyTorch best | KortexDL / best | KortexDL 1/call / PyTorch 1 thr | "
                      f"speedup KortexDL 1/call | speedup PyTorch 1 thr |")
                print("|:---|---:|" + "---:|" * (len(cols) + 5))
                for config in configs:
                    for p in pts(config, op, batch):
                        v = p["variants"]
                        rate = {i: v[i]["calls_per_s"]["median"] for i in cols}
                        tids = [i for i in cols if i.startswith("torch")]
                        best = max(tids, key=lambda i: rate[i])
                        r1 = rate["kdl"] / rate[best] if "kdl" in rate else None
                        r2 = rate["kdl1"] / rate["torch1"] if "kdl1" in rate and "torch1" in rate else None
                        s1 = v["kdl1"]["speedup"]["median"] if "kdl1" in v else None
                        s2 = v["torch1"]["speedup"]["median"]
                        print(f"| {config} | {p['threads']} | " + " | ".join(f"{rate[i]:.0f}" for i in cols)
                              + f" | {best[5:].replace('N', str(cores))} thr | {fmt(r1)}x | {fmt(r2)}x | "
                                f"{fmt(s1)} | {fmt(s2)} |")

    print("\n## One caller (sequential), all timings of the point pooled: throughput and the dnnl_sgemm ceiling\n")
    heads = {"kdl": "KortexDL", "kdl1": "KortexDL 1 core", "torch1": "PyTorch 1 thr", "torchN": f"PyTorch {cores} thr"}
    print("| config | op | batch | " + " | ".join(f"{heads[i]} us/call | {heads[i]} GFLOP/s" for i in ids)
          + " | ceiling GFLOP/s (mt / st) | KortexDL of ceiling | KortexDL 1 core of ceiling | KortexDL / PyTorch best |")
    print("|:---|:---|---:|" + "---:|" * (2 * len(ids) + 4))
    for row in result["sequential"]:
        v = row["variants"]
        c = row["ceiling"]
        cells = " | ".join(f"{v[i]['us_per_call']:.1f} | {v[i]['gflops']['median']:.1f}" for i in ids)
        ceil = f"{c['mt']:.1f} / {c['st']:.1f}" if c else "n/a"
        frac = lambda i: fmt(v.get(i, {}).get("of_ceiling"), "{:.0%}")  # noqa: E731
        vs = fmt(v.get("kdl", {}).get("vs_torch_best"), "{:.2f}x")
        print(f"| {row['config']} | {row['op']} | {row['batch']} | {cells} | {ceil} | {frac('kdl')} | {frac('kdl1')} | {vs} |")

    idle = [row for row in result["sequential"] if "idle_pool" in row]
    if idle:
        print("\n## One caller beside an idle thread that owns an OpenMP team (KortexDL default budget)\n")
        print("Sequential calls from one thread while another thread, which made the same call before, sits idle "
              "(a thread pool used one call at a time). libgomp keeps every thread's team until the thread exits; "
              "with more libgomp threads than CPUs it cuts its spin-wait to <= 100 iterations, so each parallel "
              "region then wakes its team through the kernel. KortexDL therefore lets one thread at a time own "
              "the team (docs/CONCURRENCY.md): here the idle thread owns it and the caller runs on one core, so "
              "this column shows a single-threaded caller, not a throttled team.\n")
        print("| config | op | batch | alone us/call | beside an idle team us/call | slowdown |")
        print("|:---|:---|---:|---:|---:|---:|")
        for row in idle:
            ip = row["idle_pool"]
            print(f"| {row['config']} | {row['op']} | {row['batch']} | {1e6 / ip['plain_calls_per_s']['median']:.1f} | "
                  f"{1e6 / ip['calls_per_s']['median']:.1f} | {ip['slowdown']:.2f}x |")

    if result["ceiling"] is not None:
        print(f"\n## dnnl_sgemm ceiling ({result['ceiling_binary']}, ceil/ rows, before and after; "
              "median, min-max GFLOP/s)\n")
        print("| row | GFLOP/s | min-max | samples | other CPU | runq wait |")
        print("|:---|---:|---:|---:|---:|---:|")
        for key in sorted(result["ceiling"]):
            c = result["ceiling"][key]
            g = c["gflops"]
            print(f"| ceil/{key} | {g['median']:.1f} | {g['min']:.1f}-{g['max']:.1f} | {len(c['samples'])} | "
                  f"{fmt(c['other_cpu']['median'])} | {fmt(c['runq_wait']['median'], '{:.3f}')} |")
    else:
        print(f"\n(dnnl_sgemm ceiling n/a: {result['ceiling_binary']} not found or --no-ceiling; build it with "
              "`cmake --build build --target kortexdl_bench`)")

    if result["rss"]:
        print("\n## Peak RSS, threaded vs sequential run (fresh processes, same N calls, batch "
              f"{result['rss'][0]['batch']})\n")
        print("| lib | config | op | T | sequential MiB | threaded MiB | overhead | delta MiB |")
        print("|:---|:---|:---|---:|---:|---:|---:|---:|")
        for r in result["rss"]:
            print(f"| {r['lib']} | {r['config']} | {r['op']} | {r['threads']} | {r['sequential_peak_kb'] / 1024:.1f} | "
                  f"{r['threaded_peak_kb'] / 1024:.1f} | {r['overhead_percent']:+.1f}% | {r['delta_kb'] / 1024:+.1f} |")

    print("\n## Targets (issue 4)\n")
    print("| target | config | op | batch | mode | measured | goal | status | detail |")
    print("|:---|:---|:---|---:|:---|---:|---:|:---:|:---|")
    for t in result["targets"]:
        m = t["measured"]
        if m is None:
            ms = "-"
        elif "ceiling" in t["target"]:
            ms = f"{m:.0%}"
        elif "PyTorch" in t["target"]:
            ms = f"{m:.2f}x"
        else:
            ms = f"{m:.2f}"
        goal = f"{t['goal']:.0%}" if "ceiling" in t["target"] else (f"{t['goal']:.2f}x" if "PyTorch" in t["target"] or "spec" in t["target"] else f"{t['goal']:.2f}")
        op = t.get("op", t["target"].split()[1] if t["target"].startswith("sequential") else
                   ("forward" if "forward" in t["target"] else ("train" if "train" in t["target"] else "-")))
        print(f"| {t['target']} | {t['config']} | {op} | {t['batch'] if t['batch'] is not None else '-'} | "
              f"{t['mode']} | {ms} | {goal} | {status(t['met'])} | {t['detail']} |")


# ---------------------------------------------------------------------------
# Plot


def thread_axis(ax, threads):
    """x axis: the thread counts, on a log2 scale."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(threads)
    ax.set_xticklabels([str(t) for t in threads])


def finish_figure(plt, fig, axes, legend_columns, title, legend_height, path):
    """One legend for the whole figure (from the first panel), the title, and the file."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=legend_columns, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, legend_height, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"# plot written to {path}")


def plot(result, path, configs, ops, batches, threads, cores, variants, plot_batch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if plot_batch is None:
        plot_batch = 32 if 32 in batches else batches[0]
    ids = [v["id"] for v in variants]
    rows = [i for i in ("kdl1", "kdl") if i in ids]
    colors = {"forward": "tab:blue", "forward_batch": "tab:green", "train": "tab:red", "evaluate": "tab:purple"}
    torch_for = {"kdl1": "torch1", "kdl": "torchN" if "torchN" in ids else "torch1"}
    fig, axes = plt.subplots(len(rows), len(configs), figsize=(max(9.0, 4.2 * len(configs)), 3.8 * len(rows)),
                             squeeze=False, sharex=True)
    ideal = [min(t, cores) for t in threads]
    for r, vid in enumerate(rows):
        for c, config in enumerate(configs):
            ax = axes[r][c]
            ax.plot(threads, threads, color="0.8", lw=1, ls=":", label="linear (T)")
            ax.plot(threads, ideal, color="black", lw=1.2, ls="--", label=f"ideal on {cores} cores")
            if cores >= 4:
                ax.axhline(SPEC_TARGET, color="tab:orange", lw=1, ls="-.", label="spec target 2.0x")
            ax.axhline(0.95, color="0.6", lw=0.8, ls="-", label="0.95 floor")
            for op in ops:
                ps = [p for p in result["points"] if p["config"] == config and p["op"] == op and p["batch"] == plot_batch]
                if not ps:
                    continue
                ts = [p["threads"] for p in ps]
                ys = [p["variants"][vid]["speedup"]["median"] for p in ps]
                lo = [p["variants"][vid]["speedup"]["min"] for p in ps]
                hi = [p["variants"][vid]["speedup"]["max"] for p in ps]
                ax.plot(ts, ys, marker="o", color=colors[op], label=f"KortexDL {op}")
                ax.fill_between(ts, lo, hi, color=colors[op], alpha=0.12)
                tid = torch_for[vid]
                if tid in ids and op in ("forward", "train"):
                    ax.plot(ts, [p["variants"][tid]["speedup"]["median"] for p in ps], marker="x", ls="--",
                            color=colors[op], alpha=0.7, label=f"PyTorch {op} (dashed)")
            thread_axis(ax, threads)
            ax.set_ylim(0, max(max(ideal) + 0.5, 2.5))
            ax.grid(alpha=0.3)
            tthreads = torch_for[vid][5:].replace("N", str(cores))
            mode = ("KortexDL 1 core per call" if vid == "kdl1" else "KortexDL default budget") + \
                (f"; PyTorch {tthreads} thread(s)" if torch_for[vid] in ids else "")
            ax.set_title(f"{config} {'-'.join(map(str, CONFIGS[config]))}, batch {plot_batch}\n{mode}", fontsize=9)
            if c == 0:
                ax.set_ylabel("speedup (N calls: sequential / T threads)")
            if r == len(rows) - 1:
                ax.set_xlabel("Python threads T")
    finish_figure(plt, fig, axes, 5, f"KortexDL thread scaling, {result['date']}, {cores} cores", 0.07, path)

    # Companion: absolute throughput (GFLOP/s) against PyTorch, the comparison that matters on few cores.
    stem, ext = os.path.splitext(path)
    path2 = f"{stem}-gflops{ext}"
    plot_ops = [o for o in ("forward", "train") if o in ops] or ops[:1]
    fig, axes = plt.subplots(len(plot_ops), len(configs), figsize=(max(9.0, 4.2 * len(configs)), 3.4 * len(plot_ops)),
                             squeeze=False, sharex=True)
    styles = {"kdl": ("tab:red", "-", "o"), "kdl1": ("tab:orange", "-", "s"), "torch1": ("tab:blue", "--", "x"),
              "torchN": ("tab:cyan", "--", "+")}
    names = {"kdl": "KortexDL default", "kdl1": "KortexDL 1 core/call", "torch1": "PyTorch 1 thread",
             "torchN": f"PyTorch {cores} threads"}
    for r, op in enumerate(plot_ops):
        for c, config in enumerate(configs):
            ax = axes[r][c]
            ps = [p for p in result["points"] if p["config"] == config and p["op"] == op and p["batch"] == plot_batch]
            for vid in ids:
                if not ps:
                    continue
                color, ls, m = styles[vid]
                ax.plot([p["threads"] for p in ps], [p["variants"][vid]["gflops"]["median"] for p in ps], color=color,
                        ls=ls, marker=m, label=names[vid])
            thread_axis(ax, threads)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.set_title(f"{op}, {config}, batch {plot_batch}", fontsize=9)
            if c == 0:
                ax.set_ylabel("GFLOP/s, all threads together")
            if r == len(plot_ops) - 1:
                ax.set_xlabel("Python threads T")
    finish_figure(plt, fig, axes, 4, f"Throughput of T Python threads sharing one network, {result['date']}", 0.06,
                  path2)


def report_from_json(args):
    with open(args.from_json) as f:
        result = json.load(f)
    points = result["points"]
    configs = list(dict.fromkeys(p["config"] for p in points))
    ops = list(dict.fromkeys(p["op"] for p in points))
    batches = list(dict.fromkeys(p["batch"] for p in points))
    threads = sorted({p["threads"] for p in points})
    cores = result["machine"]["cores"]
    variants = result["variants"]
    print(f"# from {args.from_json}: {result['date']}, {result['command']}")
    print_report(result, configs, ops, batches, threads, cores, variants)
    if args.plot:
        plot(result, args.plot, configs, ops, batches, threads, cores, variants, args.plot_batch)
    return 0


# ---------------------------------------------------------------------------
# --overhead: the per-call cost at batch 1


def overhead(args):
    """Median cost of one forward call at batch 1 on 100-50-10, and the part
    spent inside the GIL-released region (from gil_stats)."""
    import numpy as np
    import kortexdl

    net = kortexdl.Network([100, 50, 10], seed=1)
    x2 = np.random.default_rng(0).standard_normal((1, 100)).astype(np.float32)
    flat = x2.ravel()
    variants = {
        "forward(x) 2-D": lambda: net.forward(x2),
        "forward(flat, 1)": lambda: net.forward(flat, 1),
        "forward(flat, batch_size=1)": lambda: net.forward(flat, batch_size=1),
    }
    n = args.calls
    print(f"forward on 100-50-10 at batch 1: median of {args.repeat} runs of {n} calls")
    for label, call in variants.items():
        for _ in range(1000):
            call()
        per_call, region = [], []
        for _ in range(args.repeat):
            wait_idle(args.wait_idle, args.wait_timeout)
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
    return 0


def renice_and_rerun(argv, nice):
    """Runs this script again (without --nice) in a session of its own, whose
    scheduler autogroup gets that nice value, as bench/run.sh does with
    KORTEX_BENCH_NICE: Linux shares CPU time between sessions first, so a plain
    `nice` would only rank us within our own session. Negative values need root."""
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nice":
            skip = True
            continue
        if a.startswith("--nice="):
            continue
        rest.append(a)
    script = 'echo "$0" > /proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"'
    cmd = ["setsid", "--wait", "sh", "-c", script, str(nice), sys.executable, os.path.abspath(__file__), *rest]
    return subprocess.call(cmd)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                        help="thread counts (1 is always added: it is the sequential reference)")
    parser.add_argument("--config", nargs="+", choices=[*ALL_CONFIGS, "all", "tiny"], default=["all"],
                        help="small 100-50-10, medium 784-256-128-10, large 1000-512-256-128-10 (tiny 8-4-2: smoke tests)")
    parser.add_argument("--op", nargs="+", choices=[*OPS, "all"], default=["all"],
                        help="forward | forward_batch (--chunks chunks of --batch rows per call) | train (one SGD "
                             "step, cross-entropy on integer labels) | evaluate (loss and accuracy) | all")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32, 256], help="rows per call (several allowed)")
    parser.add_argument("--chunks", type=int, default=8, help="forward_batch: chunks of --batch rows per call")
    parser.add_argument("--repeat", "--repeats", type=int, default=3, help="repeats per point (medians reported)")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="N is calibrated so that one sequential timing lasts about this long (s)")
    parser.add_argument("--modes", nargs="+", choices=["default", "one"], default=["default", "one"],
                        help="KortexDL thread modes: default budget, and/or one core per call")
    parser.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="speedup vs threads per config (and FILE-gflops.png)")
    parser.add_argument("--plot-batch", type=int, default=None, help="batch shown in the plot (default 32)")
    parser.add_argument("--compare", choices=["torch"], help="also run PyTorch (same shapes, same run)")
    parser.add_argument("--torch-as-installed", action="store_true",
                        help="do not set OPENBLAS_CORETYPE=SkylakeX for PyTorch on AVX-512 machines (Debian's "
                             "OpenBLAS 0.3.21 falls back to SSE3 kernels on CPUs it does not know)")
    parser.add_argument("--no-thread-safety", action="store_true",
                        help="do not call enable_thread_safety(True) (the spec does; reads are safe without it)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocess runs")
    parser.add_argument("--no-idle-pool", action="store_true",
                        help="skip the one-caller timing beside an idle thread that owns an OpenMP team")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the C++ dnnl_sgemm ceiling run")
    parser.add_argument("--bench-binary", default=os.path.join(REPO, "build", "bench", "kortexdl_bench"),
                        help="the C++ benchmark that measures the ceiling (default: %(default)s)")
    parser.add_argument("--ceiling-repetitions", type=int, default=3,
                        help="repetitions of each ceiling row, run before and after the Python measurements")
    parser.add_argument("--wait-idle", type=float, default=None, metavar="FRACTION",
                        help="before each point wait (up to --wait-timeout s) until the machine is less busy than "
                             "FRACTION (e.g. 0.1), for shared machines")
    parser.add_argument("--wait-timeout", type=float, default=3.0, help="longest wait for idle per point (s)")
    parser.add_argument("--nice", type=int, default=None, metavar="N",
                        help="run in a session (scheduler autogroup) of its own at this nice value, e.g. -20 "
                             "(root) on a shared machine, as bench/run.sh's KORTEX_BENCH_NICE")
    parser.add_argument("--overhead", action="store_true", help="measure the per-call cost instead")
    parser.add_argument("--from-json", metavar="FILE",
                        help="measure nothing: print the tables (and --plot) of an earlier --json run")
    parser.add_argument("--calls", type=int, default=20000, help="calls per run with --overhead")
    parser.add_argument("--_worker", choices=["kortexdl", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--_rss", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        return worker_main(args._worker, not args.no_thread_safety)
    if args._rss:
        return rss_child_main(args._rss)
    if args.overhead:
        return overhead(args)
    if args.from_json:
        return report_from_json(args)
    if args.nice is not None:
        return renice_and_rerun(argv if argv is not None else sys.argv[1:], args.nice)
    if any(t < 1 for t in args.threads) or any(b < 1 for b in args.batch) or args.repeat < 1:
        parser.error("--threads, --batch and --repeat take positive integers")
    args.threads = sorted(set(args.threads) | {1})
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
