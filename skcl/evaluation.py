"""Run an estimator over a task stream: accuracy matrix, metrics, timings, plots.

:func:`evaluate_stream` trains an estimator on each experience of a
:class:`~skcl.datasets.TaskStream` in turn and, after each one, measures its
test accuracy on every experience, filling the accuracy matrix ``R`` of
Lopez-Paz & Ranzato (2017); the metrics are those of :mod:`skcl.metrics`.
The returned :class:`~skcl.results.StreamResult` carries the matrix, the
metrics and the training time, saves itself as JSON and plots itself
(:mod:`skcl.results`, whose names are importable from here too).

Examples
--------
>>> from sklearn.linear_model import SGDClassifier
>>> from skcl.datasets import load_split_digits
>>> from skcl.evaluation import evaluate_stream
>>> result = evaluate_stream(SGDClassifier(random_state=0), load_split_digits())
>>> result.R.shape
(5, 5)
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from sklearn.base import clone
from tqdm.auto import tqdm

from skcl import metrics
from skcl._call import inferred_tasks
from skcl.datasets import SCENARIOS, Experience, TaskStream
from skcl.nn import GLOBAL_RNG_LOCK
from skcl.results import StreamResult, format_matrix, format_table

__all__ = ["StreamResult", "evaluate_stream", "format_matrix", "format_table", "infer_tasks",
           "task_inference_accuracy"]


@contextlib.contextmanager
def _global_rng_preserved() -> Iterator[None]:
    """Restore Python's, NumPy's and (if loaded) PyTorch's global RNG states on exit.

    Evaluation must not move the random streams training draws from, so that
    a run's training does not depend on how it was evaluated.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global state is saved
    with contextlib.ExitStack() as stack:
        stack.enter_context(GLOBAL_RNG_LOCK)
        torch = sys.modules.get("torch")
        if torch is not None:
            devices = (
                list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
            )
            stack.enter_context(torch.random.fork_rng(devices=devices))
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def _is_continual(estimator) -> bool:
    """True for skcl estimators: their ``partial_fit`` takes a ``task_id``."""
    partial_fit = getattr(estimator, "partial_fit", None)
    if partial_fit is None:
        raise ValueError(
            f"{type(estimator).__name__} has no partial_fit method; evaluate_stream needs an "
            "incremental estimator (a skcl estimator, SGDClassifier, MLPClassifier, ...)."
        )
    try:
        return "task_id" in inspect.signature(partial_fit).parameters
    except (TypeError, ValueError):
        return False


def _restricted_accuracy(estimator, X: np.ndarray, y: np.ndarray, classes: np.ndarray) -> float:
    """Accuracy of a plain scikit-learn classifier choosing only among ``classes``.

    Task-incremental scoring for estimators without a ``task_id``: the columns
    of ``decision_function`` (or, failing that, ``predict_proba``) that belong
    to the task's classes are kept and the best of them is the prediction.
    """
    known = list(np.asarray(estimator.classes_).tolist())
    missing = [c for c in classes.tolist() if c not in known]
    if missing:
        raise ValueError(
            f"{type(estimator).__name__} does not know classes {missing}; it was given "
            f"classes {known}."
        )
    columns = [known.index(c) for c in classes.tolist()]
    if hasattr(estimator, "decision_function"):
        scores = np.asarray(estimator.decision_function(X))
        if scores.ndim == 1:
            scores = np.column_stack([-scores, scores])
    elif hasattr(estimator, "predict_proba"):
        scores = np.asarray(estimator.predict_proba(X))
    else:
        raise ValueError(
            f"{type(estimator).__name__} has neither decision_function nor predict_proba, "
            "which task-incremental scoring of a plain scikit-learn estimator needs."
        )
    predictions = classes[np.argmax(scores[:, columns], axis=1)]
    return float(np.mean(predictions == y))


def _score(estimator, exp: Experience, scenario: str, continual: bool) -> float:
    """Test accuracy on one experience, with the task id when the scenario gives it."""
    if scenario == "task":
        if continual:
            return float(estimator.score(exp.X_test, exp.y_test, task_id=exp.task_id))
        return _restricted_accuracy(estimator, exp.X_test, exp.y_test, exp.classes)
    return float(estimator.score(exp.X_test, exp.y_test))


def _register_all(estimator, experiences: Sequence[Experience]) -> None:
    for exp in experiences:
        estimator._register(exp.X_train, exp.y_train, task_id=exp.task_id)


