"""Property-based robustness (docs/RELIABILITY.md, "Python properties").

Hypothesis throws arbitrary arguments at every public method and function:
arrays of any dtype (floats of every width, integers, bools, complex, strings,
objects), any shape (0-D to 3-D, empty, one row, transposed, strided,
Fortran-ordered, zero-stride broadcast), values including NaN, +-Inf, the
largest floats and float64 values that overflow float32, and batch sizes,
learning rates, counts and names of every kind (negative, zero, huge, 2**64
and beyond, floats, bools, None, strings). Each call must either work or raise
one of the documented exceptions (docs/python.md, "Errors"):

    TypeError, ValueError (InvalidArgumentError, ShapeError, FormatError),
    FloatingPointError (NumericalError), MemoryError (ResourceLimitError)

and afterwards the process is alive, a call that raised changed nothing
(parameters and version), the parameters are finite, nothing is left "in
flight", and the network still computes a finite forward pass.

Examples per test: KORTEX_HYPOTHESIS_EXAMPLES (default 60, derandomized so
CI runs are reproducible). A long run:
    KORTEX_HYPOTHESIS_EXAMPLES=5000 KORTEX_HYPOTHESIS_RANDOM=1 \\
        .venv/bin/python -m pytest python_bindings/tests/test_properties.py
"""

import copy
import os
import pickle

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import kortexdl  # noqa: E402

EXAMPLES = int(os.environ.get("KORTEX_HYPOTHESIS_EXAMPLES", "60"))
settings.register_profile(
    "kortex",
    max_examples=EXAMPLES,
    deadline=None,  # timings on a shared 2-core CI machine are noise
    derandomize=os.environ.get("KORTEX_HYPOTHESIS_RANDOM") != "1",
    database=None,  # no .hypothesis/ directory in the source tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
settings.load_profile("kortex")

# Every exception a call may raise for bad input (docs/python.md, "Errors").
DOCUMENTED = (TypeError, ValueError, FloatingPointError, MemoryError)

# Counts every example run, so the figures in docs/RELIABILITY.md can be checked.
CALLS = {"examples": 0, "raised": 0}

# ---- strategies ------------------------------------------------------------------

SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4028235e38, -3.4028235e38, 1e-45, 1e300, -1e300, 1e39]
HUGE_INTS = [2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**100, 10**6 * 10**6]

numeric_dtypes = st.sampled_from(
    [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_]
)
odd_dtypes = st.sampled_from([np.complex64, np.dtype("U3"), np.dtype("datetime64[s]"), np.dtype("O")])


def floats_for(dtype):
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=64),
        st.sampled_from(SPECIAL_FLOATS),
        st.floats(-3, 3),
    )


@st.composite
def arrays(draw, max_side=7):
    """Any array-like argument."""
    kind = draw(st.integers(0, 9))
    if kind == 0:  # not an array at all
        return draw(
            st.one_of(
                st.none(),
                st.text(max_size=3),
                st.integers(-3, 3),
                st.floats(allow_nan=True),
                st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=8),
                st.lists(st.lists(st.integers(-3, 3), min_size=0, max_size=5), max_size=4),
                st.just(object()),
                st.just({"a": 1}),
            )
        )
    if kind == 1:  # odd dtypes
        dtype = draw(odd_dtypes)
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=4))
        if dtype == np.dtype("O"):
            return np.empty(shape, dtype=object)
        return np.zeros(shape, dtype=dtype)
    if kind == 2:  # a zero-stride view with an absurd number of rows, no memory behind it
        cols = draw(st.integers(1, 6))
        rows = draw(st.sampled_from([2**20, 2**40, 2**50]))
        return np.broadcast_to(np.zeros(cols, np.float32), (rows, cols))
    dtype = draw(numeric_dtypes)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
    if np.issubdtype(dtype, np.floating):
        with np.errstate(over="ignore", invalid="ignore"):
            a = draw(hnp.arrays(np.float64, shape, elements=floats_for(dtype))).astype(dtype)
    else:
        a = draw(hnp.arrays(dtype, shape))
    layout = draw(st.integers(0, 4))
    if layout == 1 and a.ndim >= 2:
        a = a.T
    elif layout == 2 and a.ndim >= 1:
        a = a[::2]
    elif layout == 3:
        a = np.asfortranarray(a)
    elif layout == 4 and a.ndim >= 1:
        a = a[::-1]
    return a


