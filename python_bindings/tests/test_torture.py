"""Concurrency torture test from Python (docs/RELIABILITY.md, "Torture test").

16 Python threads share one network and mix forward, forward_batch,
evaluate, compute_gradients, train_batch and every *_thread_safe variant, while
a 17th thread saves and loads the model (save + load, to_bytes + from_bytes,
pickle, clone), for several rounds. Every call releases the GIL, so they
really overlap. Checks:

* no crash, and no exception except the documented ConcurrencyError (only
  with thread safety off: an unlocked write overlapping another call);
* no torn reads: every forward/evaluate result on a probe row, and every
  snapshot, equals the result of a whole parameter version. Python has no
  update observer, so writes are recorded instead: a thread that trains holds
  a Python lock around (train step, fingerprint of the result), so every
  version that ever existed is fingerprinted by the thread that made it,
  while reads and snapshots run concurrently with everything. (Concurrent
  writers among themselves, with every version observed, are covered by the
  C++ torture test in tests/reliability/.)
* the final parameters are finite, version == number of successful writes;
* RSS does not grow from round to round.

Sizes: KORTEX_TORTURE_ITERATIONS (calls per thread per round, default 60) and
KORTEX_TORTURE_ROUNDS (default 3).
"""

import copy
import os
import pickle
import random
import threading

import numpy as np
import pytest

import kortexdl

ITERATIONS = int(os.environ.get("KORTEX_TORTURE_ITERATIONS", "60"))
ROUNDS = max(2, int(os.environ.get("KORTEX_TORTURE_ROUNDS", "3")))
WORKERS = 16
IN, HIDDEN, OUT = 24, 48, 6
MSE = kortexdl.LossType.MSE


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Versions:
    """Fingerprints (forward bits and evaluate loss of the probe row) of every
    parameter version. record() runs with the writers' lock held."""

    def __init__(self, probe, probe_target):
        self.probe = probe
        self.probe_target = probe_target
        self.forward = set()
        self.losses = set()
        self.lock = threading.Lock()

    def record(self, net):
        out = net.forward(self.probe).tobytes()
        loss = net.evaluate(self.probe, self.probe_target, MSE).loss
        with self.lock:
            self.forward.add(out)
            self.losses.add(loss)

    def restart(self, net):
        with self.lock:
            self.forward.clear()
            self.losses.clear()
        self.record(net)

    # A reader may see a version before its writer has fingerprinted it (the
    # fingerprint is taken after the write returns), so reads are collected
    # and checked when the round is over.
    def seen_forward(self, what, out, seen):
        seen.append((what, out.tobytes()))

    def seen_loss(self, what, loss, seen):
        seen.append((what, loss))

    def torn(self, seen):
        with self.lock:
            return [what for what, value in seen
                    if value not in (self.forward if isinstance(value, bytes) else self.losses)]


@pytest.fixture
def one_thread_per_call():
    previous = kortexdl.get_num_threads()
    kortexdl.set_num_threads(1)  # deterministic forward, so fingerprints are exact
    try:
        yield
    finally:
        kortexdl.set_num_threads(previous)


def worker(net, versions, write_lock, x, t, thread_safety, seed, counters, failures, seen):
    rng = random.Random(seed)
    probe, probe_target = versions.probe, versions.probe_target
    for _ in range(ITERATIONS):
        op = rng.randrange(14)
        first = rng.randrange(24)
        try:
            if op <= 1:
                versions.seen_forward("forward", net.forward(probe), seen)
            elif op == 2:
                versions.seen_forward("forward_batch", net.forward_batch(probe, 1), seen)
            elif op == 3:
                versions.seen_forward("forward_thread_safe", net.forward_thread_safe(probe), seen)
            elif op == 4:
                versions.seen_forward("forward_batch_thread_safe", net.forward_batch_thread_safe(probe, 1), seen)
            elif op == 5:
                versions.seen_loss("evaluate", net.evaluate(probe, probe_target, MSE).loss, seen)
            elif op == 6:
                versions.seen_loss("evaluate_thread_safe", net.evaluate_thread_safe(probe, probe_target, MSE).loss, seen)
            elif op == 7:
                out = net.forward(x[first : first + 16])
                if out.shape != (16, OUT) or not np.all(np.isfinite(out)):
                    failures.append("forward: bad output")
            elif op == 8:
                if not np.all(np.isfinite(net.forward_batch(x, 7))):
                    failures.append("forward_batch: bad output")
            elif op == 9:
                if not np.isfinite(net.evaluate(x, t, MSE, 9).loss):
                    failures.append("evaluate: bad loss")
            elif op == 10:
                loss, grad = net.compute_gradients(x[first : first + 8], t[first : first + 8], MSE)
                if not (np.isfinite(loss) and np.all(np.isfinite(grad))):
                    failures.append("compute_gradients: bad result")
            else:
                method = net.train_batch if op <= 11 else net.train_batch_thread_safe
                with write_lock:  # see the module docstring
                    loss = method(x[first : first + 16], t[first : first + 16], MSE, 1e-3)
                    counters["writes"] += 1
                    versions.record(net)
                if not np.isfinite(loss):
                    failures.append("train: non-finite loss")
        except kortexdl.ConcurrencyError as e:
            if thread_safety:
                failures.append(f"ConcurrencyError with thread safety on: {e}")
            elif "enable_thread_safety" not in str(e):
                failures.append(f"ConcurrencyError without the fix in its message: {e}")
            counters["refused"] += 1
        except Exception as e:  # noqa: BLE001 - anything else is a failure
            failures.append(f"op {op}: undocumented {type(e).__name__}: {e}")
        counters["calls"] += 1


