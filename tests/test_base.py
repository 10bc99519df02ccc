"""The estimator contract of ContinualClassifier (DESIGN.md), on NaiveClassifier."""

import io
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from skcl import ContinualClassifier, NaiveClassifier, registry

SMALL = dict(hidden_layer_sizes=(16,), batch_size=8, random_state=0, device="cpu")


def blobs(n=60, n_features=5, labels=(0, 1), seed=0, shift=3.0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(labels), n // len(labels))
    X = rng.normal(size=(len(y), n_features)).astype(np.float32)
    codes = np.searchsorted(np.unique(labels), y)
    X[:, 0] += shift * codes
    X[:, 1] -= shift * codes
    return X, y


class Recorder(NaiveClassifier):
    """Records every hook call in order."""

    def _initialize(self):
        self.calls_ = []

    def _before_task(self, task):
        self.calls_.append(("before_task", task))

    def _training_batch(self, batch, step):
        self.calls_.append(("batch", batch.X.shape[0]))
        return batch

    def _penalty(self):
        self.calls_.append(("penalty",))
        return None

    def _after_backward(self, batch, step):
        self.calls_.append(("after_backward",))

    def _after_step(self, batch, step):
        self.calls_.append(("after_step",))

    def _after_task(self, task):
        self.calls_.append(("after_task", task))


def test_partial_fit_is_one_epoch_and_runs_hooks_in_order():
    X, y = blobs(n=20)
    clf = Recorder(**SMALL).partial_fit(X, y, task_id=0)
    batches = [c for c in clf.calls_ if c[0] == "batch"]
    assert [b[1] for b in batches] == [8, 8, 4]
    assert clf.calls_[0] == ("before_task", 0)
    assert clf.calls_[1:5] == [("batch", 8), ("penalty",), ("after_backward",), ("after_step",)]
    clf.partial_fit(X, y, task_id=0)
    assert clf.calls_.count(("before_task", 0)) == 1
    clf.partial_fit(X, y + 2, task_id=1)
    tasks = [c for c in clf.calls_ if c[0] in ("before_task", "after_task")]
    assert tasks == [("before_task", 0), ("after_task", 0), ("before_task", 1)]
    clf.end_task().end_task()
    assert clf.calls_[-1] == ("after_task", 1)
    assert clf.current_task_ is None


def test_per_sample_task_ids_are_learned_task_by_task_in_order_of_appearance():
    X, y = blobs(n=20)
    task_id = np.array([3] * 10 + [1] * 10)
    clf = Recorder(**SMALL).partial_fit(X, y, task_id=task_id)
    tasks = [c for c in clf.calls_ if c[0] in ("before_task", "after_task")]
    assert tasks == [("before_task", 3), ("after_task", 3), ("before_task", 1)]
    assert clf.tasks_seen_ == [3, 1]


def test_fit_trains_max_epochs_per_task_and_closes_them():
    X, y = blobs(n=16)
    clf = Recorder(max_epochs=3, **SMALL).fit(X, y, task_id=np.repeat([0, 1], 8))
    assert sum(c[0] == "batch" for c in clf.calls_) == 2 * 3
    assert clf.calls_[-1] == ("after_task", 1)
    clf.fit(X, y)
    assert clf.tasks_seen_ == [0]


class WhatTheHooksSee(NaiveClassifier):
    """Records, at the start and the end of each task, the classes, tasks and output units."""

    def _initialize(self):
        self.seen_ = []

    def _view(self, hook, task):
        self.seen_.append((hook, task, self.network_.n_units, len(self.output_units_),
                           self.classes_.tolist(), list(self.tasks_seen_)))

    def _before_task(self, task):
        self._view("before_task", task)

    def _after_task(self, task):
        self._view("after_task", task)


def _two_tasks():
    X0, y0 = blobs(n=20, labels=(0, 1))
    X1, y1 = blobs(n=20, labels=(2, 3), seed=1)
    return X0, y0, X1, y1


@pytest.mark.parametrize("how", ["partial_fit", "per-sample-task-ids", "fit"])
def test_a_new_task_closes_the_open_one_before_adding_its_classes_and_units(how):
    """End-of-task work sees the network as the closing task trained it: none of the next
    task's classes, tasks or output units; the next task's _before_task sees them all."""
    X0, y0, X1, y1 = _two_tasks()
    clf = WhatTheHooksSee(**SMALL)
    if how == "partial_fit":
        clf.partial_fit(X0, y0, task_id=0).partial_fit(X1, y1, task_id=1)
    else:
        X, y, task_id = np.vstack([X0, X1]), np.concatenate([y0, y1]), np.repeat([0, 1], 20)
        getattr(clf, "fit" if how == "fit" else "partial_fit")(X, y, task_id=task_id)
    assert clf.seen_[:3] == [
        ("before_task", 0, 2, 2, [0, 1], [0]),
        ("after_task", 0, 2, 2, [0, 1], [0]),
        ("before_task", 1, 4, 4, [0, 1, 2, 3], [0, 1]),
    ]


def test_fit_with_task_ids_equals_partial_fit_task_by_task():
    X0, y0, X1, y1 = _two_tasks()
    by_fit = NaiveClassifier(max_epochs=2, **SMALL).fit(
        np.vstack([X0, X1]), np.concatenate([y0, y1]), task_id=np.repeat([0, 1], 20))
    by_calls = NaiveClassifier(**SMALL)
    for task, (X, y) in enumerate([(X0, y0), (X1, y1)]):
        by_calls.partial_fit(X, y, task_id=task).partial_fit(X, y, task_id=task).end_task()
    np.testing.assert_array_equal(by_fit.predict_proba(X1), by_calls.predict_proba(X1))


def _state(clf):
    return (
        {n: p.detach().clone() for n, p in clf.network_.named_parameters()},
        clf.classes_.tolist(), list(clf.tasks_seen_),
        {t: c.tolist() for t, c in clf.task_classes_.items()}, clf.current_task_,
        clf.output_units_.fixed, dict(clf.output_units_.unit),
        None if clf._optimizer_ is None else str(clf._optimizer_.state_dict()),
        clf._rng_.bit_generator.state,
        list(clf.seen_),
    )


@pytest.mark.parametrize("fixed", [False, True])
def test_a_bad_call_raises_and_changes_nothing_not_even_the_open_task(fixed):
    X0, y0, X1, y1 = _two_tasks()
    clf = WhatTheHooksSee(**SMALL)
    clf.partial_fit(X0, y0, task_id=0, classes=[0, 1, 2, 3] if fixed else None)
    before = _state(clf)
    bad_calls = [
        dict(X=X1[:, :3], y=y1),                                    # features
        dict(X=np.where(X1 > 1, np.nan, X1), y=y1),                 # NaN
        dict(X=X1, y=y1, sample_weight=-np.ones(20)),               # negative weights
        dict(X=X1, y=y1.astype(str)),                               # strings after numbers
        dict(X=X1, y=y1, classes=[0, 1]),                           # y outside `classes`
        dict(X=X1, y=y1, task_id=np.repeat([1, 2], 5)),             # task ids of wrong length
        dict(X=X1, y=y1 + 0.5),                                     # continuous target
    ]
    if fixed:
        bad_calls.append(dict(X=X1, y=y1 + 7))                      # outside the fixed classes
    for kwargs in bad_calls:
        kwargs = {"task_id": 1, **kwargs}
        with pytest.raises(ValueError):
            clf.partial_fit(**kwargs)
        after = _state(clf)
        for a, b in zip(after[0].values(), before[0].values(), strict=True):
            assert torch.equal(a, b), kwargs
        assert after[1:] == before[1:], kwargs
    assert clf.current_task_ == 0 and [s[0] for s in clf.seen_] == ["before_task"]


def test_a_bad_first_call_leaves_the_estimator_unfitted():
    X, y = blobs(labels=(0, 1, 2))
    clf = NaiveClassifier(**SMALL)
    with pytest.raises(ValueError, match="outside the fixed class set"):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(NotFittedError):
        clf.predict(X)
    clf.partial_fit(X, y)
    assert clf.classes_.tolist() == [0, 1, 2]


def test_output_layer_grows_with_unseen_classes_and_keeps_old_units():
    X, y = blobs(labels=(0, 1))
    clf = NaiveClassifier(**SMALL).partial_fit(X, y)
    head = clf.network_.head
    old = head.weight.detach().clone()
    assert head.out_features == 2
    X2, y2 = blobs(labels=(7, 5), seed=1)
    clf.partial_fit(X2, y2, task_id=1)
    assert clf.network_.head.out_features == 4
    assert clf.classes_.tolist() == [0, 1, 5, 7]
    assert clf.predict_proba(X2).shape == (len(X2), 4)
    assert set(clf.predict(X2)) <= {0, 1, 5, 7}
    assert not torch.equal(clf.network_.head.weight[:2], old)  # trained, not rebuilt


def test_classes_argument_fixes_the_class_set():
    X, y = blobs(labels=(0, 1))
    clf = NaiveClassifier(**SMALL).partial_fit(X, y, classes=[0, 1, 2, 3])
    assert clf.network_.head.out_features == 4
    assert clf.classes_.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="outside the fixed class set"):
        clf.partial_fit(X, np.where(y == 1, 9, y))
    with pytest.raises(ValueError, match="not the class set fixed"):
        clf.partial_fit(X, y, classes=[0, 1])
    clf.partial_fit(X, y + 2, task_id=1, classes=[0, 1, 2, 3])
    assert clf.network_.head.out_features == 4


