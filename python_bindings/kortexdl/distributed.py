"""Data-parallel training across processes and machines, over MPI.

Every process (rank) runs the same script on its own shard of the data;
``mpirun`` starts them::

    mpirun -np 2 python train.py                     # 2 processes, this machine
    mpirun -np 8 --hostfile hosts python train.py    # 8 processes over several machines

and in ``train.py``::

    import kortexdl
    from kortexdl import distributed as dist

    dist.init()                                  # collective; works without mpirun too (1 process)
    X, y = load_data()                           # every rank loads (or memory-maps) the data
    X_mine, y_mine = dist.shard(X, y, seed=0)    # this rank's rows, disjoint across ranks
    net = kortexdl.Network([784, 256, 128, 10], output_activation="softmax", seed=0)
    history = dist.train_distributed(net, X_mine, y_mine, "cross_entropy", epochs=5,
                                     batch_size=64, learning_rate=0.05,
                                     checkpoint_path="model.kdl")   # written by rank 0 only
    if dist.rank() == 0:
        print(history.loss)

Each step, every rank computes the gradient of its batch_size rows (inside
the process, over its NUMA nodes like train_parallel_numa), then one
MPI_Allreduce sums the one contiguous gradient buffer across ranks and every
rank applies the same update. The step's gradient is the mean over all ranks'
rows of the step (each rank scales its part by 1 / rows-of-the-step-over-all-
ranks), so the effective batch is world_size() x batch_size and K steps on W
ranks equal K single-process steps on the combined batches, up to float
rounding. docs/distributed.md covers learning-rate scaling, failures and
performance.

Works when mpi4py (or the program) initialised MPI first, and without any
MPI launcher as a world of one process.
"""

import atexit as _atexit
import os as _os

import numpy as _np

from . import _core

_d = _core._distributed

__all__ = [
    "DistributedHistory",
    "allreduce_sum",
    "barrier",
    "description",
    "evaluate",
    "finalize",
    "init",
    "is_initialized",
    "load",
    "mpi_available",
    "parameter_hash",
    "rank",
    "save",
    "shard",
    "synchronize",
    "train_distributed",
    "world_size",
]

_atexit_registered = False


def mpi_available():
    """Whether this kortexdl was built with MPI (KORTEX_WITH_MPI). Without it
    every process is a world of one, and running under mpirun with more
    processes is refused at init()."""
    return bool(_d.mpi_available())


def init(timeout=None, comm=None):
    """Joins the process group. Collective: every rank calls it. Idempotent.

    Initialises MPI (MPI_THREAD_SERIALIZED) when the process was started by an
    MPI launcher and nobody initialised MPI yet, and finalises it at exit; when
    mpi4py or the program already initialised MPI, uses it and leaves its
    finalisation to them. Started without a launcher, it is a world of one
    process (no MPI involved).

    timeout: seconds any collective may take before this process prints which
        one hung and exits with status 70, so a dead or stalled peer ends the
        job instead of hanging it (default: KORTEX_DISTRIBUTED_TIMEOUT, else
        300; 0 disables). It must exceed the longest time one rank can spend
        between two steps when the others already wait (e.g. rank 0 writing a
        checkpoint or evaluating).
    comm: an mpi4py communicator to train over instead of MPI.COMM_WORLD
        (it is duplicated).
    """
    global _atexit_registered
    handle = None
    if comm is not None:
        if not hasattr(comm, "py2f"):
            raise TypeError(f"comm: expected an mpi4py communicator, got {type(comm).__name__}")
        handle = comm.py2f()
    _d.init(timeout, handle)
    if not _atexit_registered:
        # Before the interpreter tears down (the C++ exit handler is the
        # fallback): MPI_Finalize while Python is still whole.
        _atexit.register(finalize)
        _atexit_registered = True


def is_initialized():
    return bool(_d.initialized())


def rank():
    """This process's rank, 0 .. world_size() - 1 (calls init() if needed)."""
    _ensure_init()
    return int(_d.rank())


def world_size():
    """The number of processes training together (calls init() if needed)."""
    _ensure_init()
    return int(_d.world_size())


def barrier():
    """Waits until every rank got here (collective; GIL released)."""
    _ensure_init()
    _d.barrier()


def description():
    """e.g. 'Open MPI v4.1.4, rank 0 of 2 on host1'."""
    _ensure_init()
    return str(_d.description())


def finalize():
    """Leaves the process group; finalises MPI if init() initialised it.
    Called at exit automatically; safe to call twice."""
    _d.finalize()


def _ensure_init():
    if not _d.initialized():
        init()


def shard(inputs, targets=None, rank=None, world_size=None, *, seed=0, shuffle=True):
    """This rank's rows of a dataset: ``(inputs[idx], targets[idx])``.

    The rows are put in a seeded order (the library's shuffle, so the same on
    every rank and every run; shuffle=False keeps them in order) and cut into
    world_size contiguous parts whose sizes differ by at most one. The parts are
    disjoint and cover every row. rank / world_size default to this process's.
    Works on any numpy-indexable arrays; returns C-contiguous copies.
    """
    if rank is None:
        rank = globals()["rank"]()
    if world_size is None:
        world_size = globals()["world_size"]()
    rows = len(inputs)
    if targets is not None and len(targets) != rows:
        raise ValueError(f"targets: expected {rows} rows like inputs, got {len(targets)}")
    indices = _d.shard_indices(rows, rank, world_size, seed if shuffle else None)
    part = _np.ascontiguousarray(_np.asarray(inputs)[indices])
    if targets is None:
        return part
    return part, _np.ascontiguousarray(_np.asarray(targets)[indices])


