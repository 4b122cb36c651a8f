"""The kortexdl Python API: construction, conversions, results, parameters,
data-parallel training, module functions and Ctrl-C."""

import _thread
import copy
import math
import pickle
import threading
import time

import numpy as np
import pytest

import kortexdl
from conftest import regression_data

MSE = kortexdl.LossType.MSE
CE = kortexdl.LossType.CrossEntropy
BCE = kortexdl.LossType.BinaryCrossEntropy


# ---------------------------------------------------------------------------
# Construction, properties, repr


def test_defaults_and_properties():
    net = kortexdl.Network([784, 256, 10], seed=42)
    assert net.sizes == [784, 256, 10]
    assert net.input_size == 784 and net.output_size == 10 and net.num_layers == 2
    assert net.parameter_count == 784 * 256 + 256 + 256 * 10 + 10
    assert net.seed == 42
    assert net.version == 0
    assert net.thread_safety_enabled is False
    assert net.hidden_activation == kortexdl.Activation.ReLU
    assert net.output_activation == kortexdl.Activation.Linear
    assert net.optimizer == kortexdl.Optimizer.SGD


def test_thread_safety_property_is_read_only():
    net = kortexdl.Network([4, 2])
    net.enable_thread_safety()
    assert net.thread_safety_enabled is True
    net.enable_thread_safety(False)
    assert net.thread_safety_enabled is False
    with pytest.raises(AttributeError):
        net.thread_safety_enabled = True


def test_construction_options_by_name_and_enum():
    a = kortexdl.Network([8, 16, 3], hidden_activation="tanh", output_activation="softmax", init="xavier_uniform",
                         seed=1, optimizer="adam", beta1=0.8, beta2=0.99, epsilon=1e-7, weight_decay=1e-4)
    b = kortexdl.Network([8, 16, 3], hidden_activation=kortexdl.Activation.Tanh,
                         output_activation=kortexdl.Activation.Softmax, init=kortexdl.WeightInit.XavierUniform,
                         seed=1, optimizer=kortexdl.Optimizer.Adam, beta1=0.8, beta2=0.99, epsilon=1e-7,
                         weight_decay=1e-4)
    assert a.config == b.config
    assert a.config["optimizer"] == "adam" and a.config["hidden_activation"] == "tanh"
    assert a.config["beta1"] == pytest.approx(0.8)
    np.testing.assert_array_equal(a.get_parameters(), b.get_parameters())
    m = kortexdl.Network([8, 3], optimizer="momentum", momentum=0.5, nesterov=True, seed=2)
    assert m.config["nesterov"] is True and m.config["momentum"] == pytest.approx(0.5)
    # Names are case-insensitive, as in C++.
    assert kortexdl.Network([4, 2], hidden_activation="GELU").hidden_activation == kortexdl.Activation.GELU


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        kortexdl.Network([4, 2], "relu")


def test_same_seed_same_weights_and_random_seed_reported():
    a = kortexdl.Network([10, 20, 5], seed=123)
    b = kortexdl.Network([10, 20, 5], seed=123)
    np.testing.assert_array_equal(a.get_parameters(), b.get_parameters())
    c = kortexdl.Network([10, 20, 5])
    d = kortexdl.Network([10, 20, 5], seed=c.seed)
    np.testing.assert_array_equal(c.get_parameters(), d.get_parameters())
    # Large and numpy-integer seeds.
    kortexdl.Network([3, 2], seed=2**64 - 1)
    assert kortexdl.Network([3, 2], seed=np.uint64(7)).seed == 7


def test_rebuild_from_config():
    a = kortexdl.Network([6, 5, 4], hidden_activation="sigmoid", optimizer="momentum", seed=9)
    b = kortexdl.Network(a.sizes, **a.config)
    np.testing.assert_array_equal(a.get_parameters(), b.get_parameters())


def test_repr():
    net = kortexdl.Network([784, 256, 10], output_activation="softmax", optimizer="adam")
    text = repr(net)
    assert text.startswith("Network([784, 256, 10]")
    for part in ("hidden_activation='relu'", "output_activation='softmax'", "optimizer='adam'",
                 "thread_safety=False"):
        assert part in text
    net.enable_thread_safety(True)
    assert "thread_safety=True" in repr(net)


