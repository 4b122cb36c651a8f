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
    "calls_in_flight",
    "get_num_threads",
    "gil_stats",
    "numa_topology",
    "reset_gil_stats",
    "set_num_threads",
    "version_info",
]