class DistributedHistory:
    """What train_distributed() returns: the fit() History (``.history``; its
    attributes are reachable directly: ``.loss``, ``.epochs``, ``.steps`` ...)
    with the run's distribution facts: world_size, rank, global_rows, seconds,
    allreduce_seconds (time inside cross-process allreduces), allreduces,
    checkpoints_written (by this rank)."""

    def __init__(self, history, info):
        self.history = history
        self.world_size = info["world_size"]
        self.rank = info["rank"]
        self.global_rows = info["global_rows"]
        self.seconds = info["seconds"]
        self.allreduce_seconds = info["allreduce_seconds"]
        self.allreduces = info["allreduces"]
        self.checkpoints_written = info["checkpoints_written"]

    def __getattr__(self, name):
        return getattr(self.__dict__["history"], name)

    def __len__(self):
        return len(self.history)

    def __repr__(self):
        return (
            f"DistributedHistory(rank={self.rank}, world_size={self.world_size}, "
            f"global_rows={self.global_rows}, seconds={self.seconds:.3g}, "
            f"allreduce_seconds={self.allreduce_seconds:.3g}, history={self.history!r})"
        )


def train_distributed(
    network,
    inputs,
    targets,
    loss_type,
    *,
    epochs=10,
    batch_size=32,
    learning_rate=1e-3,
    schedule="constant",
    step_epochs=10,
    gamma=0.1,
    min_learning_rate=0.0,
    shuffle=True,
    seed=None,
    validation_data=None,
    validation_split=0.0,
    early_stopping_patience=0,
    min_delta=0.0,
    restore_best=True,
    numa_nodes=1,
    on_epoch_end=None,
    checkpoint_path=None,
    checkpoint_every=1,
    include_optimizer_state=True,
    save_on_all_ranks=False,
):
    """Network.fit() over every rank. Collective: every rank calls it with the
    same settings and its own rows (see shard()).

    Starts by checking that every rank has the same architecture, parameter
    count, optimizer and settings (a mismatch raises ValueError on EVERY rank,
    naming what differs) and copying rank 0's parameters and optimizer state
    to every rank. batch_size is per rank: a step trains on world_size() x
    batch_size rows. Losses, accuracy, validation (each rank's own
    validation_data / validation_split rows, summed) and early stopping are
    over all ranks, so every rank decides the same. numa_nodes splits each
    rank's part of a step across its NUMA nodes as train_parallel_numa does.

    on_epoch_end(record) runs on every rank that passes one (rank 0 only is
    fine); returning False, raising, or Ctrl-C on any rank stops every rank
    after the same step. checkpoint_path: rank 0 writes the model there
    (atomically: temporary file + rename) every checkpoint_every epochs and
    at the end; save_on_all_ranks makes rank k > 0 write path + ".rank<k>".

    Returns a DistributedHistory. Releases the GIL for the whole run (it is
    re-acquired for callbacks).
    """
    _ensure_init()
    history, info = _d.train_distributed(
        network,
        inputs,
        targets,
        loss_type,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        schedule=schedule,
        step_epochs=step_epochs,
        gamma=gamma,
        min_learning_rate=min_learning_rate,
        shuffle=shuffle,
        seed=seed,
        validation_data=validation_data,
        validation_split=validation_split,
        early_stopping_patience=early_stopping_patience,
        min_delta=min_delta,
        restore_best=restore_best,
        numa_nodes=numa_nodes,
        on_epoch_end=on_epoch_end,
        checkpoint_path=None if checkpoint_path is None else _os.fspath(checkpoint_path),
        checkpoint_every=checkpoint_every,
        include_optimizer_state=include_optimizer_state,
        save_on_all_ranks=save_on_all_ranks,
    )
    return DistributedHistory(history, info)


def evaluate(network, inputs, targets, loss_type, batch_size=None):
    """Network.evaluate() over every rank's rows (collective): the mean loss
    and accuracy of all of them, the same on every rank."""
    _ensure_init()
    return _d.evaluate(network, inputs, targets, loss_type, batch_size)


def save(network, path, *, all_ranks=False, include_optimizer_state=True):
    """Writes the model on rank 0 only (every rank with all_ranks=True, rank
    k > 0 to path + ".rank<k>"); atomic. Not collective. Returns whether this
    rank wrote."""
    _ensure_init()
    return bool(_d.save(network, path, all_ranks, include_optimizer_state))


def load(path):
    """Reads a model file written by save() / a checkpoint (any rank may)."""
    return _d.load(path)


def synchronize(network):
    """Collective: checks every rank's network matches (ValueError on every
    rank otherwise) and copies rank 0's parameters and optimizer state to
    all. train_distributed() does this itself."""
    _ensure_init()
    _d.synchronize(network)


def parameter_hash(network):
    """A 64-bit hash of the parameter bytes (equal on every rank after
    distributed training)."""
    return int(_d.parameter_hash(network))


def allreduce_sum(values):
    """The element-wise sum of `values` over every rank, as a new float64
    array (collective; for small metrics, not for training)."""
    _ensure_init()
    array = _np.array(values, dtype=_np.float64, copy=True, order="C")
    _d.allreduce_sum(array)
    return array
