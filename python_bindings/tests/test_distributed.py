"""kortexdl.distributed: training across processes over MPI.

The in-process tests run in the pytest process itself (a world of one, no
mpirun). The others start this file as a worker under
``mpirun --oversubscribe --allow-run-as-root -np N`` (``python
test_distributed.py --worker MODE DIR``) and check what every rank reported:

* equivalence: after K steps, 2 and 3 ranks hold the parameters of
  single-process training on the combined batches (rtol 1e-4, atol 1e-6), with
  the same parameter hash on every rank;
* mpi4py: MPI initialised by mpi4py first (and a communicator passed in);
* mismatched architectures: a clear ValueError on every rank, no hang;
* a rank killed (SIGKILL) or stalled (SIGSTOP) mid-training: the job ends
  non-zero within the bound and the model rank 0 saved loads;
* a callback raising on one rank stops every rank after the same epoch.

Skipped when mpirun is missing or kortexdl was built without MPI.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import kortexdl
from kortexdl import distributed as dist

MPIRUN = shutil.which("mpirun")
needs_mpi = pytest.mark.skipif(
    MPIRUN is None or not dist.mpi_available(), reason="needs mpirun and a kortexdl built with MPI"
)

IN, HIDDEN, OUT = 12, 16, 4
RTOL, ATOL = 1e-4, 1e-6
FAILURE_BOUND = 25.0  # seconds from launch until the job has ended


def make_data(rows, seed=7):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, IN)).astype(np.float32)
    labels = (np.abs(x @ np.arange(1, IN + 1, dtype=np.float32)).astype(np.int64) % OUT).astype(np.int32)
    return x, labels


def make_net(seed=100, optimizer="sgd", sizes=(IN, HIDDEN, OUT)):
    return kortexdl.Network(list(sizes), output_activation="softmax", optimizer=optimizer, seed=seed)


def run_mpi(ranks, mode, directory, timeout_seconds=30, extra_env=None):
    """Runs this file as a worker on `ranks` processes; returns (process, seconds, reports)."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(kortexdl.__file__)))
    env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
    env.update(
        {
            "KORTEX_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "KORTEX_DISTRIBUTED_TIMEOUT": str(timeout_seconds),
        }
    )
    env.update(extra_env or {})
    command = [
        MPIRUN, "--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", str(ranks),
        sys.executable, os.path.abspath(__file__), "--worker", mode, str(directory),
    ]
    start = time.monotonic()
    process = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    seconds = time.monotonic() - start
    reports = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("report-"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                reports.append(json.load(f))
    return process, seconds, sorted(reports, key=lambda r: r["rank"])


def show(process):
    return f"exit {process.returncode}\n--- stdout\n{process.stdout}\n--- stderr\n{process.stderr}"


def combined_batches_reference(world, rows_per_rank, batch, epochs, lr, optimizer):
    """Single-process training where step s trains on every rank's rows of step s, in rank order."""
    x, labels = make_data(rows_per_rank * world)
    net = make_net(seed=100, optimizer=optimizer)
    steps = (rows_per_rank + batch - 1) // batch
    for _ in range(epochs):
        for s in range(steps):
            parts = [slice(r * rows_per_rank + s * batch, r * rows_per_rank + min((s + 1) * batch, rows_per_rank))
                     for r in range(world)]
            xb = np.concatenate([x[p] for p in parts])
            yb = np.concatenate([labels[p] for p in parts])
            net.train_batch(xb, yb, kortexdl.LossType.CrossEntropy, lr)
    return net.get_parameters()


# ---- in this process: a world of one ----------------------------------------------


def test_world_of_one_without_mpirun():
    dist.init()
    assert dist.is_initialized()
    assert dist.world_size() == 1
    assert dist.rank() == 0
    assert "rank 0 of 1" in dist.description()


def test_world_of_one_equals_plain_fit():
    x, labels = make_data(60)
    plain = make_net(seed=3, optimizer="adam")
    plain.fit(x, labels, "cross_entropy", epochs=2, batch_size=8, learning_rate=0.01, seed=5)
    spread = make_net(seed=3, optimizer="adam")
    history = dist.train_distributed(spread, x, labels, "cross_entropy", epochs=2, batch_size=8,
                                     learning_rate=0.01, seed=5)
    assert np.array_equal(plain.get_parameters(), spread.get_parameters())
    assert history.world_size == 1 and history.global_rows == 60
    assert len(history) == 2 and history.steps == 16
    assert history.loss == history.history.loss


def test_shard_is_deterministic_disjoint_and_complete():
    x = np.arange(103 * 2, dtype=np.float32).reshape(103, 2)
    y = np.arange(103)
    for world in (1, 2, 3, 5):
        seen = []
        for r in range(world):
            xs, ys = dist.shard(x, y, r, world, seed=42)
            xs2, _ = dist.shard(x, y, r, world, seed=42)
            assert np.array_equal(xs, xs2)
            assert np.array_equal(xs[:, 0] / 2, ys)  # rows stay paired
            assert len(ys) in (103 // world, 103 // world + 1)
            seen.extend(ys.tolist())
        assert sorted(seen) == list(range(103))
    assert not np.array_equal(dist.shard(x, y, 0, 2, seed=1)[1], dist.shard(x, y, 0, 2, seed=2)[1])
    assert dist.shard(x, y, 1, 3, shuffle=False)[1].tolist() == list(range(35, 69))
    assert dist.shard(x, rank=0, world_size=1).shape == (103, 2)
    with pytest.raises(ValueError, match="rank"):
        dist.shard(x, y, 3, 3)
    with pytest.raises(ValueError, match="targets"):
        dist.shard(x, y[:5], 0, 2)


def test_save_on_rank_zero_and_load(tmp_path):
    net = make_net(seed=9)
    path = tmp_path / "model.kdl"
    assert dist.save(net, path) is True  # rank 0 of a world of one
    loaded = dist.load(path)
    assert np.array_equal(loaded.get_parameters(), net.get_parameters())
    assert dist.parameter_hash(loaded) == dist.parameter_hash(net)


def test_checkpoints_and_evaluate(tmp_path):
    x, labels = make_data(40)
    net = make_net(seed=2)
    path = tmp_path / "ckpt.kdl"
    history = dist.train_distributed(net, x, labels, "cross_entropy", epochs=3, batch_size=10,
                                     learning_rate=0.1, checkpoint_path=path, checkpoint_every=2)
    assert history.checkpoints_written == 2  # after epoch 2, and the final parameters
    assert np.array_equal(dist.load(path).get_parameters(), net.get_parameters())
    evaluation = dist.evaluate(net, x, labels, "cross_entropy")
    assert evaluation.samples == 40
    assert evaluation.loss == pytest.approx(net.evaluate(x, labels, "cross_entropy").loss, rel=1e-6)
    assert dist.allreduce_sum([1.5, 2.0]).tolist() == [1.5, 2.0]


def test_argument_errors():
    x, labels = make_data(20)
    with pytest.raises(ValueError):
        dist.train_distributed(make_net(), x, labels, "cross_entropy", epochs=0)
    with pytest.raises(ValueError, match="checkpoint_every"):
        dist.train_distributed(make_net(), x, labels, "cross_entropy", epochs=1, checkpoint_path="x.kdl",
                               checkpoint_every=0)
    with pytest.raises(TypeError, match="on_epoch_end"):
        dist.train_distributed(make_net(), x, labels, "cross_entropy", on_epoch_end=3)
    with pytest.raises(TypeError, match="comm"):
        dist.init(comm="world")


# ---- under mpirun ------------------------------------------------------------------


@needs_mpi
@pytest.mark.parametrize("world", [2, 3])
def test_equivalent_to_single_process_on_combined_batches(world, tmp_path):
    process, seconds, reports = run_mpi(world, "equivalence", tmp_path)
    assert process.returncode == 0, show(process)
    assert [r["rank"] for r in reports] == list(range(world)), show(process)
    assert all(r["world_size"] == world for r in reports)
    assert len({r["hash"] for r in reports}) == 1, "parameter hashes differ across ranks"
    assert len({r["loss"] for r in reports}) == 1, "epoch losses differ across ranks"
    got = np.load(tmp_path / "params.npy")
    want = combined_batches_reference(world, rows_per_rank=40, batch=8, epochs=2, lr=0.1, optimizer="momentum")
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@needs_mpi
def test_mpi_initialised_by_mpi4py(tmp_path):
    pytest.importorskip("mpi4py")
    process, _, reports = run_mpi(2, "mpi4py", tmp_path)
    assert process.returncode == 0, show(process)
    assert [(r["rank"], r["mpi4py_rank"]) for r in reports] == [(0, 0), (1, 1)], show(process)
    assert all(not r["owns_mpi"] for r in reports)
    assert all(r["after"] == 2 for r in reports)  # mpi4py still works after training
    assert reports[0]["hash"] == reports[1]["hash"]


@needs_mpi
def test_mismatched_architectures_fail_on_every_rank(tmp_path):
    process, seconds, reports = run_mpi(3, "mismatch", tmp_path)
    assert process.returncode != 0, show(process)
    assert seconds < FAILURE_BOUND, show(process)
    assert [r["rank"] for r in reports] == [0, 1, 2], show(process)
    for r in reports:
        assert r["error"] == "InvalidArgumentError", r
        assert "different networks" in r["message"]
        assert "12-16-4" in r["message"] and "12-32-4" in r["message"]


@needs_mpi
def test_callback_raising_on_one_rank_stops_every_rank(tmp_path):
    process, _, reports = run_mpi(2, "callback", tmp_path)
    assert process.returncode != 0, show(process)  # rank 1 re-raises its exception
    assert "RuntimeError: rank 1 callback failed" in process.stderr, show(process)
    assert [r["rank"] for r in reports] == [0], show(process)
    assert reports[0]["epochs"] == 2 and reports[0]["stopped_early"]


@needs_mpi
@pytest.mark.parametrize("mode", ["kill", "stall"])
def test_a_failed_rank_ends_the_job_and_the_saved_model_loads(mode, tmp_path):
    process, seconds, _ = run_mpi(3, mode, tmp_path, timeout_seconds=5)
    assert process.returncode != 0, show(process)
    assert seconds < FAILURE_BOUND, show(process)
    output = process.stdout + process.stderr
    assert f"rank 2 simulating a failure ({mode})" in output, show(process)
    assert "training finished" not in output
    if mode == "kill":
        assert "exited on signal 9" in output, show(process)
    else:
        assert "did not complete within 5 s" in output, show(process)
    loaded = dist.load(tmp_path / "model.kdl")
    assert loaded.sizes == [IN, HIDDEN, OUT]
    assert loaded.parameter_count == make_net().parameter_count


# ---- the worker (run by mpirun) --------------------------------------------------


def report(directory, **values):
    """One file per rank (ranks' stdout lines may interleave)."""
    with open(os.path.join(directory, f"report-{values['rank']}.json"), "w", encoding="utf-8") as f:
        json.dump(values, f)


def worker(mode, directory):
    if mode == "mpi4py":
        from mpi4py import MPI  # initialises MPI before kortexdl does

        dist.init(comm=MPI.COMM_WORLD)
    else:
        dist.init()
    rank, world = dist.rank(), dist.world_size()

    if mode == "equivalence":
        x, labels = make_data(40 * world)
        xs, ys = dist.shard(x, labels, shuffle=False)  # contiguous, 40 rows each
        net = make_net(seed=100 + rank, optimizer="momentum")  # rank 0's parameters must win
        history = dist.train_distributed(net, xs, ys, "cross_entropy", epochs=2, batch_size=8,
                                         learning_rate=0.1, shuffle=False)
        if rank == 0:
            np.save(os.path.join(directory, "params.npy"), net.get_parameters())
        report(directory, rank=rank, world_size=history.world_size, hash=dist.parameter_hash(net), loss=history.loss[-1])
    elif mode == "mpi4py":
        from mpi4py import MPI

        x, labels = make_data(40 * world)
        xs, ys = dist.shard(x, labels, seed=1)
        net = make_net(seed=rank)
        dist.train_distributed(net, xs, ys, "cross_entropy", epochs=1, batch_size=8, learning_rate=0.1)
        report(directory, rank=rank, mpi4py_rank=MPI.COMM_WORLD.Get_rank(), owns_mpi=bool(dist._d.owns_mpi()),
               after=MPI.COMM_WORLD.allreduce(1), hash=dist.parameter_hash(net))
    elif mode == "mismatch":
        x, labels = make_data(32)
        sizes = (IN, 32, OUT) if rank == world - 1 else (IN, HIDDEN, OUT)
        try:
            dist.train_distributed(make_net(sizes=sizes), x, labels, "cross_entropy", epochs=1, batch_size=8)
        except ValueError as error:
            report(directory, rank=rank, error=type(error).__name__, message=str(error))
            raise
    elif mode == "callback":
        x, labels = make_data(64)

        def on_epoch_end(record):
            if rank == 1 and record.epoch == 2:
                raise RuntimeError("rank 1 callback failed")

        history = dist.train_distributed(make_net(), x, labels, "cross_entropy", epochs=5, batch_size=16,
                                         on_epoch_end=on_epoch_end)
        report(directory, rank=rank, epochs=len(history), stopped_early=history.stopped_early)
    elif mode in ("kill", "stall"):
        x, labels = make_data(256, seed=rank)

        def on_epoch_end(record):
            if rank == world - 1 and record.epoch == 3:
                print(f"rank {rank} simulating a failure ({mode})", flush=True)
                os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGSTOP)

        dist.train_distributed(make_net(), x, labels, "cross_entropy", epochs=100000, batch_size=32,
                               learning_rate=0.01, on_epoch_end=on_epoch_end,
                               checkpoint_path=os.path.join(directory, "model.kdl"))
        print(f"rank {rank}: training finished, which it must not", flush=True)
    else:
        raise SystemExit(f"unknown worker mode {mode}")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    worker(sys.argv[2], sys.argv[3])
