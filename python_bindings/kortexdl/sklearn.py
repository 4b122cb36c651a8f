"""scikit-learn estimators backed by KortexDL networks.

    from kortexdl.sklearn import MLPClassifier, MLPRegressor

    clf = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=20, random_state=0)
    clf.fit(X_train, y_train)
    clf.predict(X_test), clf.predict_proba(X_test), clf.score(X_test, y_test)

They follow scikit-learn's estimator contract (get_params/set_params,
clone, Pipeline, cross_val_score, pickling) and pass its check_estimator.
Parameter names follow sklearn.neural_network where the meaning is the same:

- hidden_layer_sizes, activation ("relu", "tanh", "logistic", "identity",
  and "gelu"), solver ("adam", "sgd"), learning_rate_init, momentum,
  nesterovs_momentum, beta_1, beta_2, epsilon, batch_size ("auto" =
  min(200, n_samples)), max_iter (epochs), shuffle, random_state,
  early_stopping with validation_fraction, n_iter_no_change and tol.
- alpha is the L2 penalty of sklearn's loss, alpha / 2 * ||W||^2 / batch
  size per step, applied as KortexDL's weight decay alpha / batch_size on the
  weights (not the biases), as sklearn does.
- learning_rate: "constant" or "cosine" (annealed to 0 over the run).
- numa_nodes: data-parallel training over that many (virtual) NUMA nodes.

The whole training run is one C++ call (Network.fit) with the GIL released.
Inputs are converted to float32, the precision the networks compute in.
"""

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ._core import LossType, Network

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid", "identity": "linear", "gelu": "gelu"}
_SCHEDULES = ("constant", "cosine")


class _BaseMLP(BaseEstimator):
    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        numa_nodes=1,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.numa_nodes = numa_nodes

    # -- what the subclasses decide ------------------------------------------
    _output_activation = "linear"
    _loss = LossType.MSE

    def _check_params(self, n_samples):
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, Integral):
            hidden = (hidden,)
        hidden = tuple(hidden)
        if any(not isinstance(h, Integral) or h < 1 for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.solver not in ("adam", "sgd"):
            raise ValueError(f"solver must be 'adam' or 'sgd', got {self.solver!r}")
        if self.learning_rate not in _SCHEDULES:
            raise ValueError(f"learning_rate must be one of {_SCHEDULES}, got {self.learning_rate!r}")
        if not isinstance(self.max_iter, Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        if self.batch_size == "auto":
            batch = min(200, n_samples)
        elif isinstance(self.batch_size, Integral) and self.batch_size >= 1:
            batch = min(int(self.batch_size), n_samples)
        else:
            raise ValueError(f"batch_size must be 'auto' or a positive integer, got {self.batch_size!r}")
        return hidden, batch

    def _seed(self):
        state = self.random_state
        if state is None:
            return None
        if isinstance(state, Integral):
            return int(state) % (2**63)
        if isinstance(state, np.random.RandomState):
            return int(state.randint(0, 2**31 - 1))
        raise ValueError(f"random_state must be None, an int or a numpy RandomState, got {state!r}")

    def _fit_network(self, X, targets, n_outputs):
        n_samples, n_features = X.shape
        hidden, batch = self._check_params(n_samples)
        seed = self._seed()
        optimizer = "adam" if self.solver == "adam" else ("momentum" if self.momentum > 0 else "sgd")
        network = Network(
            [n_features, *hidden, n_outputs],
            hidden_activation=_ACTIVATIONS[self.activation],
            output_activation=self._output_activation,
            seed=seed,
            optimizer=optimizer,
            momentum=self.momentum if optimizer == "momentum" else 0.9,
            nesterov=bool(self.nesterovs_momentum) if optimizer == "momentum" else False,
            beta1=self.beta_1,
            beta2=self.beta_2,
            epsilon=self.epsilon,
            weight_decay=float(self.alpha) / batch,
        )
        validation_split = 0.0
        if self.early_stopping:
            validation_split = float(self.validation_fraction)
            if int(np.floor(validation_split * n_samples)) < 1:
                validation_split = 0.0  # too few rows to hold any out: stop on the training loss
        history = network.fit(
            X,
            targets,
            self._loss,
            epochs=int(self.max_iter),
            batch_size=batch,
            learning_rate=float(self.learning_rate_init),
            schedule=self.learning_rate,
            shuffle=bool(self.shuffle),
            seed=seed,
            validation_split=validation_split,
            early_stopping_patience=int(self.n_iter_no_change) if self.early_stopping else 0,
            min_delta=float(self.tol) if self.early_stopping else 0.0,
            numa_nodes=int(self.numa_nodes),
        )
        self.network_ = network
        # Plain Python records, so fitted estimators pickle and compare.
        self.history_ = [
            {
                "epoch": r.epoch,
                "loss": r.loss,
                "accuracy": r.accuracy,
                "validation_loss": r.validation_loss,
                "validation_accuracy": r.validation_accuracy,
                "learning_rate": r.learning_rate,
                "seconds": r.seconds,
            }
            for r in history.epochs
        ]
        self.loss_curve_ = [record.loss for record in history.epochs]
        self.loss_ = self.loss_curve_[-1]
        self.n_iter_ = len(history.epochs)
        self.n_outputs_ = n_outputs
        if self.early_stopping and validation_split > 0:
            self.validation_scores_ = [record.validation_loss for record in history.epochs]
            self.best_validation_loss_ = history.best_loss
        return self

    def _outputs(self, X):
        check_is_fitted(self, "network_")
        X = self._validate_data(X, reset=False, dtype=np.float32, order="C")
        return self.network_.predict(X)


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A multi-layer perceptron classifier (softmax output, cross-entropy),
    trained by KortexDL; see the module docstring for the parameters."""

    _output_activation = "softmax"
    _loss = LossType.CrossEntropy

    def fit(self, X, y):
        X, y = self._validate_data(X, y, dtype=np.float32, order="C", y_numeric=False)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"MLPClassifier needs samples of at least 2 classes in the data, got 1 class: {self.classes_[0]!r}"
            )
        return self._fit_network(X, encoded.astype(np.int32), len(self.classes_))

    def predict_proba(self, X):
        return self._outputs(X)

    def predict_log_proba(self, X):
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        check_is_fitted(self, "network_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """A multi-layer perceptron regressor (linear output, mean squared
    error), trained by KortexDL; see the module docstring for the parameters."""

    _output_activation = "linear"
    _loss = LossType.MSE

    def fit(self, X, y):
        X, y = self._validate_data(X, y, dtype=np.float32, order="C", multi_output=True, y_numeric=True)
        targets = np.ascontiguousarray(y.reshape(len(y), -1), dtype=np.float32)
        self.target_1d_ = y.ndim == 1
        return self._fit_network(X, targets, targets.shape[1])

    def predict(self, X):
        # float64 like every scikit-learn regressor (the network computes in float32).
        outputs = self._outputs(X).astype(np.float64)
        return outputs[:, 0] if self.target_1d_ else outputs

    def _more_tags(self):
        return {
            "multioutput": True,
            "_xfail_checks": {
                # Measured: predictions on a subset differ from the full
                # batch's by at most one float32 ulp (4.8e-7 at values ~2),
                # above the check's 1e-7 tolerance: the GEMM's accumulation
                # order depends on the number of rows it is given.
                "check_methods_subset_invariance": "float32 results vary by up to 1 ulp with the batch's row count",
            },
        }
