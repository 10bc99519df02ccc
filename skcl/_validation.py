"""Input checks shared by skcl estimators: task ids, labels, devices."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.utils.multiclass import check_classification_targets


def check_task_ids(task_id, n_samples: int, *, allow_none: bool = False) -> np.ndarray | None:
    """Turn ``task_id`` (an int or one id per sample) into an int64 array of ``n_samples``.

    Parameters
    ----------
    task_id : int, array-like of int or None
        A non-negative integer for the whole call, or one per sample.
    n_samples : int
        Number of samples the ids must cover.
    allow_none : bool, default=False
        Whether ``None`` is accepted (then ``None`` is returned).

    Raises
    ------
    ValueError
        If ``task_id`` is negative, not an integer, or an array whose length is
        not ``n_samples``. The message suggests ``classes=`` because
        ``SGDClassifier``-style code passes the class set as third argument.
    """
    if task_id is None:
        if allow_none:
            return None
        raise ValueError("task_id must be a non-negative integer, got None")
    hint = (
        " If you meant the set of classes (as in SGDClassifier.partial_fit(X, y, classes)), "
        "pass it by name: partial_fit(X, y, classes=...)."
    )
    if isinstance(task_id, bool | np.bool_):
        raise ValueError(f"task_id must be a non-negative integer, got the boolean {task_id}")
    if isinstance(task_id, Integral):
        if task_id < 0:
            raise ValueError(f"task_id must be a non-negative integer, got {task_id}")
        return np.full(n_samples, int(task_id), dtype=np.int64)
    if isinstance(task_id, str | bytes | float | np.floating):
        raise ValueError(
            f"task_id must be a non-negative integer or an array of {n_samples} per-sample "
            f"integer ids, got {task_id!r}.{hint}"
        )
    ids = np.asarray(task_id)
    if ids.ndim != 1 or ids.shape[0] != n_samples:
        raise ValueError(
            f"task_id must be a non-negative integer or an array of n_samples={n_samples} "
            f"per-sample task ids, got an array of shape {ids.shape}.{hint}"
        )
    if ids.dtype.kind not in "iu":
        raise ValueError(
            f"task_id must hold integers, got an array of dtype {ids.dtype}.{hint}"
        )
    if n_samples and ids.min() < 0:
        raise ValueError(f"task_id must be non-negative, got {int(ids.min())}")
    return ids.astype(np.int64, copy=False)


def check_labels(y: np.ndarray) -> None:
    """Reject targets that are not class labels (continuous values), cheaply.

    Integer, boolean and string labels pass at once; anything else goes
    through sklearn's ``check_classification_targets``.
    """
    if y.dtype.kind in "biuUS":
        return
    check_classification_targets(y)


def groups_in_order(ids: np.ndarray) -> list[tuple[int, np.ndarray | None]]:
    """Split sample indices by id, in order of first appearance.

    Returns ``[(id, None)]`` when every sample has the same id (no indexing needed).
    """
    if ids.size and (ids == ids[0]).all():
        return [(int(ids[0]), None)]
    values, first = np.unique(ids, return_index=True)
    return [(int(v), np.flatnonzero(ids == v)) for v in values[np.argsort(first)]]


def is_numeric_labels(labels: np.ndarray) -> bool:
    """Whether labels are numbers (as opposed to strings or other objects)."""
    if labels.dtype.kind in "biuf":
        return True
    if labels.dtype.kind == "O":
        return all(isinstance(v, Integral | float | np.number) for v in labels.ravel())
    return False


def resolve_device(device: str) -> torch.device:
    """Resolve ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` to a usable torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but no CUDA device is available")
    return resolved
