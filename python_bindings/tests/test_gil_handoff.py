"""Taking the GIL back without a wake-up (python_bindings/src/gil_handoff.hpp).

* Two threads calling one network hand the GIL to each other by polling:
  gil_stats()["gil_handoff"] counts polls and hand-offs, and results stay
  bit-identical to sequential calls.
* KORTEX_GIL_SPIN_US sets the polling bound; 0 turns polling off; a value
  that is not a number in [0, 10000] is ignored (default 50).
* A holder that releases the GIL where the bindings cannot see it (here
  time.sleep right after a call) makes polls run out; after one that runs
  out nobody polls for 100 budgets, so the CPU they waste stays bounded.
"""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import kortexdl

pytestmark = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="polling is off on a single CPU (the holder could not run)"
)

DEFAULT_BUDGET_US = 50
COOLDOWN_BUDGETS = 100


def run_two_callers(net, x, calls_each):
    """Two threads calling forward at once; returns every output."""
    barrier = threading.Barrier(2)
    outputs = [[], []]

    def worker(i):
        barrier.wait()
        for _ in range(calls_each):
            outputs[i].append(net.forward(x))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outputs[0] + outputs[1]


def test_two_callers_hand_the_gil_over_by_polling(single_thread, rng):
    net = kortexdl.Network([100, 64, 10], seed=3)
    x = rng.standard_normal((32, 100)).astype(np.float32)
    expected = net.forward(x)
    kortexdl.reset_gil_stats()
    outputs = run_two_callers(net, x, 2000)
    handoff = kortexdl.gil_stats()["gil_handoff"]
    assert handoff["spin_budget_us"] == DEFAULT_BUDGET_US
    assert handoff["polled"] > 0, handoff
    assert 0 < handoff["handed_off"] <= handoff["polled"], handoff
    for out in outputs:
        np.testing.assert_array_equal(out, expected)
    kortexdl.reset_gil_stats()
    assert kortexdl.gil_stats()["gil_handoff"] == {"spin_budget_us": DEFAULT_BUDGET_US, "polled": 0, "handed_off": 0}


def test_one_caller_never_polls(rng):
    net = kortexdl.Network([100, 64, 10], seed=3)
    x = rng.standard_normal((32, 100)).astype(np.float32)
    kortexdl.reset_gil_stats()
    for _ in range(500):
        net.forward(x)
    assert kortexdl.gil_stats()["gil_handoff"]["polled"] == 0


CHILD = """
import threading, numpy as np, kortexdl
kortexdl.set_num_threads(1)
net = kortexdl.Network([100, 64, 10], seed=3)
x = np.ones((32, 100), np.float32)
def work():
    for _ in range(2000):
        net.forward(x)
threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
h = kortexdl.gil_stats()["gil_handoff"]
print(h["spin_budget_us"], h["polled"])
"""


@pytest.mark.parametrize(
    "value, budget",
    [("0", 0), ("20", 20), ("10000", 10000), ("", DEFAULT_BUDGET_US), ("fast", DEFAULT_BUDGET_US),
     ("-5", DEFAULT_BUDGET_US), ("20us", DEFAULT_BUDGET_US), ("10001", DEFAULT_BUDGET_US)],
)
def test_spin_budget_comes_from_the_environment(value, budget):
    env = dict(os.environ, KORTEX_GIL_SPIN_US=value)
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    reported, polled = map(int, done.stdout.split())
    assert reported == budget
    if budget == 0:
        assert polled == 0


def test_polls_that_run_out_are_rate_limited(single_thread, rng):
    """One thread sleeps right after each call (the GIL is released inside
    time.sleep, which the bindings do not see, so the next returning caller
    believes the sleeper still holds it and polls in vain); the other calls
    in a loop. Polls that run out are followed by a cooldown of 100 budgets."""
    net = kortexdl.Network([100, 64, 10], seed=3)
    x = rng.standard_normal((32, 100)).astype(np.float32)
    stop = threading.Event()

    def sleeper():
        while not stop.is_set():
            net.forward(x)
            time.sleep(0.0002)

    kortexdl.reset_gil_stats()
    thread = threading.Thread(target=sleeper)
    start = time.perf_counter()
    thread.start()
    calls = 0
    while time.perf_counter() - start < 1.0:
        net.forward(x)
        calls += 1
    stop.set()
    thread.join()
    elapsed = time.perf_counter() - start
    handoff = kortexdl.gil_stats()["gil_handoff"]
    ran_out = handoff["polled"] - handoff["handed_off"]
    cooldown = COOLDOWN_BUDGETS * DEFAULT_BUDGET_US * 1e-6
    assert ran_out <= elapsed / cooldown + 2, (handoff, calls, elapsed)