def _untrained_accuracies(estimator, stream: TaskStream, scenario: str, continual: bool):
    """``b_j``: the accuracy on each experience before any training."""
    if continual and hasattr(estimator, "_register"):
        with _global_rng_preserved():
            untrained = clone(estimator)
            _register_all(untrained, stream)
            return np.array([_score(untrained, exp, scenario, True) for exp in stream])
    n_candidates = [
        len(exp.classes) if scenario == "task" else len(stream.classes) for exp in stream
    ]
    return 1.0 / np.asarray(n_candidates, dtype=np.float64)


def _train(estimator, exp: Experience, epochs: int, continual: bool, classes,
           shard=None) -> float:
    """Train on one experience (``shard``'s rows of it, if given); return the wall seconds
    of the training calls."""
    X, y = exp.X_train, exp.y_train
    if shard is not None:
        rows = shard(len(y))
        X, y = X[rows], y[rows]
    start = time.perf_counter()
    for _ in range(epochs):
        if continual:
            estimator.partial_fit(X, y, task_id=exp.task_id)
        else:
            estimator.partial_fit(X, y, classes=classes)
    if continual and hasattr(estimator, "end_task"):
        estimator.end_task()
    return time.perf_counter() - start


def _resolve_epochs(estimator, epochs) -> int:
    if epochs is None:
        epochs = getattr(estimator, "max_epochs", None)
        if epochs is None:
            return 1
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    return int(epochs)


def evaluate_stream(
    estimator,
    stream: TaskStream,
    scenario: str | None = None,
    epochs: int | None = None,
    verbose: int = 0,
    shard: Callable[[int], np.ndarray] | None = None,
) -> StreamResult:
    """Train an estimator experience by experience and fill the accuracy matrix.

    For each experience ``i`` in order, the estimator is trained on
    ``X_train`` for ``epochs`` passes, then its test accuracy on every
    experience ``j`` (past, current and future) becomes ``R[i, j]``.

    The estimator is trained **in place**: pass a fresh estimator, or
    ``sklearn.base.clone(estimator)``, to start from scratch.

    Parameters
    ----------
    estimator : estimator with ``partial_fit``
        A skcl estimator (its ``partial_fit`` takes ``task_id``) or a plain
        scikit-learn estimator with ``partial_fit`` (``SGDClassifier``,
        ``MLPClassifier``, ...).

        - skcl: each pass is ``partial_fit(X, y, task_id=exp.task_id)``; after
          the last pass ``end_task()`` closes the task, so end-of-task work
          (Fisher information, exemplars, ...) is done before evaluation.
        - scikit-learn: each pass is ``partial_fit(X, y, classes=stream.classes)``.
    stream : TaskStream
        The experiences, in training order.
    scenario : {'class', 'task', 'domain'}, optional
        Defaults to ``stream.default_scenario``. In ``'task'`` the task id is
        given at test time: skcl estimators are scored with
        ``score(X, y, task_id=exp.task_id)``; scikit-learn estimators choose
        among the task's classes only (the largest of their
        ``decision_function`` or ``predict_proba`` columns for those classes).
        It needs distinct task ids. In ``'class'`` and ``'domain'`` the score
        is ``score(X, y)``.
    epochs : int, optional
        Passes over each experience. Defaults to ``estimator.max_epochs``
        when the estimator has it, else 1.
    verbose : int, default=0
        A progress bar over experiences when > 0.
    shard : callable, optional
        Data-parallel training (:mod:`skcl.distributed`): ``shard(n)`` gives the
        rows of an experience's ``n`` training rows that this process passes to
        ``partial_fit`` (its shard; every rank calls ``evaluate_stream`` alike).
        Evaluation always reads the whole experiences.

    Returns
    -------
    result : StreamResult
        Accuracy matrix, baseline, metrics and training times.

    Notes
    -----
    Training time counts the ``partial_fit`` and ``end_task`` calls only
    (``time.perf_counter``); evaluation is excluded.

    ``b_j``, the accuracy of the untrained model on experience ``j`` (for
    forward transfer), comes from an untrained ``clone`` of a skcl estimator
    that has registered every experience's classes and task without training
    (``_register``). For other estimators it is the expected accuracy of a
    uniform guess, ``1 / n_candidates``: the task's classes in ``'task'``,
    all the stream's classes otherwise.

    To score a skcl estimator on experiences it has not trained yet (the
    entries ``R[i, j]``, ``j > i``), a copy of it registers those experiences
    first, so the network has their outputs as the untrained baseline does;
    the estimator itself never sees them early. Global random states are
    restored after every evaluation, so evaluation does not change training.

    References
    ----------
    .. [1] D. Lopez-Paz and M. Ranzato, "Gradient Episodic Memory for
       Continual Learning", NeurIPS 2017.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.evaluation import evaluate_stream
    >>> result = evaluate_stream(SGDClassifier(random_state=0), load_split_digits(), "task")
    >>> result.scenario, result.R.shape, bool(result.R.diagonal().min() > 0.9)
    ('task', (5, 5), True)
    """
    if not isinstance(stream, TaskStream):
        raise ValueError(f"stream must be a TaskStream, got {type(stream).__name__}.")
    scenario = stream.default_scenario if scenario is None else scenario
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}.")
    if scenario == "task" and len(set(stream.task_ids)) != len(stream):
        raise ValueError(
            f"The 'task' scenario needs a distinct task id per experience; stream "
            f"{stream.name!r} has task ids {stream.task_ids}."
        )
    continual = _is_continual(estimator)
    epochs = _resolve_epochs(estimator, epochs)
    can_register = continual and hasattr(estimator, "_register")
    T = len(stream)
    b = _untrained_accuracies(estimator, stream, scenario, continual)
    R = np.empty((T, T))
    seconds = np.empty(T)
    classes = stream.classes
    name = type(estimator).__name__
    steps = tqdm(range(T), desc=f"{name} on {stream.name}", unit="exp", disable=verbose <= 0)
    for i in steps:
        seconds[i] = _train(estimator, stream[i], epochs, continual, classes, shard)
        with _global_rng_preserved():
            for j in range(i + 1):
                R[i, j] = _score(estimator, stream[j], scenario, continual)
            if i + 1 < T:
                ahead = estimator
                if can_register:
                    ahead = copy.deepcopy(estimator)
                    _register_all(ahead, stream[i + 1:])
                for j in range(i + 1, T):
                    R[i, j] = _score(ahead, stream[j], scenario, continual)
        steps.set_postfix(acc=f"{R[i, : i + 1].mean():.3f}")

    summary = metrics.summarize(R, b)
    return StreamResult(
        estimator=name,
        stream=stream.name,
        scenario=scenario,
        epochs=epochs,
        R=R,
        b=b,
        acc=summary["acc"],
        bwt=summary["bwt"],
        fwt=summary["fwt"],
        forgetting=metrics.forgetting(R),
        train_seconds=float(seconds.sum()),
        experience_seconds=seconds,
    )


