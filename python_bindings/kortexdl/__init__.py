"""KortexDL: fully-connected networks on the CPU, built for concurrency.

Every compute method of :class:`Network` releases the GIL for the whole
computation, so Python threads sharing one network run in parallel::

    import numpy as np
    import kortexdl

    net = kortexdl.Network([784, 256, 10], output_activation="softmax", seed=0)
    net.enable_thread_safety(True)          # for concurrent training
    x = np.random.rand(64, 784).astype(np.float32)
    y = np.random.randint(0, 10, size=64)
    loss = net.train_batch(x, y, kortexdl.LossType.CrossEntropy, 0.01)
    probs = net.forward(x)                  # (64, 10) float32

See docs/python.md for the threading model, errors and kortexdl.gil_stats().
"""

import os as _os


def _short_openmp_spin():
    """GNU OpenMP worker threads spin for up to 300000 iterations after every
    parallel region by default. When the cores are shared (other Python
    threads, other processes) a spinning worker burns the time slice the
    thread it waits for needs: a 32-row forward on 784-256-128-10 with a
    2-thread team fell from ~12000 to ~80 calls/s on a 2-core machine with two
    busy processes. A purely passive policy avoids that but pays a futex wake
    for every barrier (~6000 calls/s even on an idle machine). A short spin
    (GOMP_SPINCOUNT=1000) measured best in both cases (~11000 idle, ~5000
    busy). libgomp reads its settings when it is loaded, i.e. while ._core is
    imported, so the variable is set for that import only; a setting of the
    user's own (OMP_WAIT_POLICY or GOMP_SPINCOUNT) is left alone, as is a
    libgomp that another module loaded first."""
    if "OMP_WAIT_POLICY" in _os.environ or "GOMP_SPINCOUNT" in _os.environ:
        return False
    _os.environ["GOMP_SPINCOUNT"] = "1000"
    return True


_set_spin_count = _short_openmp_spin()
try:
    from ._core import (
        Activation,
        ConcurrencyError,
        Evaluation,
        FormatError,
        InternalError,
        InvalidArgumentError,
        IoError,
        KortexError,
        LossType,
        Network,
        NumericalError,
        Optimizer,
        ResourceLimitError,
        ShapeError,
        TrainingHistory,
        EpochRecord,
        History,
        WeightInit,
        __version__,
        backend_name,
        calls_in_flight,
        get_num_threads,
        gil_stats,
        numa_topology,
        reset_gil_stats,
        set_num_threads,
        version_info,
    )
finally:
    if _set_spin_count:
        del _os.environ["GOMP_SPINCOUNT"]
    del _set_spin_count

from . import datasets

from . import distributed  # noqa: E402  (kortexdl.distributed: training across processes over MPI)

__all__ = [
    "Activation",
    "ConcurrencyError",
    "Evaluation",
    "FormatError",
    "InternalError",
    "InvalidArgumentError",
    "IoError",
    "KortexError",
    "LossType",
    "Network",
    "NumericalError",
    "Optimizer",
    "ResourceLimitError",
    "ShapeError",
    "TrainingHistory",
    "EpochRecord",
    "History",
    "WeightInit",
    "__version__",
    "backend_name",
    "datasets",
    "calls_in_flight",
    "get_num_threads",
    "gil_stats",
    "numa_topology",
    "reset_gil_stats",
    "set_num_threads",
    "version_info",
]
