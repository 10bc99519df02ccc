"""Run an estimator over a task stream: accuracy matrix, metrics, timings, plots.

:func:`evaluate_stream` trains an estimator on each experience of a
:class:`~skcl.datasets.TaskStream` in turn and, after each one, measures its
test accuracy on every experience, filling the accuracy matrix ``R`` of
Lopez-Paz & Ranzato (2017); the metrics are those of :mod:`skcl.metrics`.
The returned :class:`StreamResult` carries the matrix, the metrics and the
training time, saves itself as JSON and plots itself.

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
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from tqdm.auto import tqdm

from skcl import metrics
from skcl.datasets import SCENARIOS, Experience, TaskStream

__all__ = ["StreamResult", "evaluate_stream", "format_matrix", "format_table"]


@contextlib.contextmanager
def _global_rng_preserved() -> Iterator[None]:
    """Restore Python's, NumPy's and (if loaded) PyTorch's global RNG states on exit.

    Evaluation must not move the random streams training draws from, so that
    a run's training does not depend on how it was evaluated.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global state is saved
    with contextlib.ExitStack() as stack:
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


def _train(estimator, exp: Experience, epochs: int, continual: bool, classes) -> float:
    """Train on one experience; return the wall seconds of the training calls."""
    start = time.perf_counter()
    for _ in range(epochs):
        if continual:
            estimator.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
        else:
            estimator.partial_fit(exp.X_train, exp.y_train, classes=classes)
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
        seconds[i] = _train(estimator, stream[i], epochs, continual, classes)
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


def _json_value(value):
    """Arrays to lists and NaN to None, recursively."""
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _array(value) -> np.ndarray:
    """Inverse of :func:`_json_value` for numbers and numeric lists: None back to NaN."""
    return np.array(value, dtype=np.float64)


def _fmt(value: float, sign: bool = False) -> str:
    if value is None or np.isnan(value):
        return "n/a"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def _plot_result(result: StreamResult, path=None, ax=None):
    """Draw the heatmap of R and the accuracy curves (see :meth:`StreamResult.plot`)."""
    from matplotlib.figure import Figure

    if ax is None:
        fig = Figure(figsize=(12, 4.6), layout="constrained")
        ax_heat, ax_curve = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15]})
    else:
        ax_heat, ax_curve = ax
        fig = ax_heat.figure
    R, T = result.R, result.n_experiences
    labels = [str(t) for t in range(T)]

    image = ax_heat.imshow(R, vmin=0.0, vmax=1.0, cmap="viridis")
    fontsize = 9 if T <= 6 else 7 if T <= 10 else 5
    for i in range(T):
        for j in range(T):
            ax_heat.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", fontsize=fontsize,
                         color="black" if R[i, j] > 0.6 else "white")
    ax_heat.set_xticks(range(T), labels)
    ax_heat.set_yticks(range(T), labels)
    ax_heat.set_xlabel("evaluated on experience j")
    ax_heat.set_ylabel("after training experience i")
    ax_heat.set_title("accuracy matrix R[i, j]")
    fig.colorbar(image, ax=ax_heat, fraction=0.046, pad=0.04, label="test accuracy")

    colors = [f"C{j % 10}" for j in range(T)]
    steps = np.arange(T)
    for j in range(T):
        ax_curve.plot(steps[j:], R[j:, j], marker="o", ms=4, color=colors[j], label=str(j))
        if j > 0:
            ax_curve.plot(steps[: j + 1], R[: j + 1, j], ls=":", lw=1, alpha=0.6, color=colors[j])
    ax_curve.set_xticks(range(T), labels)
    ax_curve.set_ylim(-0.03, 1.03)
    ax_curve.set_xlabel("after training experience i")
    ax_curve.set_ylabel("test accuracy on experience j")
    ax_curve.set_title("accuracy per experience (dotted: not yet trained)")
    ax_curve.grid(alpha=0.3)
    ax_curve.legend(fontsize=7, ncol=1 if T <= 12 else 2, loc="center left",
                    bbox_to_anchor=(1.01, 0.5), title="experience j", title_fontsize=7)
    fig.suptitle(
        f"{result.estimator} on {result.stream} ({result.scenario}): ACC {_fmt(result.acc)}, "
        f"BWT {_fmt(result.bwt, True)}, FWT {_fmt(result.fwt, True)}"
    )
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


_ARRAY_FIELDS = ("R", "b", "forgetting", "experience_seconds")
_FLOAT_FIELDS = ("acc", "bwt", "fwt", "train_seconds")


