"""Nothing is lost (docs/RELIABILITY.md, "No leak").

10**4 cycles of create / train / evaluate / fail / copy / destroy: the
process's resident memory and Python's count of allocated objects must stay
flat. A leak of one network per cycle (the smallest one here holds 212
floats) would add several MiB; a leaked Python object per cycle would add
10**4 blocks. Cycles: KORTEX_LEAK_CYCLES (default 10000).
"""

import gc
import os
import pickle
import sys
import threading

import numpy as np
import pytest

import kortexdl

CYCLES = int(os.environ.get("KORTEX_LEAK_CYCLES", "10000"))
OPTIMIZERS = ("sgd", "momentum", "adam")


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


X = np.random.default_rng(3).standard_normal((8, 8)).astype(np.float32)
Y = np.random.default_rng(4).standard_normal((8, 4)).astype(np.float32)
LABELS = np.arange(8) % 4
BAD = np.zeros((3, 7), np.float32)


def cycle(i):
    net = kortexdl.Network([8, 16, 4], seed=i, optimizer=OPTIMIZERS[i % 3],
                           output_activation="softmax" if i % 2 else "linear")
    if i % 2:
        net.train_batch(X, LABELS, "cross_entropy", 0.01)
        net.evaluate(X, LABELS, "cross_entropy")
    else:
        net.train_batch_thread_safe(X, Y, "mse", 0.01)
        net.evaluate_thread_safe(X, Y, "mse", 3)
    net.forward(X)
    net.forward_batch(X, 3)
    loss, grad = net.compute_gradients(X, Y if i % 2 == 0 else LABELS, "mse" if i % 2 == 0 else "cross_entropy")
    net.apply_gradients(grad, 0.01)
    try:  # the error path: exception objects, messages, converted arrays
        net.forward(BAD)
    except kortexdl.ShapeError:
        pass
    try:
        net.train_batch(X, Y, "mse", float("nan"))
    except ValueError:
        pass
    if i % 10 == 0:  # the copy paths
        for copy_ in (net.clone(), pickle.loads(pickle.dumps(net)), kortexdl.Network.from_bytes(net.to_bytes())):
            copy_.set_weights(net.get_weights())
            copy_.set_parameters(net.get_parameters())
    if i % 100 == 0:  # a short-lived thread: its scratch memory must go with it
        t = threading.Thread(target=net.forward, args=(X,))
        t.start()
        t.join()
    if i % 500 == 0:
        net.fit(X, Y if i % 2 == 0 else LABELS, "mse" if i % 2 == 0 else "cross_entropy", epochs=2, batch_size=4)
    del net


def test_create_train_destroy_cycles_keep_memory_flat():
    warmup = max(1000, CYCLES // 10)
    for i in range(warmup):
        cycle(i)
    gc.collect()
    rss_before = resident_bytes()
    blocks_before = sys.getallocatedblocks()
    for i in range(warmup, warmup + CYCLES):
        cycle(i)
    gc.collect()
    rss_after = resident_bytes()
    blocks_after = sys.getallocatedblocks()
    print(
        f"\n{CYCLES} create/train/destroy cycles: RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB, "
        f"Python blocks {blocks_before} -> {blocks_after}"
    )
    assert blocks_after - blocks_before < 1000, "Python objects leak"
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("RSS is not meaningful under ASan (its allocator quarantines freed memory)")
    assert rss_after - rss_before < 2 * 2**20, "resident memory grew"
