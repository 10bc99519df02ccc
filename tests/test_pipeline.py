"""skcl estimators inside sklearn tooling: pipelines, routing, grid search, SGD swap."""

import numpy as np
import pytest
import sklearn
from conftest import SMALL
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from skcl import NaiveClassifier
from skcl.datasets import load_split_digits
from skcl.evaluation import evaluate_stream
from skcl.pipeline import ContinualPipeline, make_pipeline


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y


def stream_loop(pipe, X, y, classes, n_chunks=6, epochs=3):
    """The loop a user writes around SGDClassifier.partial_fit."""
    for chunk in np.array_split(np.arange(len(y)), n_chunks):
        for _ in range(epochs):
            pipe.partial_fit(X[chunk], y[chunk], classes=classes)
    return pipe


@pytest.mark.parametrize(
    "final",
    [SGDClassifier(random_state=0), NaiveClassifier(**SMALL)],
    ids=["SGDClassifier", "NaiveClassifier"],
)
def test_skcl_is_a_drop_in_for_sgdclassifier_in_the_same_loop(digits, final):
    X, y = digits
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:1300], order[1300:]
    pipe = stream_loop(make_pipeline(StandardScaler(), sklearn.clone(final)),
                       X[train], y[train], classes=np.unique(y))
    assert pipe.score(X[test], y[test]) > 0.85
    assert pipe.predict(X[test]).shape == (len(test),)