def infer_tasks(estimator, X) -> np.ndarray:
    """The task an estimator with a head per task answers with, for each row of ``X``
    predicted without a task id.

    Methods that keep a head per task (masks, gates, columns, hypernetworks,
    multi-head baselines) predict without task ids by letting one head answer
    each row (the rule is the method's, e.g. the lowest softmax entropy, see
    :mod:`skcl.nn.inference`); the task of that head is the inferred task: the
    task of the unit with the highest score. Rows are scored in the chunks
    predictions use (at most 8192 rows), so a per-batch rule picks one task per
    chunk, as ``predict`` does.

    Parameters
    ----------
    estimator : fitted skcl estimator whose output units are per task
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    task_ids : ndarray of shape (n_samples,)

    Examples
    --------
    >>> from skcl import MultiHeadClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.evaluation import infer_tasks
    >>> stream = load_split_digits()
    >>> clf = MultiHeadClassifier(max_epochs=1, random_state=0)
    >>> for exp in stream[:2]:
    ...     _ = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> set(infer_tasks(clf, stream[1].X_test).tolist()) <= {0, 1}
    True
    """
    return inferred_tasks(estimator, X)


def task_inference_accuracy(estimator, stream: TaskStream) -> float | None:
    """The mean over experiences of the fraction of test rows whose inferred task
    (:func:`infer_tasks`, each experience's test set predicted in one call) is the
    experience's own; ``None`` for estimators whose units are shared by tasks.

    Examples
    --------
    >>> from skcl import MultiHeadClassifier, NaiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.evaluation import task_inference_accuracy
    >>> stream = load_split_digits()[:2]
    >>> clf = MultiHeadClassifier(max_epochs=1, random_state=0)
    >>> for exp in stream:
    ...     _ = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> 0.0 <= task_inference_accuracy(clf, stream) <= 1.0
    True
    >>> task_inference_accuracy(NaiveClassifier(), stream) is None
    True
    """
    if not getattr(estimator, "_task_specific_units", False):
        return None
    return float(np.mean([np.mean(infer_tasks(estimator, exp.X_test) == exp.task_id)
                          for exp in stream]))


def warm_up(device: str = "cpu") -> None:
    """Pay torch's one-time costs (thread pools, kernel selection) before timing anything.

    The first training steps of a process run slower than the rest; timings
    that are compared with each other should all come after this.

    Examples
    --------
    >>> from skcl.evaluation import warm_up
    >>> warm_up()
    """
    from skcl.strategies.baselines import NaiveClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 64)).astype(np.float32)
    y = np.arange(256) % 4
    NaiveClassifier(max_epochs=2, device=device, random_state=0).fit(X, y).predict(X)