def test_version_and_module_info():
    assert isinstance(kortexdl.__version__, str) and kortexdl.__version__.count(".") == 2
    assert kortexdl.version_info == tuple(int(p) for p in kortexdl.__version__.split("."))
    assert kortexdl.backend_name() in ("onednn", "cblas")
    assert kortexdl.Network.__module__.startswith("kortexdl")


def test_docstrings_say_the_gil_is_released():
    for method in ("forward", "forward_batch", "train_batch", "evaluate", "forward_thread_safe",
                   "forward_batch_thread_safe", "train_batch_thread_safe", "evaluate_thread_safe",
                   "train_parallel_numa", "evaluate_parallel_numa", "compute_gradients", "apply_gradients"):
        assert "Releases the GIL" in getattr(kortexdl.Network, method).__doc__, method


def test_network_version_counts_writes(rng):
    net = kortexdl.Network([4, 3], seed=0)
    x, y = regression_data(rng, 8, 4, 3)
    net.train_batch(x, y, MSE, 0.1)
    assert net.version == 1
    net.set_parameters(net.get_parameters())
    assert net.version == 2
    net.forward(x)
    net.evaluate(x, y, MSE)
    assert net.version == 2


# ---------------------------------------------------------------------------
# Input conversions


@pytest.fixture
def net_and_x(rng):
    net = kortexdl.Network([6, 8, 3], seed=4)
    x = rng.standard_normal((5, 6)).astype(np.float32)
    return net, x


def test_forward_flat_and_2d_agree(net_and_x):
    net, x = net_and_x
    out = net.forward(x)
    assert out.shape == (5, 3) and out.dtype == np.float32 and out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(net.forward(x.ravel(), 5), out)
    np.testing.assert_array_equal(net.forward(x.ravel(), batch_size=5), out)
    np.testing.assert_array_equal(net.forward(x, 5), out)
    np.testing.assert_array_equal(net.forward(x.ravel()), out)  # whole rows, batch_size omitted
    np.testing.assert_array_equal(net.forward(x.tolist()), out)  # nested lists


def test_forward_returns_a_new_array(net_and_x):
    net, x = net_and_x
    a = net.forward(x)
    b = net.forward(x)
    assert not np.shares_memory(a, b) and not np.shares_memory(a, x)
    a[:] = 0
    assert np.any(net.forward(x) != 0)


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.astype(np.float64),
        lambda x: x.astype(np.float16).astype(np.float32),  # reference for the next one
        lambda x: np.asfortranarray(x),
        lambda x: x.astype(">f4"),  # big-endian
        lambda x: np.repeat(x, 2, axis=1)[:, ::2],  # strided columns
    ],
    ids=["float64", "float16-roundtrip", "fortran", "big-endian", "strided"],
)
def test_forward_converts_like_numpy(net_and_x, convert):
    net, x = net_and_x
    converted = convert(x)
    expected = net.forward(np.ascontiguousarray(converted, dtype=np.float32))
    np.testing.assert_array_equal(net.forward(converted), expected)


def test_forward_integer_and_bool_inputs(net_and_x):
    net, _ = net_and_x
    xi = np.arange(30, dtype=np.int64).reshape(5, 6)
    np.testing.assert_array_equal(net.forward(xi), net.forward(xi.astype(np.float32)))
    xb = (xi % 2).astype(bool)
    np.testing.assert_array_equal(net.forward(xb), net.forward(xb.astype(np.float32)))


def test_strided_rows_and_read_only_input(net_and_x, rng):
    net, _ = net_and_x
    base = rng.standard_normal((10, 6)).astype(np.float32)
    every_other = base[::2]
    assert not every_other.flags.c_contiguous
    np.testing.assert_array_equal(net.forward(every_other), net.forward(every_other.copy()))
    frozen = base.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(net.forward(frozen), net.forward(base))


def test_forward_batch_chunks_equal_forward(rng, single_thread):
    net = kortexdl.Network([6, 8, 3], seed=4)
    x = rng.standard_normal((103, 6)).astype(np.float32)
    full = net.forward(x)
    for chunk in (1, 7, 50, 103, 500):
        out = net.forward_batch(x, chunk)
        assert out.shape == (103, 3)
        np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.forward_batch(x.ravel(), 10), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.forward_batch(x), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net.forward_batch_thread_safe(x, 10), net.forward_batch(x, 10))
    np.testing.assert_array_equal(net.forward_thread_safe(x), full)