@st.composite
def good_batch(draw, net, targets_kind="values"):
    """A well-formed batch (so calls get past the shape checks and compute),
    with values that may still be NaN, Inf or huge."""
    rows = draw(st.integers(1, 6))
    x = draw(hnp.arrays(np.float64, (rows, net.input_size), elements=floats_for(np.float64)))
    with np.errstate(over="ignore", invalid="ignore"):
        x = x.astype(draw(st.sampled_from([np.float32, np.float64])))
    if targets_kind == "labels":
        y = draw(hnp.arrays(np.int64, rows, elements=st.integers(-2, net.output_size + 1)))
    else:
        y = draw(hnp.arrays(np.float64, (rows, net.output_size), elements=floats_for(np.float64)))
    return x, y


counts = st.one_of(
    st.none(),
    st.integers(-3, 9),
    st.sampled_from(HUGE_INTS),
    st.sampled_from([-(2**63), -(2**64), 2.0, 1.5, True, "3", np.int64(2), np.uint64(2**63), np.float32(2)]),
)
rates = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.01, 1e-3, 0.0, -0.1, 1e30, 1e39, 5e-324]),
    st.sampled_from([None, "0.1", True, np.float64(0.05), [0.1]]),
)
losses = st.one_of(
    st.sampled_from(list(kortexdl.LossType.__members__.values())),
    st.sampled_from(["mse", "cross_entropy", "crossentropy", "bce", "binary_cross_entropy", "MSE", "", "nope"]),
    st.sampled_from([None, 0, 1.5, b"mse"]),
)
small_epochs = st.one_of(st.integers(-2, 2), st.sampled_from([None, 1.0, "1", True]))

NET_CONFIGS = [
    ([4, 5, 3], dict(hidden_activation="relu", output_activation="linear", optimizer="sgd")),
    ([4, 6, 3], dict(hidden_activation="tanh", output_activation="softmax", optimizer="adam")),
    ([4, 3, 2, 3], dict(hidden_activation="gelu", output_activation="sigmoid", optimizer="momentum")),
    ([4, 3], dict(output_activation="linear", optimizer="adam", weight_decay=0.01)),
]
nets = st.sampled_from(range(len(NET_CONFIGS))).map(
    lambda i: kortexdl.Network(NET_CONFIGS[i][0], seed=i + 1, **NET_CONFIGS[i][1])
)

PROBE = np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 4)


# ---- the invariant ---------------------------------------------------------------


def call_checked(net, fn, *args, **kwargs):
    """Runs fn; checks the contract; returns (result, exception)."""
    CALLS["examples"] += 1
    before_params = net.get_parameters().copy() if net is not None else None
    before_version = net.version if net is not None else None
    result, error = None, None
    try:
        with np.errstate(all="ignore"):
            result = fn(*args, **kwargs)
    except DOCUMENTED as e:
        error = e
        CALLS["raised"] += 1
    except BaseException as e:  # noqa: BLE001 - anything else is the finding
        pytest.fail(f"undocumented exception {type(e).__module__}.{type(e).__name__}: {e}")
    assert kortexdl.calls_in_flight() == 0
    if net is not None:
        params = net.get_parameters()
        assert np.all(np.isfinite(params)), "a call left non-finite parameters"
        if error is not None:
            assert net.version == before_version, f"a call that raised {error!r} changed the version"
            assert np.array_equal(params.view(np.uint32), before_params.view(np.uint32)), (
                f"a call that raised {error!r} changed the parameters"
            )
        out = net.forward(PROBE)
        assert out.shape == (1, net.output_size) and np.all(np.isfinite(out)), "the network is no longer usable"
    return result, error