@dataclass(eq=False)
class StreamResult:
    """What :func:`evaluate_stream` measured.

    Attributes
    ----------
    estimator : str
        Class name of the estimator.
    stream : str
        Name of the stream.
    scenario : str
        ``'class'``, ``'task'`` or ``'domain'``.
    epochs : int
        Passes over each experience.
    R : ndarray of shape (T, T)
        ``R[i, j]``: test accuracy on experience ``j`` after training ``i``.
    b : ndarray of shape (T,)
        Accuracy of the untrained model on each experience.
    acc, bwt, fwt : float
        Average accuracy, backward and forward transfer (Lopez-Paz & Ranzato,
        2017); ``fwt`` is NaN for a single experience.
    forgetting : ndarray of shape (T - 1,)
        Forgetting of each experience but the last.
    train_seconds : float
        Wall seconds spent training over the whole stream, evaluation excluded.
    experience_seconds : ndarray of shape (T,)
        The same, per experience.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.evaluation import StreamResult, evaluate_stream
    >>> result = evaluate_stream(SGDClassifier(random_state=0), load_split_digits())
    >>> again = StreamResult.from_json(result.to_json())
    >>> bool((again.R == result.R).all()), again.estimator
    (True, 'SGDClassifier')
    """

    estimator: str
    stream: str
    scenario: str
    epochs: int
    R: np.ndarray
    b: np.ndarray
    acc: float
    bwt: float
    fwt: float
    forgetting: np.ndarray
    train_seconds: float
    experience_seconds: np.ndarray

    @property
    def n_experiences(self) -> int:
        """Number of experiences ``T``."""
        return int(self.R.shape[0])

    @property
    def mean_forgetting(self) -> float:
        """Mean of :attr:`forgetting` (0.0 for a single experience)."""
        return float(self.forgetting.mean()) if self.forgetting.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary: arrays as lists, NaN as None."""
        return {
            "estimator": self.estimator,
            "stream": self.stream,
            "scenario": self.scenario,
            "epochs": int(self.epochs),
            **{name: _json_value(float(getattr(self, name))) for name in _FLOAT_FIELDS},
            **{name: _json_value(np.asarray(getattr(self, name))) for name in _ARRAY_FIELDS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamResult:
        """Rebuild a result from :meth:`to_dict` output."""
        return cls(
            estimator=str(data["estimator"]),
            stream=str(data["stream"]),
            scenario=str(data["scenario"]),
            epochs=int(data["epochs"]),
            **{name: float(_array(data[name])) for name in _FLOAT_FIELDS},
            **{name: _array(data[name]) for name in _ARRAY_FIELDS},
        )

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialize to JSON; also write it to ``path`` when given.

        Parameters
        ----------
        path : str or path-like, optional
            File to write.

        Returns
        -------
        text : str
            The JSON document.
        """
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> StreamResult:
        """Read a result from a JSON string or from a file written by :meth:`to_json`.

        Parameters
        ----------
        source : str or path-like
            JSON text (a string starting with ``{``) or the path of a file.

        Returns
        -------
        result : StreamResult
        """
        if isinstance(source, str) and source.lstrip().startswith("{"):
            text = source
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        return cls.from_dict(json.loads(text))

    def summary_line(self) -> str:
        """One line: estimator, stream, scenario, ACC, BWT, FWT and training time."""
        return (
            f"{self.estimator} on {self.stream} ({self.scenario}, {self.epochs} "
            f"epoch{'s' if self.epochs != 1 else ''}): "
            f"ACC {_fmt(self.acc)}  BWT {_fmt(self.bwt, True)}  FWT {_fmt(self.fwt, True)}  "
            f"forgetting {_fmt(self.mean_forgetting)}  train {self.train_seconds:.2f} s"
        )

    def plot(self, path: str | os.PathLike | None = None, ax=None):
        """Heatmap of ``R`` and per-experience accuracy curves.

        Parameters
        ----------
        path : str or path-like, optional
            Save the figure there (format from the extension, e.g. ``.png``).
        ax : pair of matplotlib Axes, optional
            Where to draw the heatmap and the curves; by default a new
            :class:`matplotlib.figure.Figure` (no pyplot state is touched).

        Returns
        -------
        fig : matplotlib.figure.Figure
        """
        return _plot_result(self, path=path, ax=ax)


def format_table(results: Sequence[StreamResult]) -> str:
    """Markdown table of several results: one row per result.

    Parameters
    ----------
    results : sequence of StreamResult

    Returns
    -------
    table : str
        Columns estimator, stream, scenario, ACC, BWT, FWT, forgetting and
        training seconds.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.evaluation import evaluate_stream, format_table
    >>> result = evaluate_stream(SGDClassifier(random_state=0), load_split_digits())
    >>> print(format_table([result]).splitlines()[0])
    | estimator | stream | scenario | ACC | BWT | FWT | forgetting | train s |
    """
    lines = [
        "| estimator | stream | scenario | ACC | BWT | FWT | forgetting | train s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.estimator} | {r.stream} | {r.scenario} | {_fmt(r.acc)} | "
            f"{_fmt(r.bwt, True)} | {_fmt(r.fwt, True)} | {_fmt(r.mean_forgetting)} | "
            f"{r.train_seconds:.2f} |"
        )
    return "\n".join(lines)


def format_matrix(result: StreamResult) -> str:
    """The accuracy matrix as text, rows and columns labelled, with the baseline ``b``.

    Parameters
    ----------
    result : StreamResult

    Returns
    -------
    text : str
        Row ``after i``: accuracies after training experience ``i``; column
        ``exp j``: experience ``j``; last row ``b``: the untrained model.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.evaluation import StreamResult, format_matrix
    >>> result = StreamResult(
    ...     "Naive", "toy", "class", 1, R=np.array([[0.9, 0.1], [0.6, 0.8]]),
    ...     b=np.array([0.5, 0.5]), acc=0.7, bwt=-0.3, fwt=-0.4, forgetting=np.array([0.3]),
    ...     train_seconds=1.0, experience_seconds=np.array([0.5, 0.5]))
    >>> print(format_matrix(result))
    R[i, j] for Naive on toy (class): accuracy on experience j after training experience i
             exp 0  exp 1
    after 0  0.900  0.100
    after 1  0.600  0.800
    b        0.500  0.500
    """
    T = result.n_experiences
    width = max(6, len(f"after {T - 1}"))
    header = " " * width + "".join(f"{f'exp {j}':>7}" for j in range(T))
    rows = [
        f"{f'after {i}':<{width}}" + "".join(f"{v:>7.3f}" for v in result.R[i]) for i in range(T)
    ]
    rows.append(f"{'b':<{width}}" + "".join(f"{v:>7.3f}" for v in result.b))
    title = (
        f"R[i, j] for {result.estimator} on {result.stream} ({result.scenario}): "
        "accuracy on experience j after training experience i"
    )
    return "\n".join([title, header, *rows])


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