@pytest.mark.parametrize("threads", [1, 2])
def test_forward_batch_in_rows_of_one_gives_each_row_alone(rng, threads):
    # batch_size=1 computes the rows together where the CPU allows: every
    # row must still be bit for bit what forward gives that row alone.
    kortexdl.set_num_threads(threads)
    try:
        net = kortexdl.Network([40, 96, 24, 5], seed=9, output_activation="softmax")
        x = rng.standard_normal((131, 40)).astype(np.float32)
        together = net.forward_batch(x, 1)
        alone = np.vstack([net.forward(x[r : r + 1]) for r in range(len(x))])
        np.testing.assert_array_equal(together, alone)
    finally:
        kortexdl.set_num_threads(0)


# ---------------------------------------------------------------------------
# Targets, training, evaluation


def test_labels_and_one_hot_give_the_same_step(rng):
    x = rng.standard_normal((16, 5)).astype(np.float32)
    labels = rng.integers(0, 4, size=16)
    one_hot = np.eye(4, dtype=np.float32)[labels]
    results = []
    for targets in (labels, labels.astype(np.int32), labels.astype(np.uint8), one_hot, one_hot.ravel(),
                    one_hot.astype(np.float64)):
        net = kortexdl.Network([5, 7, 4], output_activation="softmax", seed=3)
        loss = net.train_batch(x, targets, CE, 0.1)
        results.append((loss, net.get_parameters()))
    for loss, params in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5)
        np.testing.assert_allclose(params, results[0][1], rtol=1e-5, atol=1e-6)


def test_training_reduces_loss(rng):
    net = kortexdl.Network([10, 32, 2], seed=0, optimizer="adam")
    x, y = regression_data(rng, 256, 10, 2)
    first = net.train_batch(x, y, MSE, 0.01)
    for _ in range(50):
        last = net.train_batch(x, y, MSE, 0.01)
    assert isinstance(first, float)
    assert last < 0.5 * first


def test_binary_cross_entropy(rng):
    net = kortexdl.Network([4, 8, 1], output_activation="sigmoid", seed=1)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    for _ in range(100):
        net.train_batch(x, y, BCE, 0.5)
    e = net.evaluate(x, y, BCE)
    assert e.accuracy is not None and e.accuracy > 0.8


def test_evaluate_result_object(rng):
    net = kortexdl.Network([5, 3], output_activation="softmax", seed=2)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    labels = rng.integers(0, 3, size=40)
    e = net.evaluate(x, labels, CE)
    assert isinstance(e, kortexdl.Evaluation)
    assert e.samples == 40 and 0.0 <= e.accuracy <= 1.0 and e.loss > 0
    loss, accuracy = e
    assert (loss, accuracy) == (e.loss, e.accuracy)
    assert float(e) == e.loss
    assert repr(e).startswith("Evaluation(loss=") and "samples=40" in repr(e)
    # Chunked evaluation agrees; MSE has no accuracy.
    assert net.evaluate(x, labels, CE, 7).loss == pytest.approx(e.loss, rel=1e-5)
    assert net.evaluate_thread_safe(x, labels, "cross_entropy").loss == pytest.approx(e.loss, rel=1e-6)
    m = net.evaluate(x, np.zeros((40, 3), np.float32), MSE)
    assert m.accuracy is None
    assert list(m) == [m.loss, None]
    assert "accuracy=None" in repr(m)


def test_loss_type_by_name(rng):
    net = kortexdl.Network([3, 2], seed=0)
    x, y = regression_data(rng, 4, 3, 2)
    assert net.evaluate(x, y, "mse").loss == net.evaluate(x, y, MSE).loss
    assert net.evaluate(x, y, "MSE").loss == net.evaluate(x, y, MSE).loss


def test_every_loss_type_member_is_recognised_however_it_was_made(rng):
    # The registered members are recognised by identity; an equal member made
    # anew (LossType(int), a pickle) goes through pybind11's cast: same loss.
    net = kortexdl.Network([3, 4, 2], seed=0)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    targets = {"MSE": rng.standard_normal((6, 2)).astype(np.float32),
               "CrossEntropy": np.array([0, 1, 1, 0, 1, 0], np.int32),
               "BinaryCrossEntropy": rng.uniform(size=(6, 2)).astype(np.float32)}
    for name, member in kortexdl.LossType.__members__.items():
        anew = kortexdl.LossType(int(member))
        copied = pickle.loads(pickle.dumps(member))
        assert anew == member and anew is not member and copied is not member
        want = net.evaluate(x, targets[name], name).loss
        for same in (member, anew, copied):
            assert net.evaluate(x, targets[name], same).loss == want, (name, same)
            assert net.evaluate_thread_safe(x[:1], targets[name][:1], same).loss == \
                net.evaluate(x[:1], targets[name][:1], name).loss


