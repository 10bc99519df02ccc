"""Task-free streams: skcl.taskfree finds the boundaries, through river's learn_one too."""

import numpy as np
import pytest
from river import compat
from river import stream as river_stream
from sklearn.utils.estimator_checks import parametrize_with_checks

from skcl import EWCClassifier, ICaRLClassifier, NaiveClassifier, ReplayClassifier
from skcl.datasets import load_permuted_digits, load_split_digits
from skcl.taskfree import TaskFreeClassifier

NET = dict(hidden_layer_sizes=(64,), device="cpu", random_state=0)


def _concatenated(stream, n_per_task):
    X = np.vstack([e.X_train[:n_per_task] for e in stream])
    y = np.concatenate([e.y_train[:n_per_task] for e in stream])
    X_test = np.vstack([e.X_test for e in stream])
    y_test = np.concatenate([e.y_test for e in stream])
    return X, y, X_test, y_test


def _through_river(estimator, X, y):
    """learn_one over the stream, as river users do; returns the trained skcl estimator."""
    model = compat.convert_sklearn_to_river(estimator, classes=sorted(np.unique(y).tolist()))
    for x, label in river_stream.iter_array(X, y):
        model.learn_one(x, label)
    return model.estimator


@pytest.fixture(scope="module")
def split():
    return _concatenated(load_split_digits(), 120)


@pytest.fixture(scope="module")
def permuted():
    return _concatenated(load_permuted_digits(n_experiences=2), 600)


@pytest.fixture(scope="module")
def naive_split(split):
    X, y, X_test, y_test = split
    return _through_river(NaiveClassifier(**NET), X, y).score(X_test, y_test)


@pytest.mark.slow
@pytest.mark.parametrize("method", [ReplayClassifier(policy="class_balanced", **NET),
                                    ICaRLClassifier(**NET)], ids=["replay", "icarl"])
def test_rehearsal_through_river_without_task_ids_beats_naive(method, split, naive_split):
    X, y, X_test, y_test = split
    clf = _through_river(TaskFreeClassifier(method, boundary="labels", min_task_size=60), X, y)
    assert clf.boundaries_ == [120, 240, 360, 480]  # every new pair of digits, at once
    assert clf.score(X_test, y_test) > naive_split + 0.3


@pytest.mark.slow
def test_ewc_through_river_finds_domain_shifts_by_the_loss_and_beats_naive(permuted):
    X, y, X_test, y_test = permuted
    net = {**NET, "learning_rate": 0.01}  # one sample a step: momentum 0.9 at 0.05 diverges
    naive = _through_river(NaiveClassifier(**net), X, y).score(X_test, y_test)
    clf = _through_river(TaskFreeClassifier(EWCClassifier(**net), boundary="loss"), X, y)
    assert len(clf.boundaries_) == 1
    assert 600 <= clf.boundaries_[0] <= 650  # within one loss window of the shift
    assert clf.estimator_.tasks_seen_ == [0, 1]
    assert clf.score(X_test, y_test) > naive + 0.05


def test_policies_number_the_tasks():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2, 3], 30)
    X = rng.normal(size=(120, 4)) + y[:, None]
    small = NaiveClassifier(hidden_layer_sizes=(8,), device="cpu", random_state=0)
    fits = {}
    for boundary in ("none", 40, "labels"):
        clf = TaskFreeClassifier(small, boundary=boundary, min_task_size=25)
        for start in range(0, 120, 10):
            clf.partial_fit(X[start:start + 10], y[start:start + 10])
        fits[boundary] = clf
    assert fits["none"].boundaries_ == [] and fits["none"].estimator_.tasks_seen_ == [0]
    assert fits[40].boundaries_ == [40, 80]
    assert fits["labels"].boundaries_ == [30, 60, 90]
    assert fits["labels"].estimator_.tasks_seen_ == [0, 1, 2, 3]
    # A boundary closed the task before it: its end-of-task work ran.
    assert fits["labels"].estimator_.current_task_ == 3


def test_labels_wait_for_min_task_size():
    y = np.array([0, 1] * 5 + [2, 3] * 5)
    X = np.random.default_rng(0).normal(size=(20, 3))
    clf = TaskFreeClassifier(NaiveClassifier(hidden_layer_sizes=(4,), device="cpu",
                                             random_state=0), min_task_size=50)
    for start in range(0, 20, 5):
        clf.partial_fit(X[start:start + 5], y[start:start + 5])
    assert clf.boundaries_ == []


@parametrize_with_checks(
    [TaskFreeClassifier(NaiveClassifier(**NaiveClassifier._unit_test_params()), window=16)],
    expected_failed_checks=lambda est: {
        "check_sample_weight_equivalence_on_dense_data": (
            "mini-batch SGD, as for every skcl estimator (see test_sklearn_checks.py)")},
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