# ---- inference ---------------------------------------------------------------------

FORWARDS = ["forward", "forward_batch", "forward_thread_safe", "forward_batch_thread_safe", "predict"]


@pytest.mark.parametrize("method", FORWARDS)
@given(net=nets, inputs=arrays(), batch_size=counts)
def test_forward_any_input(method, net, inputs, batch_size):
    result, error = call_checked(net, getattr(net, method), inputs, batch_size)
    if error is None:
        assert isinstance(result, np.ndarray) and result.dtype == np.float32
        assert result.ndim == 2 and result.shape[1] == net.output_size


@pytest.mark.parametrize("method", FORWARDS)
@given(data=st.data(), net=nets, batch_size=st.one_of(st.none(), st.integers(1, 8), st.sampled_from(HUGE_INTS)))
def test_forward_good_shapes_any_values(method, data, net, batch_size):
    x, _ = data.draw(good_batch(net))
    if method in ("forward", "forward_thread_safe") and batch_size is not None:
        batch_size = x.shape[0]
    result, error = call_checked(net, getattr(net, method), x, batch_size)
    if error is None:
        assert result.shape == (x.shape[0], net.output_size)
        if np.all(np.isfinite(x)) and np.max(np.abs(x)) < 1e6:
            assert np.all(np.isfinite(result))


@given(net=nets, inputs=arrays(), batch_size=counts)
def test_predict_classes_any_input(net, inputs, batch_size):
    result, error = call_checked(net, net.predict_classes, inputs, batch_size)
    if error is None:
        assert result.ndim == 1 and result.dtype == np.int32
        assert np.all((result >= 0) & (result < max(2, net.output_size)))


# ---- training and evaluation ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["train_batch", "train_batch_thread_safe"])
@given(net=nets, inputs=arrays(), targets=arrays(), loss=losses, lr=rates, batch_size=counts)
def test_train_any_arguments(method, net, inputs, targets, loss, lr, batch_size):
    result, error = call_checked(net, getattr(net, method), inputs, targets, loss, lr, batch_size)
    if error is None:
        assert isinstance(result, float) and np.isfinite(result)


@pytest.mark.parametrize("method", ["train_batch", "train_batch_thread_safe", "compute_gradients"])
@given(data=st.data(), net=nets, loss=losses, lr=rates, kind=st.sampled_from(["values", "labels"]))
def test_train_good_shapes_any_values(method, data, net, loss, lr, kind):
    x, y = data.draw(good_batch(net, kind))
    fn = getattr(net, method)
    args = (x, y, loss) if method == "compute_gradients" else (x, y, loss, lr)
    result, error = call_checked(net, fn, *args)
    if error is None and method == "compute_gradients":
        value, grad = result
        assert grad.shape == (net.parameter_count,)


@pytest.mark.parametrize("method", ["evaluate", "evaluate_thread_safe", "evaluate_parallel_numa"])
@given(data=st.data(), net=nets, loss=losses, batch_size=counts, good=st.booleans())
def test_evaluate_any_arguments(method, data, net, loss, batch_size, good):
    if good:
        x, y = data.draw(good_batch(net, data.draw(st.sampled_from(["values", "labels"]))))
    else:
        x, y = data.draw(arrays()), data.draw(arrays())
    result, error = call_checked(net, getattr(net, method), x, y, loss, batch_size)
    if error is None:
        assert result.samples >= 1


@given(net=nets, grad=arrays(), lr=rates, good=st.booleans(), data=st.data())
def test_apply_gradients_any_arguments(net, grad, lr, good, data):
    if good:
        grad = data.draw(hnp.arrays(np.float64, net.parameter_count, elements=floats_for(np.float64)))
    call_checked(net, net.apply_gradients, grad, lr)