def test_partial_fit_updates_transformers_incrementally_and_routes_task_id(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), NaiveClassifier(**SMALL))
    first, second = np.arange(0, 500), np.arange(500, 1000)
    pipe.partial_fit(X[first], y[first], task_id=0)
    mean_after_one = pipe[0].mean_.copy()
    pipe.partial_fit(X[second], y[second], task_id=1)
    np.testing.assert_allclose(pipe[0].mean_, X[:1000].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(mean_after_one, pipe[0].mean_)
    assert pipe[-1].tasks_seen_ == [0, 1]
    assert pipe[0].n_samples_seen_.max() == 1000
    pred = pipe.predict(X[:50], task_id=0)
    assert set(pred) <= set(pipe[-1].task_classes_[0])
    assert 0.0 <= pipe.score(X[:50], y[:50], task_id=0) <= 1.0
    assert pipe.end_task()[-1].current_task_ is None


def test_transformer_without_partial_fit_is_fitted_once(digits):
    X, y = digits
    calls = []

    def scale(Z):
        calls.append(len(Z))
        return Z / 16.0

    pipe = ContinualPipeline([("scale", FunctionTransformer(scale)),
                              ("clf", NaiveClassifier(**SMALL))])
    pipe.partial_fit(X[:100], y[:100])
    pipe.partial_fit(X[100:200], y[100:200])
    assert calls[:2] == [100, 100]
    assert pipe.predict(X[:10]).shape == (10,)


def test_pipeline_fit_routes_task_id_with_and_without_metadata_routing(digits):
    X, y = digits
    X, y = X[:400], y[:400]
    task_id = (y >= 5).astype(int)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", NaiveClassifier(max_epochs=1, **SMALL))])
    pipe.fit(X, y, clf__task_id=task_id)
    assert pipe[-1].tasks_seen_ == [0, 1]
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline([("scale", StandardScaler()),
                         ("clf", NaiveClassifier(max_epochs=1, **SMALL))])
        pipe.fit(X, y, task_id=task_id)
        assert sorted(pipe[-1].tasks_seen_) == [0, 1]
        assert set(pipe.predict(X[y < 5], task_id=np.zeros((y < 5).sum(), int))) <= set(range(5))


def test_grid_search_routes_task_id(digits):
    X, y = digits
    X, y = X[:300] / 16.0, y[:300]
    task_id = (y >= 5).astype(int)
    grid = {"learning_rate": [0.01, 0.05]}
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(NaiveClassifier(max_epochs=2, **SMALL), grid, cv=2)
        search.fit(X, y, task_id=task_id)
    assert sorted(search.best_estimator_.tasks_seen_) == [0, 1]
    with sklearn.config_context(enable_metadata_routing=True):
        est = NaiveClassifier(max_epochs=2, **SMALL).set_score_request(task_id=False)
        class_incremental = GridSearchCV(est, grid, cv=2).fit(X, y, task_id=task_id)
    ti = search.cv_results_["mean_test_score"]
    ci = class_incremental.cv_results_["mean_test_score"]
    assert (ti >= ci).all() and (ti > ci).any()
    assert set(search.cv_results_["param_learning_rate"]) == {0.01, 0.05}
    plain = GridSearchCV(NaiveClassifier(max_epochs=2, **SMALL), grid, cv=2).fit(X, y)
    assert plain.best_estimator_.tasks_seen_ == [0]


@pytest.fixture(scope="module")
def two_task_pipe(digits):
    """A pipeline trained on digits 0-4 (task 0), then 5-9 (task 1): it forgets task 0."""
    X, y = digits
    pipe = make_pipeline(StandardScaler(), NaiveClassifier(**SMALL))
    for task, rows in enumerate([np.flatnonzero(y < 5)[:400], np.flatnonzero(y >= 5)[:400]]):
        for _ in range(3):
            pipe.partial_fit(X[rows], y[rows], task_id=task)
    test = np.flatnonzero(y < 5)[400:600]
    return pipe.end_task(), X[test], y[test]


PREDICTION_METHODS = ["predict", "predict_proba", "predict_log_proba", "decision_function"]


@pytest.mark.parametrize("routing", [False, True], ids=["routing-off", "routing-on"])
@pytest.mark.parametrize("method", PREDICTION_METHODS)
def test_prediction_methods_hand_task_id_to_the_final_estimator(two_task_pipe, method, routing):
    pipe, X, _ = two_task_pipe
    final = pipe[-1]
    Xt = pipe[0].transform(X)
    with sklearn.config_context(enable_metadata_routing=routing):
        per_task = getattr(pipe, method)(X, task_id=0)
        per_sample = getattr(pipe, method)(X, task_id=np.zeros(len(X), int))
        everything = getattr(pipe, method)(X)
    np.testing.assert_array_equal(per_task, getattr(final, method)(Xt, task_id=0))
    np.testing.assert_array_equal(per_sample, per_task)
    np.testing.assert_array_equal(everything, getattr(final, method)(Xt))
    assert not np.array_equal(per_task, everything)


@pytest.mark.parametrize("routing", [False, True], ids=["routing-off", "routing-on"])
def test_score_is_task_incremental_with_task_id(two_task_pipe, routing):
    pipe, X, y = two_task_pipe
    Xt = pipe[0].transform(X)
    with sklearn.config_context(enable_metadata_routing=routing):
        task_incremental = pipe.score(X, y, task_id=0)
        class_incremental = pipe.score(X, y)
    assert task_incremental == pipe[-1].score(Xt, y, task_id=0)
    assert class_incremental == pipe[-1].score(Xt, y)
    assert task_incremental > class_incremental + 0.2        # task 0 is forgotten, not lost


def test_score_hands_on_task_id_and_sample_weight_together(two_task_pipe):
    pipe, X, y = two_task_pipe
    weight = (y == 0) + 0.01
    weighted = pipe.score(X, y, task_id=0, sample_weight=weight)
    assert weighted == pipe[-1].score(pipe[0].transform(X), y, task_id=0, sample_weight=weight)
    assert weighted != pipe.score(X, y, task_id=0)


def test_task_id_for_a_final_estimator_without_tasks_raises(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), SGDClassifier(random_state=0)).fit(X[:300], y[:300])
    for method in ["predict", "decision_function"]:
        with pytest.raises(ValueError, match=f"SGDClassifier.{method} takes no task_id"):
            getattr(pipe, method)(X[:5], task_id=0)
    with pytest.raises(ValueError, match="SGDClassifier.score takes no task_id"):
        pipe.score(X[:5], y[:5], task_id=0)
    assert 0.0 <= pipe.score(X[300:400], y[300:400]) <= 1.0


def test_prediction_methods_follow_the_final_estimator(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), SGDClassifier(random_state=0)).fit(X[:300], y[:300])
    assert not hasattr(pipe, "predict_proba")
    assert hasattr(pipe, "decision_function")
    assert not hasattr(ContinualPipeline, "set_predict_request")


def test_evaluate_stream_scores_a_pipeline_per_task():
    stream = load_split_digits()
    results = {}
    for scenario in ["task", "class"]:
        pipe = make_pipeline(StandardScaler(), NaiveClassifier(**SMALL))
        results[scenario] = evaluate_stream(pipe, stream, scenario=scenario, epochs=1)
    last = results["task"].R[-1].tolist()
    trained = make_pipeline(StandardScaler(), NaiveClassifier(**SMALL))
    for exp in stream:
        trained.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
        trained.end_task()
    assert last == [trained.score(exp.X_test, exp.y_test, task_id=exp.task_id)
                    for exp in stream]
    assert results["task"].acc > results["class"].acc + 0.2
    assert not hasattr(make_pipeline(StandardScaler(), SGDClassifier()), "_register")
