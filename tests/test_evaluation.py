"""evaluate_stream with stand-in estimators whose accuracies are known by construction."""

import json
import math
import random
import types

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import SGDClassifier

from skcl import evaluation
from skcl.datasets import Experience, TaskStream, load_split_digits, make_split_stream
from skcl.evaluation import StreamResult, evaluate_stream, format_matrix, format_table


class UnregisteredFake(BaseEstimator, ClassifierMixin):
    """A skcl-style stand-in that remembers the classes of its last ``capacity`` tasks.

    Per test sample: 1 if its class belongs to a remembered task, 0 if to a trained
    but forgotten one, ``guess + transfer * n_tasks_trained`` if it was only
    registered (seen by ``partial_fit`` or ``_register`` but not closed by
    ``end_task``), 0 otherwise. Every call is logged. It has no ``_register``, so
    evaluation falls back to guessing for the baseline.
    """

    def __init__(self, capacity=2, guess=0.25, transfer=0.1, max_epochs=3, train_sleep=0.0,
                 score_sleep=0.0, score_draws=False):
        self.capacity = capacity
        self.guess = guess
        self.transfer = transfer
        self.max_epochs = max_epochs
        self.train_sleep = train_sleep
        self.score_sleep = score_sleep
        self.score_draws = score_draws

    def _ensure_state(self):
        if not hasattr(self, "log_"):
            self.log_, self.scored_, self.trained_, self.task_classes_ = [], [], [], {}
            self.current_ = None

    def partial_fit(self, X, y, task_id=0, classes=None):
        self._ensure_state()
        CLOCK[0] += self.train_sleep
        self.log_.append(("fit", task_id, len(y)))
        self.task_classes_.setdefault(task_id, set()).update(np.unique(y).tolist())
        self.current_ = task_id
        return self

    def end_task(self):
        self.log_.append(("end", self.current_))
        self.trained_.append(self.current_)
        return self

    def _sample_scores(self, y):
        remembered = set().union(*(self.task_classes_[t] for t in self.trained_[-self.capacity:]))
        trained = set().union(*(self.task_classes_[t] for t in self.trained_))
        registered = set().union(*self.task_classes_.values())
        partial = self.guess + self.transfer * len(self.trained_)
        return [1.0 if c in remembered else 0.0 if c in trained
                else partial if c in registered else 0.0 for c in y.tolist()]

    def score(self, X, y, task_id=None):
        self._ensure_state()
        CLOCK[0] += self.score_sleep
        if self.score_draws:
            random.random()
        self.scored_.append(task_id)
        return float(np.mean(self._sample_scores(y)))


# The fakes' clock: their training and scoring advance it instead of sleeping.
CLOCK = [0.0]


class MemoryFake(UnregisteredFake):
    """The same stand-in with skcl's ``_register``: classes and task known, nothing trained."""

    def _register(self, X, y, task_id=0, classes=None):
        self._ensure_state()
        self.log_.append(("register", task_id))
        self.task_classes_.setdefault(task_id, set()).update(np.unique(y).tolist())
        return self


class PlainFake(BaseEstimator, ClassifierMixin):
    """A plain scikit-learn-style classifier (no task_id) reading the label from X[:, 0].

    Its scores favour the last class everywhere, so its own predictions are
    always that class, while the best score among any set of classes without
    the last one is the true label.
    """

    def partial_fit(self, X, y, classes=None):
        self.classes_ = np.asarray(classes)
        self.n_calls_ = getattr(self, "n_calls_", 0) + 1
        return self

    def _scores(self, X):
        scores = (self.classes_[None, :] == X[:, [0]]).astype(float)
        scores[:, -1] += 2.0
        return scores

    def predict(self, X):
        return self.classes_[np.argmax(self._scores(X), axis=1)]


class DecisionFake(PlainFake):
    def decision_function(self, X):
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if len(self.classes_) == 2 else scores


class ProbaFake(PlainFake):
    def predict_proba(self, X):
        scores = np.exp(self._scores(X))
        return scores / scores.sum(axis=1, keepdims=True)


def _labelled_stream(n_classes=8, classes_per_task=2, per_class=10, task_classes=None):
    """A stream whose first feature is the label."""
    y = np.repeat(np.arange(n_classes), per_class)
    X = np.column_stack([y, np.random.default_rng(0).normal(size=len(y))])
    return make_split_stream(X, y, classes_per_task=classes_per_task, task_classes=task_classes,
                             name="toy")


