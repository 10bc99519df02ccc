"""Task-aware scorers (skcl/scoring.py) alone and in sklearn's model selection tools."""

import pickle

import numpy as np
import pytest
import sklearn
from conftest import SMALL
from sklearn.datasets import load_digits
from sklearn.inspection import permutation_importance
from sklearn.metrics import accuracy_score, f1_score, log_loss, make_scorer, roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.preprocessing import StandardScaler

from skcl import NaiveClassifier
from skcl.pipeline import make_pipeline
from skcl.scoring import make_task_scorer, task_accuracy

GRID = {"learning_rate": [0.01, 0.05]}


@pytest.fixture(scope="module")
def data():
    """300 digits; task 0 holds digits 0-4, task 1 digits 5-9."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:300].astype(np.float32) / 16.0, y[:300]
    return X, y, (y >= 5).astype(int)


@pytest.fixture(scope="module")
def fitted(data):
    X, y, task_id = data
    return NaiveClassifier(max_epochs=2, **SMALL).fit(X, y, task_id=task_id)


def test_task_accuracy_predicts_with_task_id(data, fitted):
    X, y, task_id = data
    assert task_accuracy(fitted, X, y, task_id=task_id) == fitted.score(X, y, task_id=task_id)
    assert task_accuracy(fitted, X, y, task_id=task_id) > fitted.score(X, y)
    rows = task_id == 0
    assert task_accuracy(fitted, X[rows], y[rows], task_id=0) == fitted.score(
        X[rows], y[rows], task_id=0)


def test_grid_search_scores_task_incrementally_where_accuracy_does_not(data):
    X, y, task_id = data
    est = NaiveClassifier(max_epochs=2, **SMALL)
    with sklearn.config_context(enable_metadata_routing=True):
        scored = GridSearchCV(est, GRID, cv=2, scoring=task_accuracy).fit(X, y, task_id=task_id)
        passthrough = GridSearchCV(est, GRID, cv=2).fit(X, y, task_id=task_id)
        string = GridSearchCV(est, GRID, cv=2, scoring="accuracy").fit(X, y, task_id=task_id)
    task_scores = scored.cv_results_["mean_test_score"]
    np.testing.assert_array_equal(task_scores, passthrough.cv_results_["mean_test_score"])
    class_scores = string.cv_results_["mean_test_score"]
    assert (task_scores >= class_scores).all() and (task_scores > class_scores + 0.05).any()


def test_multi_metric_grid_search_with_task_scorers(data):
    X, y, task_id = data
    scoring = {
        "task_acc": task_accuracy,
        "task_f1": make_task_scorer(f1_score, average="macro"),
        "class_acc": "accuracy",
    }
    with sklearn.config_context(enable_metadata_routing=True):
        search = GridSearchCV(NaiveClassifier(max_epochs=2, **SMALL), GRID, cv=2,
                              scoring=scoring, refit="task_acc").fit(X, y, task_id=task_id)
        passthrough = GridSearchCV(NaiveClassifier(max_epochs=2, **SMALL), GRID,
                                   cv=2).fit(X, y, task_id=task_id)
    results = search.cv_results_
    np.testing.assert_array_equal(results["mean_test_task_acc"],
                                  passthrough.cv_results_["mean_test_score"])
    assert (results["mean_test_task_acc"] > results["mean_test_class_acc"] + 0.05).any()
    assert np.all((results["mean_test_task_f1"] > 0) & (results["mean_test_task_f1"] <= 1))
    assert not np.array_equal(results["mean_test_task_f1"], results["mean_test_task_acc"])
    assert search.best_score_ == results["mean_test_task_acc"].max()


def test_cross_validate_routes_the_test_folds_task_ids(data):
    X, y, task_id = data
    est = NaiveClassifier(max_epochs=2, **SMALL)
    with sklearn.config_context(enable_metadata_routing=True):
        cv = cross_validate(est, X, y, cv=2, params={"task_id": task_id},
                            scoring={"task": task_accuracy, "class": "accuracy"},
                            return_estimator=True, return_indices=True)
    for model, test, score in zip(cv["estimator"], cv["indices"]["test"], cv["test_task"],
                                  strict=True):
        assert score == model.score(X[test], y[test], task_id=task_id[test])
    assert (cv["test_task"] > cv["test_class"]).all()


def test_grid_search_over_a_continual_pipeline(data):
    X, y, task_id = data
    pipe = make_pipeline(StandardScaler(), NaiveClassifier(max_epochs=2, **SMALL))
    grid = {"naiveclassifier__learning_rate": GRID["learning_rate"]}
    with sklearn.config_context(enable_metadata_routing=True):
        scored = GridSearchCV(pipe, grid, cv=2, scoring=task_accuracy).fit(X, y, task_id=task_id)
        string = GridSearchCV(pipe, grid, cv=2, scoring="accuracy").fit(X, y, task_id=task_id)
    assert (scored.cv_results_["mean_test_score"]
            > string.cv_results_["mean_test_score"] + 0.05).any()


def test_without_task_id_the_scorer_says_how_to_route_it(data, fitted):
    X, y, _ = data
    with pytest.raises(ValueError, match="got no task_id.*enable_metadata_routing=True"):
        task_accuracy(fitted, X, y)
    search = GridSearchCV(NaiveClassifier(max_epochs=1, **SMALL), GRID, cv=2,
                          scoring=task_accuracy, error_score="raise")
    with pytest.raises(ValueError, match="got no task_id"):
        search.fit(X, y)


def test_a_fixed_task_serves_callers_without_metadata(data, fitted):
    X, y, task_id = data
    rows = task_id == 0
    task0 = make_task_scorer(accuracy_score, task_id=0)
    assert task0(fitted, X[rows], y[rows]) == fitted.score(X[rows], y[rows], task_id=0)
    assert task0(fitted, X, y, task_id=task_id) == fitted.score(X, y, task_id=task_id)
    per_task = permutation_importance(fitted, X[rows], y[rows], scoring=task0, n_repeats=2,
                                      random_state=0)
    per_class = permutation_importance(fitted, X[rows], y[rows], scoring="accuracy",
                                       n_repeats=2, random_state=0)
    assert per_task.importances.shape == (X.shape[1], 2)
    assert not np.allclose(per_task.importances_mean, per_class.importances_mean)


def test_probability_responses(data, fitted):
    X, y, task_id = data
    binary = y < 2
    two_class = NaiveClassifier(max_epochs=2, **SMALL).fit(X[binary], y[binary])
    ours = make_task_scorer(roc_auc_score, response_method="predict_proba")
    sklearns = make_scorer(roc_auc_score, response_method="predict_proba")
    assert ours(two_class, X[binary], y[binary], task_id=0) == sklearns(
        two_class, X[binary], y[binary])
    loss = make_task_scorer(log_loss, response_method="predict_proba", greater_is_better=False,
                            labels=fitted.classes_)
    expected = log_loss(y, fitted.predict_proba(X, task_id=task_id), labels=fitted.classes_)
    assert loss(fitted, X, y, task_id=task_id) == pytest.approx(-expected)


def test_the_first_response_method_the_estimator_has_is_called(data, fitted):
    X, y, task_id = data
    ndim = make_task_scorer(lambda y_true, response: np.ndim(response),
                            response_method=("decision_function", "predict"))
    assert ndim(fitted, X, y, task_id=task_id) == 2
    scaler = StandardScaler().fit(X)
    with pytest.raises(AttributeError, match=r"StandardScaler has none of the response methods"):
        ndim(scaler, X, y, task_id=task_id)


def test_requests_and_sample_weight(data, fitted):
    X, y, task_id = data
    scorer = make_task_scorer(accuracy_score)
    assert scorer.get_metadata_routing().score.requests == {"task_id": True,
                                                             "sample_weight": None}
    with sklearn.config_context(enable_metadata_routing=True):
        scorer.set_score_request(sample_weight=True)
    assert scorer.get_metadata_routing().score.requests["sample_weight"] is True
    assert task_accuracy.get_metadata_routing().score.requests["sample_weight"] is None
    weight = (y == 0).astype(float)
    pred = fitted.predict(X, task_id=task_id)
    assert scorer(fitted, X, y, task_id=task_id, sample_weight=weight) == accuracy_score(
        y, pred, sample_weight=weight)
    no_weights = make_task_scorer(lambda y_true, y_pred: 0.0)
    with pytest.raises(ValueError, match="takes no sample_weight"):
        no_weights.set_score_request(sample_weight=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(response_method="transform"), "response_method must be"),
        (dict(response_method=()), "response_method must be"),
        (dict(task_id=[0, 1]), "one integer task"),
        (dict(task_id=-1), "non-negative"),
    ],
    ids=["unknown-method", "no-method", "per-sample-ids", "negative"],
)
def test_bad_scorer_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_task_scorer(accuracy_score, **kwargs)


def test_scorer_pickles_and_reads_well(data, fitted):
    X, y, task_id = data
    copy = pickle.loads(pickle.dumps(task_accuracy))
    assert copy(fitted, X, y, task_id=task_id) == task_accuracy(fitted, X, y, task_id=task_id)
    assert repr(task_accuracy) == "make_task_scorer(accuracy_score)"
    assert repr(make_task_scorer(f1_score, task_id=2, average="macro")) == (
        "make_task_scorer(f1_score, task_id=2, average='macro')")