def test_task_incremental_prediction_uses_only_the_tasks_classes():
    X0, y0 = blobs(labels=(0, 1))
    X1, y1 = blobs(labels=(2, 3), seed=1)
    clf = NaiveClassifier(max_epochs=3, **SMALL)
    clf.fit(np.vstack([X0, X1]), np.concatenate([y0, y1]),
            task_id=np.repeat([0, 1], [len(y0), len(y1)]))
    assert set(clf.predict(X1, task_id=0)) <= {0, 1}
    proba = clf.predict_proba(X1, task_id=0)
    np.testing.assert_allclose(proba[:, 2:], 0.0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert np.isneginf(clf.decision_function(X1, task_id=1)[:, :2]).all()
    per_sample = clf.predict(np.vstack([X0, X1]), task_id=np.repeat([0, 1], [len(y0), len(y1)]))
    assert set(per_sample[: len(y0)]) <= {0, 1} and set(per_sample[len(y0):]) <= {2, 3}
    assert clf.score(X1, y1, task_id=1) >= clf.score(X1, y1)


def test_string_labels():
    X, y = blobs(labels=("cat", "dog"))
    clf = NaiveClassifier(max_epochs=5, **SMALL).fit(X, y)
    assert clf.classes_.tolist() == ["cat", "dog"]
    assert set(clf.predict(X)) <= {"cat", "dog"}
    assert clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match=r"y holds numbers \[0, 1\], but the classes are strings"):
        clf.partial_fit(X, np.arange(len(y)) % 2, task_id=1)


