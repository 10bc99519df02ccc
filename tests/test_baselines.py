"""Must-show properties of the baselines (METHODS.md) on split-digits."""

import numpy as np
import pytest
import torch
from conftest import PROTOCOL

from skcl import (
    CumulativeClassifier,
    EnsembleClassifier,
    JointClassifier,
    MultiHeadClassifier,
    NaiveClassifier,
)
from skcl.evaluation import evaluate_stream


@pytest.fixture(scope="module")
def class_results(stream):
    return {
        cls.__name__: evaluate_stream(cls(**PROTOCOL), stream, scenario="class", epochs=5)
        for cls in (NaiveClassifier, JointClassifier, CumulativeClassifier, EnsembleClassifier,
                    MultiHeadClassifier)
    }


@pytest.mark.slow
def test_naive_forgets_in_class_incremental(class_results):
    naive = class_results["NaiveClassifier"]
    assert naive.bwt < -0.5
    assert naive.R[0, 0] > 0.95 and naive.R[-1, 0] < 0.2


@pytest.mark.slow
def test_joint_is_the_upper_bound(class_results):
    joint = class_results["JointClassifier"]
    assert joint.acc > 0.9
    for name, result in class_results.items():
        assert joint.acc >= result.acc - 0.02, name


@pytest.mark.slow
def test_cumulative_is_close_to_joint(class_results):
    assert abs(class_results["CumulativeClassifier"].acc
               - class_results["JointClassifier"].acc) < 0.04
    assert class_results["CumulativeClassifier"].acc > class_results["NaiveClassifier"].acc + 0.5


def test_joint_stores_each_call_once_and_retrains_from_scratch(stream):
    exp = stream[0]
    clf = JointClassifier(**{**PROTOCOL, "max_epochs": 1})
    clf.partial_fit(exp.X_train, exp.y_train, task_id=0)
    after_first = [p.detach().clone() for p in clf.network_.parameters()]
    clf.partial_fit(exp.X_train, exp.y_train, task_id=0)
    assert len(clf.memory_) == len(exp.y_train)
    params = list(clf.network_.parameters())
    assert all(torch.equal(a, b) for a, b in zip(after_first, params, strict=True))
    clf.partial_fit(stream[1].X_train, stream[1].y_train, task_id=1)
    assert len(clf.memory_) == len(exp.y_train) + len(stream[1].y_train)


@pytest.mark.slow
def test_ensemble_has_zero_forgetting_in_task_incremental(stream):
    result = evaluate_stream(EnsembleClassifier(**PROTOCOL), stream, scenario="task", epochs=2)
    assert result.bwt == 0.0
    np.testing.assert_array_equal(result.R[-1], np.diag(result.R))
    assert result.acc > 0.95


def test_ensemble_trains_only_the_current_tasks_model(stream):
    clf = EnsembleClassifier(**PROTOCOL)
    clf.partial_fit(stream[0].X_train, stream[0].y_train, task_id=0)
    before = {k: v.clone() for k, v in clf.network_.state_dict().items() if ".0." in k}
    clf.partial_fit(stream[1].X_train, stream[1].y_train, task_id=1)
    after = clf.network_.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert set(clf.predict(stream[0].X_test)) <= set(range(4))


def test_multihead_task_routing_uses_only_the_tasks_head(stream):
    clf = MultiHeadClassifier(**PROTOCOL)
    for exp in stream:
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    X = stream[0].X_test
    before = clf.predict_proba(X, task_id=0)
    with torch.no_grad():
        for key, head in clf.network_.heads.items():
            if key != "0":
                head.weight.mul_(-3.0).add_(1.0)
    np.testing.assert_array_equal(clf.predict_proba(X, task_id=0), before)
    with torch.no_grad():
        clf.network_.heads["0"].weight.mul_(-1.0)
    assert not np.array_equal(clf.predict_proba(X, task_id=0), before)
    assert set(clf.predict(X)) <= set(range(10))
