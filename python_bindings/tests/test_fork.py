"""A child forked after the parent trained (multiprocessing's default start
method on Linux) must compute, not hang: GNU OpenMP is not fork-safe, and the
thread that owned the parent's OpenMP team would wait forever in the child
for pool threads the child does not have."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp
    import os
    import numpy as np
    import kortexdl

    net = kortexdl.Network([784, 256, 128, 10], seed=3)
    x = np.random.default_rng(0).random((512, 784), dtype=np.float32)
    y = np.random.default_rng(1).random((512, 10), dtype=np.float32)
    net.train_batch(x, y, kortexdl.LossType.MSE, 1e-3)  # the parent's team exists now

    def child(queue):
        queue.put(float(net.train_batch(x, y, kortexdl.LossType.MSE, 1e-3)))

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=child, args=(queue,))
    p.start()
    loss = queue.get(timeout=60)
    p.join(60)
    assert p.exitcode == 0, p.exitcode
    assert np.isfinite(loss), loss
    print("child loss", loss)
    print("parent loss", net.train_batch(x, y, kortexdl.LossType.MSE, 1e-3))
    """
)


def test_forked_child_trains_after_the_parent_did():
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180,
                       env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "child loss" in p.stdout and "parent loss" in p.stdout
