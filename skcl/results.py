"""What :func:`skcl.evaluation.evaluate_stream` measured, and how it is shown.

:class:`StreamResult` holds the accuracy matrix ``R``, the baseline ``b``,
the metrics and the training times of one run; it saves itself as JSON,
prints a summary line and plots a heatmap of ``R`` with accuracy curves
(matplotlib). :func:`format_table` and :func:`format_matrix` lay one or
several results out as text. All three are also importable from
:mod:`skcl.evaluation`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["StreamResult", "format_matrix", "format_table"]


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