def test_decision_function_binary_is_one_column_difference():
    X, y = blobs()
    clf = NaiveClassifier(**SMALL).fit(X, y)
    proba = clf.predict_proba(X)
    d = clf.decision_function(X)
    assert d.shape == (len(X),)
    np.testing.assert_array_equal(d > 0, proba[:, 1] > 0.5)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-6)


def test_same_random_state_same_predictions_other_seed_differs():
    X, y = blobs(n=60, labels=(0, 1, 2))
    a = NaiveClassifier(**{**SMALL, "random_state": 3}).fit(X, y)
    b = NaiveClassifier(**{**SMALL, "random_state": 3}).fit(X, y)
    c = NaiveClassifier(**{**SMALL, "random_state": 4}).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_state_survives_pickle_and_joblib(dump):
    X, y = blobs(labels=(0, 1, 2))
    clf = NaiveClassifier(**SMALL).partial_fit(X, y, task_id=0)
    if dump == "pickle":
        restored = pickle.loads(pickle.dumps(clf))
    else:
        buffer = io.BytesIO()
        joblib.dump(clf, buffer)
        buffer.seek(0)
        restored = joblib.load(buffer)
    np.testing.assert_array_equal(clf.predict_proba(X), restored.predict_proba(X))
    # Training goes on identically: optimizer state and random generator came along.
    clf.partial_fit(X, y, task_id=0)
    restored.partial_fit(X, y, task_id=0)
    np.testing.assert_array_equal(clf.predict_proba(X), restored.predict_proba(X))


def test_sample_weight_of_ones_equals_none_and_weights_matter():
    X, y = blobs(labels=(0, 1))
    plain = NaiveClassifier(**SMALL).fit(X, y)
    ones = NaiveClassifier(**SMALL).fit(X, y, sample_weight=np.ones(len(y)))
    skewed = NaiveClassifier(**SMALL).fit(X, y, sample_weight=np.where(y == 0, 5.0, 0.1))
    np.testing.assert_array_equal(plain.predict_proba(X), ones.predict_proba(X))
    assert skewed.predict_proba(X)[:, 0].mean() > plain.predict_proba(X)[:, 0].mean()


def test_adam_optimizer_and_custom_backbone():
    X, y = blobs(labels=(0, 1, 2))

    def backbone(n_features):
        return torch.nn.Sequential(torch.nn.Linear(n_features, 12), torch.nn.Tanh())

    clf = NaiveClassifier(backbone=backbone, optimizer="adam", learning_rate=0.01,
                          max_epochs=10, **SMALL).fit(X, y)
    assert isinstance(clf.network_.trunk[1], torch.nn.Tanh)
    assert clf.network_.head.in_features == 12
    assert clf.score(X, y) > 0.9
    with pytest.raises(TypeError, match="must return a torch.nn.Module"):
        NaiveClassifier(backbone=lambda n: "not a module").fit(X, y)