@given(
    data=st.data(),
    net=nets,
    loss=losses,
    lr=rates,
    batch_size=counts,
    epochs=small_epochs,
    numa_nodes=st.one_of(st.integers(-1, 3), st.sampled_from(HUGE_INTS)),
    shuffle=st.sampled_from([True, False, None, 1]),
)
def test_train_parallel_numa_any_arguments(data, net, loss, lr, batch_size, epochs, numa_nodes, shuffle):
    x, y = data.draw(good_batch(net, data.draw(st.sampled_from(["values", "labels"]))))
    kwargs = {"numa_nodes": numa_nodes, "shuffle": shuffle}
    call_checked(net, net.train_parallel_numa, x, y, loss, lr, batch_size, epochs, **kwargs)


@given(
    data=st.data(),
    net=nets,
    loss=losses,
    epochs=small_epochs,
    batch_size=counts,
    lr=rates,
    schedule=st.sampled_from(["constant", "step", "cosine", "nope", None]),
    validation_split=st.sampled_from([0.0, 0.3, 0.99, 1.0, -0.1, float("nan"), "0.1"]),
    patience=st.one_of(st.integers(-1, 2), st.sampled_from(HUGE_INTS)),
    numa_nodes=st.sampled_from([1, 2, 0, -1, 2**40]),
)
def test_fit_any_arguments(data, net, loss, epochs, batch_size, lr, schedule, validation_split, patience, numa_nodes):
    x, y = data.draw(good_batch(net, data.draw(st.sampled_from(["values", "labels"]))))
    kwargs = dict(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        schedule=schedule,
        validation_split=validation_split,
        early_stopping_patience=patience,
        numa_nodes=numa_nodes,
    )
    call_checked(net, net.fit, x, y, loss, **kwargs)


@given(net=nets, inputs=arrays(), labels=arrays(), batch_size=counts)
def test_score_any_arguments(net, inputs, labels, batch_size):
    result, error = call_checked(net, net.score, inputs, labels, batch_size)
    if error is None:
        assert 0.0 <= result <= 1.0


# ---- parameters, copies, pickling --------------------------------------------------------------


@given(net=nets, values=arrays(max_side=40), good=st.booleans(), data=st.data())
def test_set_parameters_any_values(net, values, good, data):
    if good:
        values = data.draw(hnp.arrays(np.float64, net.parameter_count, elements=floats_for(np.float64)))
    call_checked(net, net.set_parameters, values)


@given(net=nets, data=st.data())
def test_set_weights_any_values(net, data):
    layers = net.get_weights()
    mode = data.draw(st.integers(0, 3))
    if mode == 0:
        weights = data.draw(st.one_of(st.none(), st.text(max_size=2), st.lists(arrays(), max_size=3)))
    else:
        weights = []
        for w, b in layers:
            if mode == 1:
                w = data.draw(hnp.arrays(np.float64, w.shape, elements=floats_for(np.float64)))
            elif mode == 2:
                w = data.draw(arrays())
            weights.append((w, data.draw(st.one_of(st.just(b), arrays()))))
    call_checked(net, net.set_weights, weights)
    # Reading them back always works.
    assert len(call_checked(net, net.get_weights)[0]) == len(layers)


@given(net=nets, flag=st.sampled_from([True, False, 0, 1, None, "yes", 2.0, np.bool_(True)]))
def test_thread_safety_flag_any_value(net, flag):
    _, error = call_checked(net, net.enable_thread_safety, flag)
    if error is None:
        assert net.thread_safety_enabled == bool(flag)


@given(net=nets, state=st.one_of(arrays(), st.tuples(st.integers(0, 2), arrays()), st.just(())))
def test_setstate_garbage(net, state):
    fresh = kortexdl.Network.__new__(kortexdl.Network)
    _, error = call_checked(None, fresh.__setstate__, state)
    # The original still works and round-trips through every copy path.
    for clone in (pickle.loads(pickle.dumps(net)), copy.copy(net), copy.deepcopy(net), net.clone()):
        assert np.array_equal(clone.get_parameters(), net.get_parameters())
        assert np.array_equal(clone.forward(PROBE), net.forward(PROBE))


# ---- model files and data files ---------------------------------------------------------------------