def test_compute_and_apply_gradients_equal_train_batch(rng):
    x, y = regression_data(rng, 32, 6, 2)
    a = kortexdl.Network([6, 9, 2], seed=8, optimizer="momentum")
    b = kortexdl.Network([6, 9, 2], seed=8, optimizer="momentum")
    for _ in range(3):
        loss_a = a.train_batch(x, y, MSE, 0.05)
        loss_b, grad = b.compute_gradients(x, y, MSE)
        assert grad.shape == (b.parameter_count,) and grad.dtype == np.float32
        assert loss_b == pytest.approx(loss_a, rel=1e-6)
        b.apply_gradients(grad, 0.05)
    np.testing.assert_allclose(a.get_parameters(), b.get_parameters(), rtol=1e-6, atol=1e-7)
    assert b.version == 3


# ---------------------------------------------------------------------------
# Parameters


def test_weights_round_trip(rng):
    net = kortexdl.Network([5, 4, 3], seed=1)
    layers = net.get_weights()
    assert [(w.shape, b.shape) for w, b in layers] == [((5, 4), (4,)), ((4, 3), (3,))]
    x = rng.standard_normal((7, 5)).astype(np.float32)
    # y = relu(x W0 + b0) W1 + b1
    (w0, b0), (w1, b1) = layers
    expected = np.maximum(x @ w0 + b0, 0) @ w1 + b1
    np.testing.assert_allclose(net.forward(x), expected, rtol=1e-5, atol=1e-5)

    new = [(rng.standard_normal(w.shape), rng.standard_normal(b.shape)) for w, b in layers]  # float64
    net.set_weights(new)
    for (w, b), (nw, nb) in zip(net.get_weights(), new):
        np.testing.assert_array_equal(w, nw.astype(np.float32))
        np.testing.assert_array_equal(b, nb.astype(np.float32))
    flat = net.get_parameters()
    other = kortexdl.Network([5, 4, 3], seed=99)
    other.set_parameters(flat)
    np.testing.assert_array_equal(other.forward(x), net.forward(x))
    # Returned arrays are copies.
    flat[:] = 0
    assert np.any(net.get_parameters() != 0)


