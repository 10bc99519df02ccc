"""Continual-learning metrics on the accuracy matrix.

All metrics follow Lopez-Paz & Ranzato (2017). With ``T`` experiences, the
accuracy matrix ``R`` is ``T x T`` and

    R[i, j] = test accuracy on experience j after training experience i.

Writing ``b_j`` for the test accuracy on experience ``j`` of the model before
any training:

- average accuracy      ACC = 1/T sum_j R[T-1, j]
- backward transfer     BWT = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])
- forward transfer      FWT = 1/(T-1) sum_{j>0} (R[j-1, j] - b_j)
- forgetting            f_j = max_{i<T-1} R[i, j] - R[T-1, j],  for j < T-1

Negative BWT means learning later experiences hurt earlier ones; positive FWT
means earlier experiences helped on later ones before they were trained.

References
----------
.. [1] D. Lopez-Paz and M. Ranzato, "Gradient Episodic Memory for Continual
   Learning", Advances in Neural Information Processing Systems 30 (NeurIPS),
   2017.

Examples
--------
>>> import numpy as np
>>> from skcl.metrics import summarize
>>> R = np.array([[0.9, 0.1], [0.6, 0.8]])
>>> {k: round(v, 3) for k, v in summarize(R, b=[0.5, 0.5]).items()}
{'acc': 0.7, 'bwt': -0.3, 'fwt': -0.4, 'forgetting': 0.3}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy_matrix",
    "average_accuracy",
    "backward_transfer",
    "forgetting",
    "forward_transfer",
    "summarize",
]


def _check_accuracies(values, name: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise ValueError(f"{name} holds accuracies and must lie in [0, 1].")


def _check_R(R) -> np.ndarray:
    """Return R as a float array after checking it is a square accuracy matrix."""
    try:
        R = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError("R must be a numeric square matrix.") from exc
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"R must be a non-empty square matrix (T, T), got shape {R.shape}.")
    _check_accuracies(R, "R")
    return R


def average_accuracy(R) -> float:
    """Average accuracy (ACC) over all experiences after training the last one.

    ``ACC = 1/T sum_j R[T-1, j]`` (Lopez-Paz & Ranzato, 2017).

    Parameters
    ----------
    R : array-like of shape (T, T)
        Accuracy matrix, ``R[i, j]`` the test accuracy on experience ``j``
        after training experience ``i``; finite values in [0, 1].

    Returns
    -------
    acc : float

    Examples
    --------
    >>> from skcl.metrics import average_accuracy
    >>> average_accuracy([[0.9, 0.1], [0.6, 0.8]])
    0.7
    """
    R = _check_R(R)
    return float(R[-1].mean())


def backward_transfer(R) -> float:
    """Backward transfer (BWT): how later training changed earlier experiences.

    ``BWT = 1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])`` (Lopez-Paz & Ranzato,
    2017). Negative values measure forgetting. With a single experience
    there is nothing to transfer to and BWT is 0.0.

    Parameters
    ----------
    R : array-like of shape (T, T)
        Accuracy matrix; finite values in [0, 1].

    Returns
    -------
    bwt : float

    Examples
    --------
    >>> from skcl.metrics import backward_transfer
    >>> round(backward_transfer([[0.9, 0.1], [0.6, 0.8]]), 3)
    -0.3
    """
    R = _check_R(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    return float(np.mean(R[T - 1, : T - 1] - np.diag(R)[: T - 1]))


def forward_transfer(R, b) -> float:
    """Forward transfer (FWT): how earlier training helps on experiences not yet trained.

    ``FWT = 1/(T-1) sum_{j>0} (R[j-1, j] - b_j)`` (Lopez-Paz & Ranzato, 2017),
    where ``b_j`` is the accuracy on experience ``j`` of the model before any
    training. With a single experience FWT is undefined and NaN is returned.

    Parameters
    ----------
    R : array-like of shape (T, T)
        Accuracy matrix; finite values in [0, 1].
    b : array-like of shape (T,)
        Accuracy of the untrained model on each experience; finite, in [0, 1].

    Returns
    -------
    fwt : float

    Examples
    --------
    >>> from skcl.metrics import forward_transfer
    >>> round(forward_transfer([[0.9, 0.6], [0.6, 0.8]], b=[0.5, 0.5]), 3)
    0.1
    """
    R = _check_R(R)
    T = R.shape[0]
    b = np.asarray(b, dtype=np.float64)
    if b.shape != (T,):
        raise ValueError(f"b must have shape ({T},) to match R, got {b.shape}.")
    _check_accuracies(b, "b")
    if T == 1:
        return float("nan")
    return float(np.mean(np.diag(R, k=1) - b[1:]))


def forgetting(R) -> np.ndarray:
    """Forgetting of each experience but the last.

    ``f_j = max_{i<T-1} R[i, j] - R[T-1, j]`` for ``j < T-1``: the drop from
    the best accuracy reached on experience ``j`` before the last training
    step to the final accuracy (Lopez-Paz & Ranzato, 2017, report BWT; this
    per-experience form follows the same matrix).

    Parameters
    ----------
    R : array-like of shape (T, T)
        Accuracy matrix; finite values in [0, 1].

    Returns
    -------
    forgetting : ndarray of shape (T - 1,)
        Empty for a single experience.

    Examples
    --------
    >>> from skcl.metrics import forgetting
    >>> forgetting([[0.9, 0.1, 0.0], [0.7, 0.8, 0.2], [0.5, 0.4, 0.9]]).round(3).tolist()
    [0.4, 0.4]
    """
    R = _check_R(R)
    T = R.shape[0]
    if T == 1:
        return np.empty(0)
    return R[: T - 1, : T - 1].max(axis=0) - R[T - 1, : T - 1]


def accuracy_matrix(
    y_true: Sequence[np.ndarray], y_pred: Sequence[Sequence[np.ndarray]]
) -> np.ndarray:
    """Build the accuracy matrix from labels and predictions.

    Parameters
    ----------
    y_true : sequence of T arrays
        ``y_true[j]``: the test labels of experience ``j``.
    y_pred : sequence of T sequences of T arrays
        ``y_pred[i][j]``: the predictions on experience ``j``'s test set after
        training experience ``i``.

    Returns
    -------
    R : ndarray of shape (T, T)
        ``R[i, j] = mean(y_pred[i][j] == y_true[j])``.

    Examples
    --------
    >>> from skcl.metrics import accuracy_matrix
    >>> y_true = [[0, 1], [2, 3]]
    >>> y_pred = [[[0, 1], [0, 0]], [[0, 3], [2, 3]]]
    >>> accuracy_matrix(y_true, y_pred).tolist()
    [[1.0, 0.0], [0.5, 1.0]]
    """
    T = len(y_true)
    if T == 0:
        raise ValueError("y_true is empty: give the test labels of at least one experience.")
    if len(y_pred) != T:
        raise ValueError(f"y_pred must have {T} rows (one per training step), got {len(y_pred)}.")
    truths = [np.asarray(y).reshape(-1) for y in y_true]
    for j, y in enumerate(truths):
        if y.size == 0:
            raise ValueError(f"y_true[{j}] is empty.")
    R = np.empty((T, T))
    for i, row in enumerate(y_pred):
        if len(row) != T:
            raise ValueError(f"y_pred[{i}] must hold {T} prediction arrays, got {len(row)}.")
        for j, pred in enumerate(row):
            pred = np.asarray(pred).reshape(-1)
            if pred.shape != truths[j].shape:
                raise ValueError(
                    f"y_pred[{i}][{j}] has {pred.size} predictions for {truths[j].size} labels."
                )
            R[i, j] = np.mean(pred == truths[j])
    return R


def summarize(R, b=None) -> dict[str, float]:
    """ACC, BWT, FWT and mean forgetting of an accuracy matrix.

    Parameters
    ----------
    R : array-like of shape (T, T)
        Accuracy matrix; finite values in [0, 1].
    b : array-like of shape (T,), optional
        Accuracy of the untrained model on each experience. Without it FWT
        is NaN.

    Returns
    -------
    summary : dict
        ``{'acc', 'bwt', 'fwt', 'forgetting'}``, all floats (Lopez-Paz &
        Ranzato, 2017); ``'forgetting'`` is the mean of :func:`forgetting`,
        0.0 for a single experience (like BWT).

    Examples
    --------
    >>> from skcl.metrics import summarize
    >>> summary = summarize([[1.0, 0.0], [0.5, 1.0]])
    >>> summary["acc"], summary["bwt"], summary["forgetting"]
    (0.75, -0.5, 0.5)
    """
    R = _check_R(R)
    f = forgetting(R)
    return {
        "acc": average_accuracy(R),
        "bwt": backward_transfer(R),
        "fwt": float("nan") if b is None else forward_transfer(R, b),
        "forgetting": float(f.mean()) if f.size else 0.0,
    }