def snapshotter(net, versions, path, running, thread_safety, counters, failures, seen):
    i = 0
    while running() or i < 4:
        kind = i % 5
        i += 1
        try:
            if kind == 0:
                net.save(path, include_optimizer_state=(i % 2 == 0))
                copy_ = kortexdl.Network.load(path)
            elif kind == 1:
                copy_ = kortexdl.Network.from_bytes(net.to_bytes())
            elif kind == 2:
                copy_ = pickle.loads(pickle.dumps(net))
            elif kind == 3:
                copy_ = copy.deepcopy(net)
            else:
                copy_ = net.clone()
            versions.seen_forward(f"snapshot {kind}", copy_.forward(versions.probe), seen)
            counters["snapshots"] += 1
        except kortexdl.ConcurrencyError as e:
            if thread_safety:
                failures.append(f"snapshot: ConcurrencyError with thread safety on: {e}")
            counters["refused"] += 1
        except Exception as e:  # noqa: BLE001
            failures.append(f"snapshot {kind}: undocumented {type(e).__name__}: {e}")


@pytest.mark.parametrize("thread_safety", [True, False], ids=["thread_safety_on", "thread_safety_off"])
def test_sixteen_threads_share_one_network(one_thread_per_call, tmp_path, thread_safety):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, IN)).astype(np.float32)
    t = (0.5 * np.tanh(x[:, :OUT] - x[:, 1 : OUT + 1])).astype(np.float32)
    net = kortexdl.Network([IN, HIDDEN, HIDDEN, OUT], hidden_activation="tanh", optimizer="adam", seed=17)
    net.enable_thread_safety(thread_safety)
    versions = Versions(rng.standard_normal((1, IN)).astype(np.float32), np.full((1, OUT), 0.25, np.float32))
    write_lock = threading.Lock()
    counters = {"calls": 0, "writes": 0, "refused": 0, "snapshots": 0}  # += under the GIL: approximate but only informative
    failures = []
    rss = []
    for round_ in range(ROUNDS):
        versions.restart(net)
        writes_round = {"calls": 0, "writes": 0, "refused": 0}
        seen = [[] for _ in range(WORKERS + 1)]
        threads = [
            threading.Thread(
                target=worker,
                args=(net, versions, write_lock, x, t, thread_safety, 1000 * round_ + i, writes_round, failures,
                      seen[i]),
            )
            for i in range(WORKERS)
        ]
        for th in threads:
            th.start()
        snap = threading.Thread(
            target=snapshotter,
            args=(net, versions, tmp_path / "model.kdl", lambda: any(th.is_alive() for th in threads), thread_safety,
                  counters, failures, seen[WORKERS]),
        )
        snap.start()
        for th in threads:
            th.join()
        snap.join()
        for reads in seen:
            failures.extend(f"torn read: {what}" for what in versions.torn(reads))
        counters["checked"] = counters.get("checked", 0) + sum(len(r) for r in seen)
        for key in ("calls", "writes", "refused"):
            counters[key] += writes_round[key]
        rss.append(resident_bytes())

    assert not failures, "\n".join(failures[:20])
    assert net.version == counters["writes"]  # writes are counted under the writers' lock: exact
    assert np.all(np.isfinite(net.get_parameters()))
    assert counters["snapshots"] >= 4
    if thread_safety:
        assert counters["refused"] == 0
        assert counters["writes"] > ITERATIONS
    else:
        assert counters["writes"] > 0, "every write was refused"
    assert kortexdl.calls_in_flight() == 0
    print(
        f"\npython torture (thread safety {'on' if thread_safety else 'off'}): {WORKERS} threads + 1 snapshotter x "
        f"{ROUNDS} rounds x {ITERATIONS} calls: {counters['calls']} calls, {counters['writes']} writes, "
        f"{counters['snapshots']} snapshots, {counters['checked']} checked reads, {counters['refused']} refused; RSS MiB per round "
        + " ".join(f"{r / 2**20:.1f}" for r in rss)
    )
    # Round 1 warms up every thread's scratch and numpy's caches; later rounds
    # reuse them. (Not meaningful under ASan, whose allocator quarantines.)
    if "asan" not in os.environ.get("LD_PRELOAD", ""):
        assert rss[-1] <= rss[0] + 16 * 2**20, f"RSS grew across rounds: {rss}"