# File calls may also report what the OS refused (docs/python.md: IoError is an OSError).
DOCUMENTED_IO = DOCUMENTED + (OSError,)


def call_io(fn, *args, **kwargs):
    CALLS["examples"] += 1
    try:
        return fn(*args, **kwargs), None
    except DOCUMENTED_IO as e:
        CALLS["raised"] += 1
        return None, e
    except BaseException as e:  # noqa: BLE001
        pytest.fail(f"undocumented exception {type(e).__module__}.{type(e).__name__}: {e}")


@st.composite
def model_bytes(draw):
    """Valid model files, then mutated: bytes flipped, cut, spliced, appended."""
    i = draw(st.integers(0, len(NET_CONFIGS) - 1))
    data = bytearray(kortexdl.Network(NET_CONFIGS[i][0], seed=i, **NET_CONFIGS[i][1]).to_bytes(draw(st.booleans())))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 3))
        if op == 0 and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif op == 1:
            data = data[: draw(st.integers(0, len(data)))]
        elif op == 2:
            data += draw(st.binary(max_size=16))
        elif op == 3 and len(data) >= 8:
            at = draw(st.integers(0, len(data) - 8))
            data[at : at + 8] = draw(st.sampled_from([b"\xff" * 8, b"\x00" * 8, (2**40).to_bytes(8, "little")]))
    return bytes(data)


@given(data=st.one_of(model_bytes(), st.binary(max_size=300), st.sampled_from([None, "KORTEXDL", 3, memoryview(b"x")])))
def test_from_bytes_any_input(data):
    net, error = call_io(kortexdl.Network.from_bytes, data)
    if error is None:
        assert np.all(np.isfinite(net.get_parameters()))
        assert net.from_bytes(net.to_bytes()).to_bytes() == net.to_bytes()
        assert np.all(np.isfinite(net.forward(np.zeros((1, net.input_size), np.float32))))


@given(data=st.one_of(model_bytes(), st.binary(max_size=200)))
def test_load_any_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("load") / "model.kdl"
    path.write_bytes(data)
    net, error = call_io(kortexdl.Network.load, path)
    if error is None:
        assert np.all(np.isfinite(net.get_parameters()))


@given(
    net=nets,
    where=st.sampled_from(["file", "missing_dir", "directory", "bytes", "int", "none"]),
    state=st.sampled_from([True, False, 1, None, "yes"]),
)
def test_save_any_path(tmp_path_factory, net, where, state):
    base = tmp_path_factory.mktemp("save")
    path = {
        "file": base / "m.kdl",
        "missing_dir": base / "nope" / "m.kdl",
        "directory": base,
        "bytes": bytes(base / "b.kdl"),
        "int": 3,
        "none": None,
    }[where]
    _, error = call_io(net.save, path, state)
    if error is None:
        assert np.array_equal(kortexdl.Network.load(path).get_parameters(), net.get_parameters())
    assert np.all(np.isfinite(net.forward(PROBE)))


@given(
    text=st.one_of(
        st.text(alphabet="0123456789.,-+eE \n\r\tnaifNA", max_size=200),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    ),
    label_column=st.one_of(st.integers(-4, 4), st.sampled_from([2**31, -(2**31) - 1, 2**70, None, "1", 1.0])),
    regression=st.sampled_from([True, False, None, 1]),
)
def test_read_csv_any_file(tmp_path_factory, text, label_column, regression):
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_bytes(text.encode("latin-1", errors="replace"))
    result, error = call_io(kortexdl.datasets.read_csv, path, label_column, regression)
    if error is None:
        x, y = result
        assert x.dtype == np.float32 and x.ndim == 2 and np.all(np.isfinite(x)) and len(y) == len(x)