# R[i, j] of MemoryFake(capacity=2, guess=0.25, transfer=0.1) on 4 two-class tasks, by
# construction: trained tasks i-1 and i are remembered (1), older ones forgotten (0), and a
# task j > i is only registered (on a copy) and scores 0.25 + 0.1 * (i + 1).
EXPECTED_R = np.array([
    [1.0, 0.35, 0.35, 0.35],
    [1.0, 1.0, 0.45, 0.45],
    [0.0, 1.0, 1.0, 0.55],
    [0.0, 0.0, 1.0, 1.0],
])


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_accuracy_matrix_and_metrics_by_construction(scenario):
    fake = MemoryFake()
    result = evaluate_stream(fake, _labelled_stream(), scenario=scenario)
    np.testing.assert_allclose(result.R, EXPECTED_R)
    np.testing.assert_allclose(result.b, [0.25] * 4)  # untrained clone, all registered
    assert result.acc == pytest.approx(0.5)  # (0 + 0 + 1 + 1) / 4
    assert result.bwt == pytest.approx(-2 / 3)  # ((0-1) + (0-1) + (1-1)) / 3
    assert result.fwt == pytest.approx(0.2)  # ((.35-.25) + (.45-.25) + (.55-.25)) / 3
    np.testing.assert_allclose(result.forgetting, [1.0, 1.0, 0.0])
    assert (result.estimator, result.stream, result.scenario) == ("MemoryFake", "toy", scenario)
    # The estimator itself is scored on the experiences it has trained, with the task id
    # only in the task scenario; later experiences are scored on registered copies.
    expected_ids = [j for i in range(4) for j in range(i + 1)]
    assert fake.scored_ == (expected_ids if scenario == "task" else [None] * len(expected_ids))


def test_training_calls_epochs_and_end_task():
    fake = MemoryFake(max_epochs=3)
    stream = _labelled_stream()
    result = evaluate_stream(fake, stream)
    assert result.epochs == 3
    expected = []
    for exp in stream:
        expected += [("fit", exp.task_id, len(exp.y_train))] * 3 + [("end", exp.task_id)]
    assert fake.log_ == expected  # no _register on the trained estimator itself
    fake = MemoryFake(max_epochs=3)
    assert evaluate_stream(fake, stream, epochs=1).epochs == 1
    assert [entry[0] for entry in fake.log_].count("fit") == 4


def test_baseline_without_register_is_uniform_guess():
    stream = _labelled_stream()
    assert np.allclose(evaluate_stream(UnregisteredFake(), stream, "class").b, 1 / 8)
    result = evaluate_stream(UnregisteredFake(), stream, "task")
    np.testing.assert_allclose(result.b, 1 / 2)
    # Without registration a future task is unknown to the fake: 0 above the diagonal.
    assert np.all(result.R[np.triu_indices(4, 1)] == 0.0)
    assert result.fwt == pytest.approx(-0.5)


@pytest.mark.parametrize("plain", [DecisionFake, ProbaFake])
def test_plain_estimators_restricted_to_the_task_classes(plain):
    stream = _labelled_stream(n_classes=6)
    estimator = plain()
    result = evaluate_stream(estimator, stream, scenario="task")
    assert estimator.n_calls_ == 3 and result.epochs == 1
    np.testing.assert_array_equal(estimator.classes_, np.arange(6))
    # Within tasks (0, 1) and (2, 3) the true label wins; in (4, 5) class 5 always wins.
    np.testing.assert_array_equal(result.R, [[1, 1, 0.5]] * 3)
    np.testing.assert_allclose(result.b, 1 / 2)
    # Class-incremental: always the last class, i.e. half of the last task.
    result = evaluate_stream(plain(), stream, scenario="class")
    np.testing.assert_array_equal(result.R, [[0, 0, 0.5]] * 3)
    np.testing.assert_allclose(result.b, 1 / 6)


def test_plain_binary_decision_function():
    stream = _labelled_stream(n_classes=2, task_classes=[(0,), (1,)])
    task = evaluate_stream(DecisionFake(), stream, scenario="task")
    np.testing.assert_array_equal(task.R, np.ones((2, 2)))
    np.testing.assert_allclose(task.b, 1.0)
    np.testing.assert_array_equal(evaluate_stream(DecisionFake(), stream).R, [[0, 1], [0, 1]])


def test_plain_estimator_needs_scores_for_task_scenario():
    with pytest.raises(ValueError, match="decision_function nor predict_proba"):
        evaluate_stream(PlainFake(), _labelled_stream(n_classes=4), scenario="task")


def test_training_time_excludes_evaluation(monkeypatch):
    """On a fake clock that only the fake's training (10 ms a call) and scoring (100 ms a
    call) advance, the seconds recorded are exactly the training's."""
    monkeypatch.setattr(evaluation, "time", types.SimpleNamespace(perf_counter=lambda: CLOCK[0]))
    stream = _labelled_stream(n_classes=4)
    fake = MemoryFake(max_epochs=2, train_sleep=0.01, score_sleep=0.1)
    start = CLOCK[0]
    result = evaluate_stream(fake, stream)
    # Each experience trains 2 x 10 ms and is scored 2 x 100 ms (2 more scores for b).
    assert CLOCK[0] - start == pytest.approx(0.04 + 0.6)
    np.testing.assert_allclose(result.experience_seconds, [0.02, 0.02])
    assert result.train_seconds == pytest.approx(0.04)


def test_evaluation_leaves_global_random_state_alone():
    state = random.getstate()
    evaluate_stream(MemoryFake(max_epochs=1, score_draws=True), _labelled_stream(n_classes=4))
    assert random.getstate() == state