def test_clone_copy_and_pickle(rng):
    net = kortexdl.Network([4, 6, 2], optimizer="adam", seed=5)
    x, y = regression_data(rng, 16, 4, 2)
    net.train_batch(x, y, MSE, 0.01)
    net.enable_thread_safety(True)
    for twin in (net.clone(), copy.copy(net), copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert twin is not net
        np.testing.assert_array_equal(twin.get_parameters(), net.get_parameters())
        assert twin.config == net.config
        assert twin.sizes == net.sizes
        # Optimizer state travels too: the next steps match exactly.
        a, b = net.clone(), twin
        for _ in range(2):
            assert a.train_batch(x, y, MSE, 0.01) == b.train_batch(x, y, MSE, 0.01)
        np.testing.assert_array_equal(a.get_parameters(), b.get_parameters())
    assert net.clone().thread_safety_enabled is False


# ---------------------------------------------------------------------------
# Data-parallel training


def test_train_parallel_numa_two_nodes_equals_plain_training(rng):
    x, y = regression_data(rng, 512, 12, 3)
    plain = kortexdl.Network([12, 16, 3], seed=21)
    numa = kortexdl.Network([12, 16, 3], seed=21)
    for _epoch in range(3):
        for start in range(0, 512, 64):
            plain.train_batch(x[start:start + 64], y[start:start + 64], MSE, 0.05)
    loss = numa.train_parallel_numa(x, y, MSE, 0.05, batch_size=64, epochs=3, numa_nodes=2)
    assert isinstance(loss, float)
    np.testing.assert_allclose(numa.get_parameters(), plain.get_parameters(), rtol=1e-4, atol=1e-5)
    assert numa.version == plain.version == 24


def test_train_parallel_numa_history(rng):
    x, y = regression_data(rng, 300, 8, 2)
    net = kortexdl.Network([8, 16, 2], seed=2)
    h = net.train_parallel_numa(x, y, MSE, 0.05, 64, 4, shuffle=True, seed=3, numa_nodes=2, history=True)
    assert isinstance(h, kortexdl.TrainingHistory)
    assert len(h.epoch_losses) == 4 and h.loss == h.epoch_losses[-1] and float(h) == h.loss
    assert h.epoch_losses[-1] < h.epoch_losses[0]
    assert h.steps == 4 * 5 and h.nodes == 2
    assert h.seconds > 0 and 0 <= h.reduce_seconds <= h.seconds
    assert len(h.worker_cpus) == 2 and all(isinstance(c, list) for c in h.worker_cpus)
    assert "TrainingHistory(loss=" in repr(h)
    # Same shuffle seed => same run.
    a = kortexdl.Network([8, 16, 2], seed=2)
    b = kortexdl.Network([8, 16, 2], seed=2)
    a.train_parallel_numa(x, y, MSE, 0.05, 64, 2, shuffle=True, seed=11)
    b.train_parallel_numa(x, y, MSE, 0.05, 64, 2, shuffle=True, seed=11)
    np.testing.assert_array_equal(a.get_parameters(), b.get_parameters())


def test_evaluate_parallel_numa_equals_evaluate(rng):
    net = kortexdl.Network([8, 5], output_activation="softmax", seed=1)
    x = rng.standard_normal((250, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=250)
    plain = net.evaluate(x, labels, CE)
    for nodes in (0, 1, 2):
        e = net.evaluate_parallel_numa(x, labels, CE, numa_nodes=nodes)
        assert e.samples == 250
        assert e.loss == pytest.approx(plain.loss, rel=1e-5)
        assert e.accuracy == pytest.approx(plain.accuracy)
    assert net.evaluate_parallel_numa(x, labels, CE, 16, numa_nodes=2).loss == pytest.approx(plain.loss, rel=1e-5)


# ---------------------------------------------------------------------------
# Module functions


def test_numa_topology():
    topo = kortexdl.numa_topology()
    assert set(topo) == {"nodes", "libnuma_available", "virtual_nodes", "pinning_allowed", "note"}
    assert len(topo["nodes"]) >= 1
    for node in topo["nodes"]:
        assert isinstance(node["id"], int) and node["cpus"] and all(isinstance(c, int) for c in node["cpus"])
    assert isinstance(topo["note"], str)
    split = kortexdl.numa_topology(2)
    assert len(split["nodes"]) == 2 and split["virtual_nodes"] is True


def test_set_and_get_num_threads():
    previous = kortexdl.get_num_threads()
    try:
        kortexdl.set_num_threads(3)
        assert kortexdl.get_num_threads() == 3
        kortexdl.set_num_threads(np.int64(1))
        assert kortexdl.get_num_threads() == 1
        kortexdl.set_num_threads(0)  # the default
        assert kortexdl.get_num_threads() >= 1
        with pytest.raises(ValueError, match="num_threads"):
            kortexdl.set_num_threads(100000)
        with pytest.raises(ValueError, match="n"):
            kortexdl.set_num_threads(-1)
        with pytest.raises(TypeError):
            kortexdl.set_num_threads(2.5)
    finally:
        kortexdl.set_num_threads(previous)
    assert kortexdl.calls_in_flight() == 0


def test_exception_hierarchy():
    assert issubclass(kortexdl.ShapeError, kortexdl.InvalidArgumentError)
    assert issubclass(kortexdl.InvalidArgumentError, ValueError)
    assert issubclass(kortexdl.ShapeError, kortexdl.KortexError)
    assert issubclass(kortexdl.ConcurrencyError, RuntimeError)
    assert issubclass(kortexdl.InternalError, RuntimeError)
    assert issubclass(kortexdl.NumericalError, FloatingPointError)
    assert issubclass(kortexdl.ResourceLimitError, MemoryError)
    assert issubclass(kortexdl.FormatError, ValueError)
    assert issubclass(kortexdl.IoError, OSError)
    for cls in (kortexdl.ConcurrencyError, kortexdl.NumericalError, kortexdl.IoError):
        assert issubclass(cls, kortexdl.KortexError)
        assert str(cls("message")) == "message"


def test_numerical_error_keeps_parameters():
    net = kortexdl.Network([2, 2], seed=0)
    x = np.full((4, 2), 3e38, np.float32)  # outputs overflow float32
    before = net.get_parameters()
    with pytest.raises(kortexdl.NumericalError) as info:
        net.train_batch(x, np.zeros((4, 2), np.float32), MSE, 1.0)
    assert isinstance(info.value, FloatingPointError)
    np.testing.assert_array_equal(net.get_parameters(), before)
    assert net.version == 0


# ---------------------------------------------------------------------------
# Ctrl-C

# The interrupt comes 0.1 s in and the bindings look for it every 50 ms, but
# on a loaded machine the threads involved can wait for a CPU; the bound
# still tells an interrupted run from one that runs on for minutes.
INTERRUPT_BOUND_SECONDS = 10.0


def test_keyboard_interrupt_stops_train_parallel_numa(rng, ctrl_c):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are only handled on the main thread")
    net = kortexdl.Network([64, 256, 256, 8], seed=1)
    x, y = regression_data(rng, 4096, 64, 8)
    y *= 0.1

    def interrupt():
        time.sleep(0.1)
        _thread.interrupt_main()

    helper = threading.Thread(target=interrupt)
    started = time.perf_counter()
    helper.start()
    with pytest.raises(KeyboardInterrupt):
        # Thousands of epochs: minutes if it were not interrupted.
        net.train_parallel_numa(x, y, MSE, 1e-3, batch_size=64, epochs=10_000)
    elapsed = time.perf_counter() - started
    helper.join()
    assert elapsed < INTERRUPT_BOUND_SECONDS, f"KeyboardInterrupt took {elapsed:.2f} s"
    # The network holds the parameters of the last whole step, and works.
    assert net.version > 0
    assert np.all(np.isfinite(net.get_parameters()))
    assert np.all(np.isfinite(net.forward(x[:4])))
    assert math.isfinite(net.train_batch(x[:64], y[:64], MSE, 1e-3))
    assert math.isfinite(net.train_parallel_numa(x[:256], y[:256], MSE, 1e-3, batch_size=64))


def test_keyboard_interrupt_with_thread_safety_and_nodes(rng, ctrl_c):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are only handled on the main thread")
    net = kortexdl.Network([64, 128, 8], seed=1)
    net.enable_thread_safety(True)
    x, y = regression_data(rng, 2048, 64, 8)
    timer = threading.Timer(0.1, _thread.interrupt_main)
    started = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        net.train_parallel_numa(x, y, MSE, 1e-3, batch_size=64, epochs=100_000, numa_nodes=2)
    assert time.perf_counter() - started < INTERRUPT_BOUND_SECONDS
    timer.join()
    assert np.all(np.isfinite(net.get_parameters()))
    # Nothing is left locked: a concurrent reader and a writer both proceed.
    assert np.all(np.isfinite(net.forward_thread_safe(x[:4])))
    assert math.isfinite(net.train_batch_thread_safe(x[:64], y[:64], MSE, 1e-3))


# ---------------------------------------------------------------------------
# Type stubs


def _stub_tree():
    import ast
    import os

    path = os.path.join(os.path.dirname(kortexdl._core.__file__), "_core.pyi")
    if not os.path.exists(path):  # an installed wheel always ships it; a stray build may not
        pytest.skip("_core.pyi not next to the module")
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read())


def test_stubs_cover_the_module():
    import ast

    tree = _stub_tree()
    top = set()
    network_members = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            top.add(node.name)
            if isinstance(node, ast.ClassDef) and node.name == "Network":
                network_members = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    public = {name for name in dir(kortexdl._core) if not name.startswith("_")} | {"__version__"}
    assert public <= top, f"missing from _core.pyi: {sorted(public - top)}"
    members = {name for name in vars(kortexdl.Network) if not name.startswith("_")}
    assert members <= network_members, f"Network members missing from _core.pyi: {sorted(members - network_members)}"
    assert set(kortexdl.__all__) <= top


# ---------------------------------------------------------------------------
# fit, predict, predict_classes, score


@pytest.fixture
def classification(rng):
    x = rng.standard_normal((600, 10)).astype(np.float32)
    labels = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)).astype(np.int64)
    return x, labels


