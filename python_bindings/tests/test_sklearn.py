"""kortexdl.sklearn: scikit-learn's own estimator checks, Pipeline,
cross_val_score and pickling."""

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="Debian's python3-sklearn is not installed")

from sklearn.datasets import make_blobs, make_regression  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from kortexdl.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@parametrize_with_checks([MLPClassifier(max_iter=100, random_state=0), MLPRegressor(max_iter=100, random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=300, centers=3, n_features=8, random_state=0)
    return x, np.array(["ant", "bee", "cat"])[y]


def test_classifier_pipeline_and_cross_validation(blobs):
    x, y = blobs
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", MLPClassifier((32,), max_iter=100, random_state=1))])
    scores = cross_val_score(pipe, x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9
    pipe.fit(x, y)
    assert set(pipe.predict(x[:10])) <= {"ant", "bee", "cat"}
    proba = pipe.predict_proba(x[:5])
    assert proba.shape == (5, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert list(pipe.named_steps["mlp"].classes_) == ["ant", "bee", "cat"]


def test_regressor_learns_a_linear_map():
    x, y = make_regression(n_samples=400, n_features=5, noise=0.1, random_state=0)
    y = (y - y.mean()) / y.std()
    reg = MLPRegressor((32,), max_iter=200, learning_rate_init=0.01, random_state=0).fit(x, y)
    assert reg.score(x, y) > 0.95
    assert reg.predict(x[:3]).shape == (3,) and reg.predict(x[:3]).dtype == np.float64
    multi = MLPRegressor((16,), max_iter=50, random_state=0).fit(x, np.c_[y, -y])
    assert multi.predict(x[:4]).shape == (4, 2)


def test_params_round_trip_and_pickle(blobs):
    x, y = blobs
    clf = MLPClassifier(hidden_layer_sizes=(16, 8), activation="tanh", solver="sgd", max_iter=20, random_state=3)
    params = clf.get_params()
    assert params["hidden_layer_sizes"] == (16, 8) and params["solver"] == "sgd"
    clf.set_params(learning_rate_init=0.05, learning_rate="cosine")
    assert clf.get_params()["learning_rate_init"] == 0.05
    clf.fit(x, y)
    assert clf.n_iter_ == 20 and len(clf.loss_curve_) == 20 and clf.loss_curve_[-1] < clf.loss_curve_[0]
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(x), clf.predict_proba(x))


def test_same_random_state_same_model(blobs):
    x, y = blobs
    a = MLPClassifier((16,), max_iter=10, random_state=7).fit(x, y)
    b = MLPClassifier((16,), max_iter=10, random_state=7).fit(x, y)
    np.testing.assert_array_equal(a.network_.get_parameters(), b.network_.get_parameters())


def test_early_stopping_uses_a_validation_fraction(blobs):
    x, y = blobs
    clf = MLPClassifier((16,), max_iter=500, early_stopping=True, n_iter_no_change=3, tol=1e9, random_state=0)
    clf.fit(x, y)
    assert clf.n_iter_ == 4  # the first epoch sets the best loss, three more without improvement stop it
    assert len(clf.validation_scores_) == 4


def test_bad_parameters_are_reported_at_fit(blobs):
    x, y = blobs
    for bad in (
        {"hidden_layer_sizes": (0,)},
        {"activation": "softsign"},
        {"solver": "lbfgs"},
        {"learning_rate": "invscaling"},
        {"max_iter": 0},
        {"batch_size": -4},
        {"alpha": -1.0},
    ):
        with pytest.raises(ValueError):
            MLPClassifier(**bad).fit(x, y)