def test_device_auto_resolves_and_unavailable_cuda_is_refused():
    X, y = blobs()
    clf = NaiveClassifier(**{**SMALL, "device": "auto"}).fit(X, y)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert clf.device_.type == expected
    assert next(clf.network_.parameters()).device.type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            NaiveClassifier(device="cuda").fit(X, y)
    with pytest.raises(ValueError, match="device must be"):
        NaiveClassifier(device="tpu").fit(X, y)


def test_verbose_shows_progress_bars(capsys):
    X, y = blobs()
    NaiveClassifier(verbose=1, **SMALL).partial_fit(X, y, task_id=2)
    assert "task 2" in capsys.readouterr().err


def test_divergence_raises_instead_of_predicting_garbage():
    X, y = blobs()
    X = X * 1e18
    with pytest.raises(FloatingPointError, match="diverged"):
        NaiveClassifier(learning_rate=1e6, **{**SMALL, "batch_size": 60}).fit(X, y)


class _Bad:
    pass


@pytest.mark.parametrize(
    "X_bad, match",
    [
        (np.array([[np.nan, 1.0, 0, 0, 0]] * 4), "NaN"),
        (np.array([[np.inf, 1.0, 0, 0, 0]] * 4), "infinity"),
        (np.zeros((0, 5)), "0 sample"),
        (np.zeros(4), "Expected 2D array"),
    ],
    ids=["nan", "inf", "empty", "1d"],
)
def test_bad_inputs_raise_clear_errors(X_bad, match):
    y = np.arange(len(X_bad)) % 2 if X_bad.ndim == 2 else np.arange(4) % 2
    with pytest.raises(ValueError, match=match):
        NaiveClassifier(**SMALL).partial_fit(X_bad, y)
    X, y_ok = blobs()
    clf = NaiveClassifier(**SMALL).fit(X, y_ok)
    with pytest.raises(ValueError, match=match):
        clf.predict(X_bad)


def test_wrong_number_of_features():
    X, y = blobs(n_features=5)
    clf = NaiveClassifier(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but NaiveClassifier is expecting 5"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="X has 3 features"):
        clf.partial_fit(X[:, :3], y)


@pytest.mark.parametrize(
    "task_id, match",
    [
        (-1, "non-negative"),
        (1.5, "non-negative integer"),
        ("a", "non-negative integer"),
        (True, "boolean"),
        (np.array([0, 1]), "classes="),
        (np.full(60, 0.5), "dtype float64"),
        (np.full(60, -2), "non-negative"),
    ],
    ids=["negative", "float", "string", "bool", "wrong-length", "float-array", "negative-array"],
)
def test_bad_task_ids(task_id, match):
    X, y = blobs()
    with pytest.raises(ValueError, match=match):
        NaiveClassifier(**SMALL).partial_fit(X, y, task_id=task_id)


def test_sgdclassifier_style_classes_as_third_argument_is_explained():
    X, y = blobs()
    with pytest.raises(ValueError, match="pass it by name: partial_fit\\(X, y, classes=...\\)"):
        NaiveClassifier(**SMALL).partial_fit(X, y, np.unique(y))


def test_predict_before_fit_and_unknown_task():
    X, y = blobs()
    with pytest.raises(NotFittedError):
        NaiveClassifier().predict(X)
    with pytest.raises(NotFittedError):
        NaiveClassifier().end_task()
    clf = NaiveClassifier(**SMALL).partial_fit(X, y, task_id=4)
    with pytest.raises(ValueError, match="task_id \\[0\\] was never seen; tasks seen: \\[4\\]"):
        clf.predict(X, task_id=0)


def test_unseen_continuous_target_is_rejected():
    X, _ = blobs()
    with pytest.raises(ValueError, match="Unknown label type"):
        NaiveClassifier(**SMALL).fit(X, np.linspace(0, 1, len(X)))


@pytest.mark.parametrize("cls", list(registry.classes().values()), ids=lambda c: c.__name__)
def test_hooks_are_the_only_thing_a_method_overrides(cls):
    own = {"partial_fit", "fit", "end_task", "predict", "predict_proba", "predict_log_proba",
           "decision_function", "score", "_run_epoch", "_train_phase", "_scores"}
    overridden = {name for klass in cls.__mro__[:cls.__mro__.index(ContinualClassifier)]
                  for name in vars(klass)}
    assert not own & overridden


def test_task_id_is_requested_through_metadata_routing():
    routing = NaiveClassifier().get_metadata_routing()
    assert routing.fit.requests["task_id"] is True
    assert routing.partial_fit.requests["task_id"] is True