def test_fit_learns_and_reports(classification):
    x, labels = classification
    net = kortexdl.Network([10, 32, 3], output_activation="softmax", optimizer="adam", seed=1)
    records = []
    h = net.fit(x, labels, CE, epochs=6, batch_size=32, learning_rate=0.01, validation_split=0.2,
                on_epoch_end=records.append)
    assert isinstance(h, kortexdl.History) and len(h) == 6 and len(h.epochs) == 6
    assert [r.epoch for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(r, kortexdl.EpochRecord) for r in records)
    assert h.loss == [r.loss for r in h.epochs] and h.loss[-1] < h.loss[0]
    last = h.epochs[-1]
    assert last.validation_loss is not None and 0 <= last.validation_accuracy <= 1 and last.accuracy > 0.6
    assert h.steps == 6 * 15 and not h.stopped_early and 1 <= h.best_epoch <= 6
    assert "EpochRecord(epoch=6" in repr(last) and repr(h).startswith("History(")
    assert net.score(x, labels) > 0.7
    assert net.version == h.steps


def test_fit_validation_data_schedule_and_early_stopping(classification):
    x, labels = classification
    net = kortexdl.Network([10, 16, 3], output_activation="softmax", seed=2)
    h = net.fit(x[:500], labels[:500], "cross_entropy", epochs=3, learning_rate=0.05,
                validation_data=(x[500:], labels[500:]), schedule="step", step_epochs=1, gamma=0.5)
    assert [r.learning_rate for r in h.epochs] == pytest.approx([0.05, 0.025, 0.0125])
    assert all(r.validation_loss is not None for r in h.epochs)
    # A learning rate this small never improves by min_delta: patience runs out.
    h = net.fit(x, labels, CE, epochs=50, learning_rate=1e-7, early_stopping_patience=2, min_delta=1.0)
    assert h.stopped_early and len(h.epochs) == 3 and h.best_epoch == 1


