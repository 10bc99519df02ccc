"""The estimator contract, checked on every estimator of the registry.

- Notification hooks cooperate: every call of an override reaches the base hook.
- Predictions are read-only and thread-safe; training calls do not overlap.
- A call that fails, in its checks or mid-training, changes nothing.
- Predictions with a task still open are the method's own.
"""

import threading

import numpy as np
import pytest
import torch

from skcl import registry
from skcl.base import ContinualClassifier
from skcl.datasets import load_split_digits

ESTIMATORS = list(registry.classes().values())
NOTIFICATION_HOOKS = ("_initialize", "_before_task", "_after_backward", "_after_step",
                      "_after_task", "_parameters_changed")


@pytest.fixture(scope="module")
def tasks():
    stream = load_split_digits()
    return [(e.X_train[:80], e.y_train[:80], e.task_id) for e in stream[:3]]


def small(cls, **extra):
    return cls(**{**cls._unit_test_params(), "max_epochs": 2, **extra})


def train(clf, tasks, epochs=2, end=True):
    for X, y, t in tasks:
        for _ in range(epochs):
            clf.partial_fit(X, y, task_id=t)
    if end:
        clf.end_task()
    return clf


def state(clf):
    """Everything a call could change, in comparable form."""
    out = {"params": {n: p.detach().clone() for n, p in clf.network_.named_parameters()},
           "dtypes": {n: p.dtype for n, p in clf.network_.named_parameters()},
           "tasks": list(clf.tasks_seen_), "classes": clf.classes_.tolist(),
           "current": clf.current_task_, "rng": clf._rng_.bit_generator.state}
    memory = getattr(clf, "memory_", None)
    if memory is not None and hasattr(memory, "items"):
        out["memory"] = memory.items().X.clone() if len(memory) else None
    elif memory is not None:
        out["memory"] = len(memory)
    return out


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if key == "params":
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), name
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


# ------------------------------------------------------------------ hooks cooperate


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_every_hook_override_reaches_the_base_hook(cls, tasks, monkeypatch):
    calls = {hook: [0, 0] for hook in NOTIFICATION_HOOKS}  # [override calls, base calls]

    def counting(hook, index, function):
        def wrapper(self, *args, **kwargs):
            calls[hook][index] += 1
            return function(self, *args, **kwargs)
        return wrapper

    for hook in NOTIFICATION_HOOKS:
        base = getattr(ContinualClassifier, hook)
        override = getattr(cls, hook)
        monkeypatch.setattr(ContinualClassifier, hook, counting(hook, 1, base))
        if override is not base:
            monkeypatch.setattr(cls, hook, counting(hook, 0, override))
    train(small(cls), tasks[:2])
    for hook, (override, base) in calls.items():
        if override:
            assert base == override, f"{cls.__name__}.{hook} does not call super()"
    assert calls["_before_task"][1] == 2 and calls["_after_task"][1] == 2


# ------------------------------------------------------------------ predictions: read-only


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_concurrent_predictions_agree_and_change_nothing(cls, tasks):
    X = np.vstack([X for X, _, _ in tasks])
    clf = train(small(cls), tasks[:2], end=False)
    twin = train(small(cls), tasks[:2], end=False)
    before = state(clf)
    reference = twin.predict_proba(X)
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(clf.predict_proba(X))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 18
    for proba in results:
        np.testing.assert_array_equal(proba, reference)
    assert_same_state(before, state(clf))
    # Training goes on exactly as on a twin nobody predicted with.
    X3, y3, t3 = tasks[2]
    clf.partial_fit(X3, y3, task_id=t3).end_task()
    twin.partial_fit(X3, y3, task_id=t3).end_task()
    np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))


class _Paused(ContinualClassifier):
    """Naive training that, once armed, waits inside a training step for the test to go on."""

    armed = inside = go_on = None  # events, set by the test (not estimator state)

    def _after_step(self, batch, step):
        super()._after_step(batch, step)
        if self.armed.is_set() and not self.inside.is_set():
            self.inside.set()
            assert self.go_on.wait(30)


def test_predictions_during_training_read_the_state_before_the_call(tasks):
    (X0, y0, _), (X1, y1, _) = tasks[:2]
    _Paused.armed, _Paused.inside, _Paused.go_on = (threading.Event() for _ in range(3))
    clf = _Paused(**ContinualClassifier._unit_test_params())
    clf.partial_fit(X0, y0, task_id=0)
    before = clf.predict_proba(X0)
    _Paused.armed.set()
    trainer = threading.Thread(target=clf.partial_fit, args=(X1, y1), kwargs={"task_id": 1})
    trainer.start()
    try:
        assert _Paused.inside.wait(30)
        np.testing.assert_array_equal(clf.predict_proba(X0), before)
        with pytest.raises(RuntimeError, match="being trained by another thread"):
            clf.partial_fit(X0, y0, task_id=0)
    finally:
        _Paused.go_on.set()
        trainer.join()
    assert clf.tasks_seen_ == [0, 1]
    assert not np.array_equal(clf.predict_proba(X0), before)