@given(images=st.binary(max_size=120), labels=st.binary(max_size=40), header=st.integers(0, 2))
def test_read_idx_any_files(tmp_path_factory, images, labels, header):
    base = tmp_path_factory.mktemp("idx")
    if header:  # a plausible header, so the body checks get exercised too
        images = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + images
        labels = bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + labels
    (base / "i").write_bytes(images)
    (base / "l").write_bytes(labels)
    result, error = call_io(kortexdl.datasets.read_idx, base / "i", base / "l")
    if error is None:
        x, y = result
        assert x.shape[0] == y.shape[0] and np.all((x >= 0) & (x <= 1))


# ---- construction and module functions --------------------------------------------------------------

size_values = st.one_of(st.integers(1, 9), st.sampled_from([0, -1] + HUGE_INTS), st.sampled_from([1.0, "3", None]))


@given(
    sizes=st.one_of(st.lists(size_values, min_size=0, max_size=5), st.none(), st.integers(), st.text(max_size=3)),
    hidden=st.sampled_from(["relu", "tanh", "sigmoid", "gelu", "linear", "softmax", "nope", None, 3]),
    output=st.sampled_from(["linear", "softmax", "sigmoid", "relu", "nope", None]),
    optimizer=st.sampled_from(["sgd", "momentum", "adam", "nope", None]),
    init=st.sampled_from(["auto", "he_normal", "xavier_uniform", "nope"]),
    seed=st.one_of(st.none(), st.integers(-1, 3), st.sampled_from(HUGE_INTS), st.just(1.5)),
    hyper=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.9, None, "x"])),
)
def test_construction_any_arguments(sizes, hidden, output, optimizer, init, seed, hyper):
    kwargs = dict(
        hidden_activation=hidden, output_activation=output, optimizer=optimizer, init=init, seed=seed, beta1=hyper
    )
    net, error = call_checked(None, kortexdl.Network, sizes, **kwargs)
    if error is None:
        assert net.parameter_count <= 2**32
        out = net.forward(np.zeros((1, net.input_size), np.float32))
        assert out.shape == (1, net.output_size)


@given(n=counts)
def test_set_num_threads_any_value(n):
    previous = kortexdl.get_num_threads()
    try:
        _, error = call_checked(None, kortexdl.set_num_threads, n)
        assert 1 <= kortexdl.get_num_threads() <= 4096
    finally:
        kortexdl.set_num_threads(previous)


@given(n=counts)
def test_numa_topology_any_value(n):
    result, error = call_checked(None, kortexdl.numa_topology, n)
    if error is None:
        assert len(result["nodes"]) >= 1


# ---- absurd requests (also docs/RELIABILITY.md, "Resource limits") ----------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [[10**6, 10**6], [2**40, 2**40], [2**32, 2], [1024] * 4097, [2**63, 2], [2**64 - 1, 2], [2**64, 2], [2**100, 1]],
)
def test_absurd_layers_fail_fast_with_memory_error(sizes):
    with pytest.raises(MemoryError, match="sizes"):
        kortexdl.Network(sizes)


@pytest.mark.parametrize("rows", [2**40, 2**50])
@pytest.mark.parametrize("method", ["forward", "forward_batch", "predict", "evaluate", "train_batch"])
def test_absurd_batches_fail_fast_with_memory_error(method, rows):
    """A zero-stride view claims 2**40 rows without the memory; converting it
    would need terabytes, so the call must refuse before allocating."""
    net = kortexdl.Network([4, 3, 2], seed=0)
    x = np.broadcast_to(np.zeros(4, np.float64), (rows, 4))
    y = np.broadcast_to(np.zeros(2, np.float32), (rows, 2))
    args = {"forward": (x,), "forward_batch": (x, 1024), "predict": (x,), "evaluate": (x, y, "mse"),
            "train_batch": (x, y, "mse", 0.1)}[method]
    with pytest.raises(MemoryError, match="inputs|targets"):
        getattr(net, method)(*args)
    assert net.version == 0
    assert np.all(np.isfinite(net.forward(PROBE)))


def test_examples_were_run():
    """Keeps the count honest (printed with -s)."""
    print(f"\nproperty examples run in this session: {CALLS['examples']}, of which raised: {CALLS['raised']}")