def test_fit_callbacks_stop_and_raise(classification):
    x, labels = classification
    net = kortexdl.Network([10, 8, 3], seed=3)
    h = net.fit(x, labels, CE, epochs=100, on_epoch_end=lambda r: r.epoch < 2)
    assert h.stopped_early and len(h.epochs) == 2
    calls = []

    def on_batch(epoch, step, loss):
        calls.append((epoch, step, loss))
        return step < 4

    h = net.fit(x, labels, CE, epochs=100, on_batch_end=on_batch)
    assert h.stopped_early and h.steps == 4 and [c[:2] for c in calls] == [(1, 1), (1, 2), (1, 3), (1, 4)]

    def boom(record):
        raise ZeroDivisionError("from the callback")

    version = net.version
    with pytest.raises(ZeroDivisionError, match="from the callback"):
        net.fit(x, labels, CE, epochs=100, on_epoch_end=boom)
    assert net.version == version + 19  # one epoch of 600 / 32 rounded up, then stopped
    with pytest.raises(TypeError, match="on_epoch_end"):
        net.fit(x, labels, CE, on_epoch_end=3)


def test_fit_callbacks_may_use_the_network(classification):
    x, labels = classification
    net = kortexdl.Network([10, 8, 3], seed=3)
    seen = []
    net.fit(x, labels, CE, epochs=2, on_epoch_end=lambda r: seen.append(net.evaluate(x, labels, CE).loss))
    assert len(seen) == 2 and all(math.isfinite(v) for v in seen)


def test_fit_errors_name_the_argument(classification):
    x, labels = classification
    net = kortexdl.Network([10, 3], seed=0)
    for kwargs, argument in [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"),
                             ({"learning_rate": -1.0}, "learning_rate"), ({"validation_split": 1.5}, "validation_split"),
                             ({"schedule": "linear"}, "schedule"), ({"validation_data": (x[:, :3], labels)},
                                                                    "validation_data[0]")]:
        with pytest.raises(ValueError, match=argument.replace("[", r"\[")):
            net.fit(x, labels, CE, **kwargs)
    assert net.version == 0


def test_fit_keyboard_interrupt(classification, ctrl_c):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are only handled on the main thread")
    x, labels = classification
    net = kortexdl.Network([10, 64, 3], seed=4)
    timer = threading.Timer(0.1, _thread.interrupt_main)
    started = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        net.fit(x, labels, CE, epochs=1_000_000, batch_size=8)
    assert time.perf_counter() - started < INTERRUPT_BOUND_SECONDS
    timer.join()
    assert net.version > 0 and np.all(np.isfinite(net.get_parameters()))