# ------------------------------------------------------------------ failing calls change nothing


# GDumb trains lazily, from its memory: an outlier it stored makes the retraining at
# end_task diverge (that call fails and changes nothing; so does a prediction, which
# retrains) and stays in the memory.
_TRAINS_AT_CALL = [c for c in ESTIMATORS if c.__name__ != "GDumbClassifier"]


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_a_call_that_fails_mid_training_changes_nothing(cls, tasks):
    clf = train(small(cls), tasks[:1], end=False)
    X, y, _ = tasks[1]
    # Finite outliers (samples of several classes) make the loss blow up, as do weights.
    X_bad = X.copy()
    X_bad[:10, 5] = 1e30
    for bad in (dict(X=X_bad, y=y), dict(X=X, y=y, sample_weight=np.full(len(y), 1e30))):
        calls = [lambda bad=bad: clf.partial_fit(task_id=1, **bad), clf.end_task]
        for call in calls * 2:
            lazy = cls not in _TRAINS_AT_CALL and clf.current_task_ == 1
            before = state(clf)
            proba = None if lazy else clf.predict_proba(tasks[0][0])
            try:
                call()
            except FloatingPointError as exc:
                assert "diverged" in str(exc) and "max |X|" in str(exc)
                assert_same_state(before, state(clf))
                if proba is not None:
                    np.testing.assert_array_equal(clf.predict_proba(tasks[0][0]), proba)
                break
        else:
            pytest.fail(f"{cls.__name__} trained on {list(bad)} without raising")
        if cls not in _TRAINS_AT_CALL:
            return
    # The estimator goes on as if the bad calls never happened.
    twin = train(small(cls), tasks[:1], end=False)
    for model in (clf, twin):
        train(model, tasks[1:2])
    np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_fit_with_bad_input_keeps_the_trained_model(cls, tasks):
    clf = train(small(cls), tasks[:1])
    X, y, _ = tasks[0]
    proba = clf.predict_proba(X)
    for bad in (dict(X=np.where(X > 0.5, np.nan, X), y=y), dict(X=X, y=y[:-1]),
                dict(X=X, y=y, sample_weight=-np.ones(len(y))), dict(X=X, y=y, task_id=-1)):
        with pytest.raises(ValueError):
            clf.fit(**bad)
    np.testing.assert_array_equal(clf.predict_proba(X), proba)
    assert clf.n_features_in_ == X.shape[1]


def test_an_exception_inside_a_hook_restores_weights_optimizer_and_generator(tasks):
    class Failing(ContinualClassifier):
        fail = False

        def _after_step(self, batch, step):
            super()._after_step(batch, step)
            if step.batch == 2 and self.fail:
                raise RuntimeError("kernel failed")

    (X0, y0, _), (X1, y1, _) = tasks[:2]
    clf = Failing(**ContinualClassifier._unit_test_params())
    clf.partial_fit(X0, y0, task_id=0)
    assert clf._optimizer_.state
    momentum = {k: v["momentum_buffer"].clone() for k, v in clf._optimizer_.state.items()}
    before = state(clf)
    Failing.fail = True
    with pytest.raises(RuntimeError, match="kernel failed"):
        clf.partial_fit(X0, y0, task_id=0)
    assert_same_state(before, state(clf))
    restored = [v["momentum_buffer"] for v in clf._optimizer_.state.values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum.values(), restored, strict=True))
    # The optimizer still drives the network's own parameters.
    params = set(map(id, clf.network_.parameters()))
    assert {id(p) for p in clf._optimizer_.param_groups[0]["params"]} <= params


# ------------------------------------------------------------------ no end_task needed


# iCaRL's nearest-mean rule uses the open task's samples as its classes' means until
# the task ends and herding picks exemplars (tests/test_icarl.py checks that rule).
# PackNet prunes the open task's weights and retrains the rest when the task ends, a
# change of the model itself (tests/test_masks.py checks what it keeps).
# CPG grows, prunes and retrains the open task's weights when it ends (compacting and
# growing are the method; tests/test_gates.py checks that the frozen tasks never change).
_SAME_RULE_OPEN_AND_CLOSED = [c for c in ESTIMATORS
                              if c.__name__ not in ("ICaRLClassifier", "PackNetClassifier",
                                                    "CPGClassifier")]


@pytest.mark.parametrize("cls", _SAME_RULE_OPEN_AND_CLOSED, ids=lambda c: c.__name__)
def test_an_open_task_predicts_as_the_method_not_as_another_model(cls, tasks):
    """Whoever never calls end_task (the SGDClassifier loop) gets the method's predictions:
    ending the task changes no prediction (IMM merges, GDumb retrains, lazily)."""
    X = np.vstack([X for X, _, _ in tasks[:2]])
    clf = train(small(cls), tasks[:2], end=False)
    open_proba = clf.predict_proba(X)
    clf.end_task()
    np.testing.assert_array_equal(open_proba, clf.predict_proba(X))
