"""Bad input gets the right exception class, a message naming the argument,
and leaves the network unchanged (parameters and version)."""

import numpy as np
import pytest

import kortexdl

MSE = kortexdl.LossType.MSE
CE = kortexdl.LossType.CrossEntropy
BCE = kortexdl.LossType.BinaryCrossEntropy

rng = np.random.default_rng(0)
X = rng.standard_normal((5, 6)).astype(np.float32)
Y = rng.standard_normal((5, 3)).astype(np.float32)
LABELS = np.array([0, 1, 2, 1, 0])
FLAT = X.ravel()


def with_nan(a, index=(0, 0)):
    a = a.copy()
    a[index] = np.nan
    return a


# (id, call, exception class, text the message must contain)
CASES = [
    # --- wrong lengths and shapes
    ("forward-flat-wrong-length", lambda n: n.forward(FLAT[:-1], 5), kortexdl.ShapeError, "inputs"),
    ("forward-flat-partial-row", lambda n: n.forward(FLAT[:-1]), kortexdl.ShapeError, "inputs"),
    ("forward-wrong-columns", lambda n: n.forward(np.zeros((5, 7), np.float32)), kortexdl.ShapeError, "inputs"),
    ("forward-batch-size-mismatch", lambda n: n.forward(X, 4), kortexdl.ShapeError, "batch_size"),
    ("forward-empty", lambda n: n.forward(np.zeros((0, 6), np.float32)), kortexdl.ShapeError, "inputs"),
    ("forward-empty-flat", lambda n: n.forward(np.zeros(0, np.float32)), kortexdl.ShapeError, "inputs"),
    ("forward_batch-not-dividing", lambda n: n.forward_batch(FLAT[:-2], 2), kortexdl.ShapeError, "inputs"),
    ("forward_thread_safe-wrong-length", lambda n: n.forward_thread_safe(FLAT[:-1], 5), kortexdl.ShapeError,
     "inputs"),
    ("evaluate-not-dividing", lambda n: n.evaluate(FLAT[:-1], Y, MSE), kortexdl.ShapeError, "inputs"),
    ("train-wrong-length", lambda n: n.train_batch(FLAT[:-6], Y, MSE, 0.1, 5), kortexdl.ShapeError, "inputs"),
    ("train-batch-not-dividing", lambda n: n.train_batch(FLAT[:-1], Y, MSE, 0.1), kortexdl.ShapeError, "inputs"),
    ("train-targets-transposed", lambda n: n.train_batch(X, Y.T, MSE, 0.1), kortexdl.ShapeError, "targets"),
    ("train-targets-short", lambda n: n.train_batch(X, Y.ravel()[:-1], MSE, 0.1), kortexdl.ShapeError, "targets"),
    ("train-targets-3d", lambda n: n.train_batch(X, Y[None], MSE, 0.1), ValueError, "targets"),
    ("train_ts-wrong-length", lambda n: n.train_batch_thread_safe(FLAT[:-6], Y, MSE, 0.1, 5), kortexdl.ShapeError,
     "inputs"),
    ("evaluate-too-few-labels", lambda n: n.evaluate(X, LABELS[:-1], CE), kortexdl.ShapeError, "targets"),
    ("numa-targets-short", lambda n: n.train_parallel_numa(X, Y[:-1], MSE, 0.1, 2), kortexdl.ShapeError,
     "targets"),
    ("gradients-wrong-length", lambda n: n.compute_gradients(FLAT[:-6], Y, MSE, 5), kortexdl.ShapeError, "inputs"),
    # --- 3-D and scalar inputs
    ("forward-3d", lambda n: n.forward(X.reshape(5, 2, 3)), ValueError, "inputs"),
    ("forward_batch-3d", lambda n: n.forward_batch(X.reshape(5, 2, 3), 2), ValueError, "inputs"),
    ("train-3d", lambda n: n.train_batch(X.reshape(5, 2, 3), Y, MSE, 0.1), ValueError, "inputs"),
    ("evaluate-3d", lambda n: n.evaluate(X.reshape(5, 2, 3), Y, MSE), ValueError, "inputs"),
    ("numa-3d", lambda n: n.train_parallel_numa(X.reshape(5, 2, 3), Y, MSE, 0.1, 2), ValueError, "inputs"),
    ("evaluate_numa-3d", lambda n: n.evaluate_parallel_numa(X.reshape(5, 2, 3), Y, MSE), ValueError, "inputs"),
    ("forward-scalar", lambda n: n.forward(np.float32(1.0)), ValueError, "inputs"),
    # --- dtypes that cannot be converted
    ("forward-strings", lambda n: n.forward(np.array([["a"] * 6] * 5)), TypeError, "inputs"),
    ("forward-numeric-strings", lambda n: n.forward(np.array([["1.5"] * 6] * 5)), TypeError, "inputs"),
    ("forward-objects", lambda n: n.forward(X.astype(object)), TypeError, "inputs"),
    ("forward-complex", lambda n: n.forward(X.astype(np.complex64)), TypeError, "inputs"),
    ("forward-ragged-list", lambda n: n.forward([[1.0] * 6, [1.0]]), TypeError, "inputs"),
    ("forward-dict", lambda n: n.forward({"a": 1}), TypeError, "inputs"),
    ("train-string-targets", lambda n: n.train_batch(X, np.full((5, 3), "x"), MSE, 0.1), TypeError, "targets"),
    ("train-object-targets", lambda n: n.train_batch(X, Y.astype(object), MSE, 0.1), TypeError, "targets"),
    ("numa-string-inputs", lambda n: n.train_parallel_numa(np.full((5, 6), "x"), Y, MSE, 0.1, 2), TypeError,
     "inputs"),
    # --- labels
    ("labels-too-large", lambda n: n.train_batch(X, np.array([0, 1, 3, 1, 0]), CE, 0.1), ValueError, "targets"),
    ("labels-negative", lambda n: n.train_batch(X, np.array([0, -1, 2, 1, 0]), CE, 0.1), ValueError, "targets"),
    ("labels-overflow-int32", lambda n: n.train_batch(X, np.array([0, 1, 2**33, 1, 0]), CE, 0.1), ValueError,
     "targets"),
    ("labels-overflow-uint64", lambda n: n.train_batch(X, np.array([0, 1, 2**63, 1, 0], np.uint64), CE, 0.1),
     ValueError, "targets"),
    ("labels-evaluate", lambda n: n.evaluate(X, np.array([0, 1, 7, 1, 0]), CE), ValueError, "targets"),
    ("labels-numa", lambda n: n.train_parallel_numa(X, np.array([0, 1, 7, 1, 0]), CE, 0.1, 2), ValueError,
     "targets"),
    ("labels-evaluate-numa", lambda n: n.evaluate_parallel_numa(X, np.array([0, 1, 7, 1, 0]), CE, numa_nodes=2),
     ValueError, "targets"),
    ("negative-probabilities", lambda n: n.train_batch(X, -np.abs(Y), CE, 0.1), ValueError, "targets"),
    ("bce-targets-above-one", lambda n: n.train_batch(X, np.abs(Y) + 1, BCE, 0.1), ValueError, "targets"),
    # --- learning rate
    ("lr-nan", lambda n: n.train_batch(X, Y, MSE, float("nan")), ValueError, "learning_rate"),
    ("lr-inf", lambda n: n.train_batch(X, Y, MSE, float("inf")), ValueError, "learning_rate"),
    ("lr-zero", lambda n: n.train_batch(X, Y, MSE, 0.0), ValueError, "learning_rate"),
    ("lr-negative", lambda n: n.train_batch(X, Y, MSE, -0.1), ValueError, "learning_rate"),
    ("lr-string", lambda n: n.train_batch(X, Y, MSE, "0.1"), TypeError, "learning_rate"),
    ("lr-nan-thread-safe", lambda n: n.train_batch_thread_safe(X, Y, MSE, np.nan), ValueError, "learning_rate"),
    ("lr-nan-numa", lambda n: n.train_parallel_numa(X, Y, MSE, float("nan"), 2), ValueError, "learning_rate"),
    ("lr-nan-apply", lambda n: n.apply_gradients(np.zeros(n.parameter_count), float("nan")), ValueError,
     "learning_rate"),
    # --- batch sizes
    ("forward-batch-0", lambda n: n.forward(FLAT, 0), ValueError, "batch_size"),
    ("forward-batch-negative", lambda n: n.forward(FLAT, -5), ValueError, "batch_size"),
    ("forward-batch-float", lambda n: n.forward(FLAT, 5.0), TypeError, "batch_size"),
    ("forward-batch-bool", lambda n: n.forward(FLAT, True), TypeError, "batch_size"),
    ("forward_batch-batch-0", lambda n: n.forward_batch(FLAT, 0), ValueError, "batch_size"),
    ("forward_batch-batch-negative", lambda n: n.forward_batch(FLAT, -1), ValueError, "batch_size"),
    ("train-batch-0", lambda n: n.train_batch(FLAT, Y, MSE, 0.1, 0), ValueError, "batch_size"),
    ("train-batch-negative", lambda n: n.train_batch(FLAT, Y, MSE, 0.1, -5), ValueError, "batch_size"),
    ("evaluate-batch-0", lambda n: n.evaluate(X, Y, MSE, 0), ValueError, "batch_size"),
    ("evaluate-batch-negative", lambda n: n.evaluate(X, Y, MSE, -2), ValueError, "batch_size"),
    ("numa-batch-0", lambda n: n.train_parallel_numa(X, Y, MSE, 0.1, 0), ValueError, "batch_size"),
    ("numa-batch-negative", lambda n: n.train_parallel_numa(X, Y, MSE, 0.1, -3), ValueError, "batch_size"),
    ("numa-batch-too-large", lambda n: n.train_parallel_numa(X, Y, MSE, 0.1, 6), ValueError, "batch_size"),
    ("evaluate_numa-batch-0", lambda n: n.evaluate_parallel_numa(X, Y, MSE, 0), ValueError, "batch_size"),
    ("gradients-batch-0", lambda n: n.compute_gradients(FLAT, Y, MSE, 0), ValueError, "batch_size"),
    # --- other data-parallel options
    ("numa-epochs-0", lambda n: n.train_parallel_numa(X, Y, MSE, 0.1, 2, 0), ValueError, "epochs"),
    ("numa-nodes-negative", lambda n: n.train_parallel_numa(X, Y, MSE, 0.1, 2, numa_nodes=-1), ValueError,
     "numa_nodes"),
    ("numa-seed-negative", lambda n: n.train_parallel_numa(X, Y, MSE, 0.1, 2, seed=-1), ValueError, "seed"),
    ("numa-shuffle-string", lambda n: n.train_parallel_numa(X, Y, MSE, 0.1, 2, shuffle="yes"), TypeError,
     "shuffle"),
    ("evaluate_numa-nodes-negative", lambda n: n.evaluate_parallel_numa(X, Y, MSE, numa_nodes=-2), ValueError,
     "numa_nodes"),
    # --- None where a value is needed
    ("forward-none", lambda n: n.forward(None), TypeError, "inputs"),
    ("forward_batch-none", lambda n: n.forward_batch(None, 2), TypeError, "inputs"),
    ("train-none-inputs", lambda n: n.train_batch(None, Y, MSE, 0.1, 5), TypeError, "inputs"),
    ("train-none-targets", lambda n: n.train_batch(X, None, MSE, 0.1), TypeError, "targets"),
    ("train-none-loss", lambda n: n.train_batch(X, Y, None, 0.1), TypeError, "loss_type"),
    ("train-none-lr", lambda n: n.train_batch(X, Y, MSE, None), TypeError, "learning_rate"),
    ("evaluate-none-targets", lambda n: n.evaluate(X, None, MSE), TypeError, "targets"),
    ("numa-none-inputs", lambda n: n.train_parallel_numa(None, Y, MSE, 0.1), TypeError, "inputs"),
    ("numa-none-batch", lambda n: n.train_parallel_numa(X, Y, MSE, 0.1, None), TypeError, "batch_size"),
    ("evaluate_numa-none", lambda n: n.evaluate_parallel_numa(None, Y, MSE), TypeError, "inputs"),
    ("set_parameters-none", lambda n: n.set_parameters(None), TypeError, "parameters"),
    ("apply-none", lambda n: n.apply_gradients(None, 0.1), TypeError, "grad"),
    # --- NaN data, bad loss
    ("train-nan-inputs", lambda n: n.train_batch(with_nan(X), Y, MSE, 0.1), ValueError, "inputs"),
    ("train-nan-targets", lambda n: n.train_batch(X, with_nan(Y), MSE, 0.1), ValueError, "targets"),
    ("numa-nan-inputs", lambda n: n.train_parallel_numa(with_nan(X), Y, MSE, 0.1, 2), ValueError, "inputs"),
    ("unknown-loss", lambda n: n.train_batch(X, Y, "hinge", 0.1), ValueError, "loss_type"),
    ("loss-wrong-type", lambda n: n.evaluate(X, Y, 3), TypeError, "loss_type"),
    # --- parameters
    ("set_parameters-short", lambda n: n.set_parameters(np.zeros(n.parameter_count - 1)), kortexdl.ShapeError,
     "parameters"),
    ("set_parameters-nan", lambda n: n.set_parameters(with_nan(np.zeros(n.parameter_count), 3)), ValueError,
     "parameters"),
    ("set_parameters-2d", lambda n: n.set_parameters(np.zeros((1, n.parameter_count))), ValueError, "parameters"),
    ("set_weights-transposed", lambda n: n.set_weights([(w.T, b) for w, b in n.get_weights()]), kortexdl.ShapeError,
     "weights[0]"),
    ("set_weights-too-few", lambda n: n.set_weights(n.get_weights()[:1]), kortexdl.ShapeError, "weights"),
    ("set_weights-bad-bias", lambda n: n.set_weights([(w, b[:-1]) for w, b in n.get_weights()]),
     kortexdl.ShapeError, "weights[0][1]"),
    ("set_weights-nan", lambda n: n.set_weights([(with_nan(w), b) for w, b in n.get_weights()]), ValueError,
     "parameters"),
    ("set_weights-not-pairs", lambda n: n.set_weights([1, 2]), TypeError, "weights[0]"),
    ("apply-short", lambda n: n.apply_gradients(np.zeros(3), 0.1), kortexdl.ShapeError, "grad"),
    ("apply-nan", lambda n: n.apply_gradients(with_nan(np.zeros(n.parameter_count), 0), 0.1), ValueError, "grad"),
]