def test_invalid_arguments():
    stream = _labelled_stream(n_classes=4)
    with pytest.raises(ValueError, match="scenario must be one of"):
        evaluate_stream(MemoryFake(), stream, scenario="online")
    with pytest.raises(ValueError, match="epochs"):
        evaluate_stream(MemoryFake(), stream, epochs=0)
    with pytest.raises(ValueError, match="partial_fit"):
        evaluate_stream(object(), stream)
    with pytest.raises(ValueError, match="TaskStream"):
        evaluate_stream(MemoryFake(), list(stream))
    same_task = TaskStream(
        [Experience(e.X_train, e.y_train, e.X_test, e.y_test, 0, e.classes) for e in stream],
        name="one-id",
    )
    with pytest.raises(ValueError, match="distinct task id"):
        evaluate_stream(MemoryFake(), same_task, scenario="task")
    evaluate_stream(MemoryFake(), same_task, scenario="class")


def test_default_scenario_comes_from_the_stream():
    stream = _labelled_stream(n_classes=4)
    domain = TaskStream(list(stream), name="d", default_scenario="domain")
    assert evaluate_stream(MemoryFake(), domain).scenario == "domain"
    assert evaluate_stream(MemoryFake(), stream).scenario == "class"


def test_verbose_shows_a_progress_bar(capsys):
    evaluate_stream(MemoryFake(max_epochs=1), _labelled_stream(n_classes=4), verbose=1)
    assert "MemoryFake on toy" in capsys.readouterr().err


@pytest.fixture(scope="module")
def sgd_result():
    return evaluate_stream(SGDClassifier(random_state=0), load_split_digits())


def test_sgd_on_split_digits(sgd_result):
    R = sgd_result.R
    assert R.shape == (5, 5) and sgd_result.scenario == "class" and sgd_result.epochs == 1
    assert np.all((R >= 0) & (R <= 1)) and np.all(np.isfinite(R[-1]))
    np.testing.assert_allclose(sgd_result.b, 0.1)
    assert R[-1, -1] > 0.5  # the last task is learned
    assert sgd_result.train_seconds > 0
    assert np.isfinite([sgd_result.acc, sgd_result.bwt, sgd_result.fwt]).all()


def test_sgd_task_scenario_on_split_digits():
    result = evaluate_stream(SGDClassifier(random_state=0), load_split_digits(), "task")
    assert result.R.diagonal().min() > 0.9
    np.testing.assert_allclose(result.b, 0.5)


def test_json_round_trip(sgd_result, tmp_path):
    path = tmp_path / "result.json"
    text = sgd_result.to_json(path)
    assert json.loads(path.read_text()) == json.loads(text)
    for again in (StreamResult.from_json(path), StreamResult.from_json(text),
                  StreamResult.from_json(str(path))):
        for name in ("R", "b", "forgetting", "experience_seconds"):
            np.testing.assert_array_equal(getattr(again, name), getattr(sgd_result, name))
        for name in ("estimator", "stream", "scenario", "epochs", "acc", "bwt", "fwt",
                     "train_seconds"):
            assert getattr(again, name) == getattr(sgd_result, name)


def test_json_is_strict_and_nan_becomes_null():
    single = TaskStream([_labelled_stream(n_classes=4)[0]], name="one")
    result = evaluate_stream(MemoryFake(max_epochs=1), single)
    assert math.isnan(result.fwt) and result.forgetting.shape == (0,)
    data = result.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["fwt"] is None and data["forgetting"] == []
    again = StreamResult.from_json(result.to_json())
    assert math.isnan(again.fwt) and again.forgetting.shape == (0,)
    assert "FWT n/a" in again.summary_line()


def test_text_reports(sgd_result):
    table = format_table([sgd_result, sgd_result]).splitlines()
    assert table[0] == "| estimator | stream | scenario | ACC | BWT | FWT | forgetting | train s |"
    assert len(table) == 4 and table[2].startswith("| SGDClassifier | split-digits | class |")
    assert f"{sgd_result.acc:.3f}" in table[2]
    matrix = format_matrix(sgd_result).splitlines()
    assert len(matrix) == 1 + 1 + 5 + 1
    assert matrix[1].split() == ["exp", "0", "exp", "1", "exp", "2", "exp", "3", "exp", "4"]
    assert matrix[2].split()[:2] == ["after", "0"]
    assert [float(v) for v in matrix[6].split()[2:]] == pytest.approx(sgd_result.R[4], abs=5e-4)
    assert matrix[7].split()[0] == "b"
    line = sgd_result.summary_line()
    assert line.startswith("SGDClassifier on split-digits (class, 1 epoch): ACC ")


def test_plot_writes_a_png(sgd_result, tmp_path):
    path = tmp_path / "result.png"
    fig = sgd_result.plot(path)
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # heatmap, colorbar, curves
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    heat_texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(heat_texts) == 25 and f"{sgd_result.R[0, 0]:.2f}" in heat_texts
    user_fig = Figure()
    axes = user_fig.subplots(1, 2)
    assert sgd_result.plot(ax=axes) is user_fig