def test_predict_predict_classes_and_score(classification):
    x, labels = classification
    net = kortexdl.Network([10, 16, 3], seed=5)
    out = net.forward(x)
    np.testing.assert_allclose(net.predict(x, 64), out, rtol=1e-5, atol=1e-6)
    assert net.predict(x).shape == (600, 3) and net.predict(x).dtype == np.float32
    classes = net.predict_classes(x)
    assert classes.dtype == np.int32 and classes.shape == (600,)
    np.testing.assert_array_equal(classes, np.argmax(net.predict(x), axis=1))
    assert net.score(x, labels) == pytest.approx(np.mean(classes == labels))
    with pytest.raises(kortexdl.ShapeError, match="labels"):
        net.score(x, labels[:-1])
    with pytest.raises(TypeError, match="labels"):
        net.score(x, labels.astype(np.float32))
    binary = kortexdl.Network([10, 1], output_activation="sigmoid", seed=1)
    assert set(np.unique(binary.predict_classes(x))) <= {0, 1}


# ---------------------------------------------------------------------------
# Model files and datasets


def test_save_load_round_trip(tmp_path, rng):
    net = kortexdl.Network([6, 9, 3], hidden_activation="tanh", output_activation="softmax", optimizer="adam",
                           seed=12)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=20)
    net.train_batch(x, labels, CE, 0.01)
    path = tmp_path / "model.kdl"
    net.save(path)  # os.PathLike
    loaded = kortexdl.Network.load(str(path))
    assert loaded.sizes == net.sizes and loaded.config == net.config
    np.testing.assert_array_equal(loaded.get_parameters(), net.get_parameters())
    # The optimizer state came along: the next steps are identical.
    assert loaded.train_batch(x, labels, CE, 0.01) == net.train_batch(x, labels, CE, 0.01)
    np.testing.assert_array_equal(loaded.get_parameters(), net.get_parameters())
    data = net.to_bytes()
    assert isinstance(data, bytes)
    for buffer in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(kortexdl.Network.from_bytes(buffer).get_parameters(), net.get_parameters())
    assert len(net.to_bytes(include_optimizer_state=False)) < len(data)


def test_model_file_errors(tmp_path):
    net = kortexdl.Network([4, 2], seed=0)
    data = net.to_bytes()
    with pytest.raises(kortexdl.FormatError) as info:
        kortexdl.Network.from_bytes(data[:-5])
    assert isinstance(info.value, ValueError)
    corrupted = bytearray(data)
    corrupted[40] ^= 0xFF
    with pytest.raises(kortexdl.FormatError):
        kortexdl.Network.from_bytes(bytes(corrupted))
    with pytest.raises(kortexdl.FormatError):
        kortexdl.Network.from_bytes(b"not a model at all")
    with pytest.raises(kortexdl.IoError) as info:
        kortexdl.Network.load(tmp_path / "missing.kdl")
    assert isinstance(info.value, OSError)
    with pytest.raises(kortexdl.IoError):
        net.save(tmp_path / "no" / "such" / "dir" / "m.kdl")
    with pytest.raises(TypeError, match="path"):
        net.save(3)
    with pytest.raises(TypeError, match="data"):
        kortexdl.Network.from_bytes("a string")


FASHION = "/usr/share/datasets/fashion-mnist"


def test_fashion_mnist_dataset():
    import os

    if not os.path.exists(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    x, y = kortexdl.datasets.read_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"),
                                      os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
    assert x.shape == (10000, 784) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (10000,) and y.dtype == np.int32 and set(np.unique(y)) == set(range(10))


def test_read_csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n1.5,2,0\n3,4.25,1\n")
    x, y = kortexdl.datasets.read_csv(path)
    np.testing.assert_array_equal(x, np.array([[1.5, 2], [3, 4.25]], np.float32))
    np.testing.assert_array_equal(y, [0, 1])
    x, t = kortexdl.datasets.read_csv(path, label_column=0, regression=True)
    assert x.shape == (2, 2) and t.shape == (2, 1) and t.dtype == np.float32
    with pytest.raises(kortexdl.IoError):
        kortexdl.datasets.read_csv(tmp_path / "missing.csv")