@pytest.fixture
def net():
    return kortexdl.Network([6, 8, 3], seed=1)


@pytest.mark.parametrize("call, error, argument", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(net, call, error, argument):
    params, version = net.get_parameters(), net.version
    with pytest.raises(error) as info:
        call(net)
    assert argument in str(info.value), f"message does not name {argument!r}: {info.value}"
    np.testing.assert_array_equal(net.get_parameters(), params)
    assert net.version == version
    # And the network still works.
    assert np.all(np.isfinite(net.forward(X)))


@pytest.mark.parametrize(
    "kwargs, error, argument",
    [
        ({"sizes": [6]}, ValueError, "sizes"),
        ({"sizes": []}, ValueError, "sizes"),
        ({"sizes": [6, 0, 3]}, ValueError, "sizes[1]"),
        ({"sizes": [6, -4, 3]}, ValueError, "sizes[1]"),
        ({"sizes": [6, 2.5, 3]}, TypeError, "sizes[1]"),
        ({"sizes": None}, TypeError, "sizes"),
        ({"sizes": "784"}, TypeError, "sizes"),
        ({"sizes": 784}, TypeError, "sizes"),
        ({"sizes": [2**31, 2**31]}, MemoryError, "sizes"),
        ({"sizes": [4, 2], "hidden_activation": "swish"}, ValueError, "hidden_activation"),
        ({"sizes": [4, 4, 2], "hidden_activation": "softmax"}, ValueError, "hidden_activation"),
        ({"sizes": [4, 2], "output_activation": 3}, TypeError, "output_activation"),
        ({"sizes": [4, 2], "init": "zeros"}, ValueError, "init"),
        ({"sizes": [4, 2], "optimizer": "lbfgs"}, ValueError, "optimizer"),
        ({"sizes": [4, 2], "optimizer": "adam", "beta1": 1.5}, ValueError, "beta1"),
        ({"sizes": [4, 2], "seed": -1}, ValueError, "seed"),
        ({"sizes": [4, 2], "seed": 2**64}, ValueError, "seed"),
        ({"sizes": [4, 2], "seed": "abc"}, TypeError, "seed"),
        ({"sizes": [4, 2], "momentum": None}, TypeError, "momentum"),
        ({"sizes": [4, 2], "nesterov": "yes"}, TypeError, "nesterov"),
    ],
)
def test_bad_construction(kwargs, error, argument):
    with pytest.raises(error) as info:
        kortexdl.Network(**kwargs)
    assert argument in str(info.value), f"message does not name {argument!r}: {info.value}"


def test_errors_are_kortex_errors_with_the_cpp_message(net):
    with pytest.raises(kortexdl.KortexError) as info:
        net.train_batch(X, Y, MSE, -1.0)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == "learning_rate: must be a finite number > 0, got -1"


def test_cross_entropy_needs_a_compatible_output_layer():
    net = kortexdl.Network([6, 3], output_activation="sigmoid", seed=0)
    with pytest.raises(ValueError, match="loss_type"):
        net.train_batch(X, LABELS, CE, 0.1)
    assert net.version == 0
