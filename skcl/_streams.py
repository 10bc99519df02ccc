"""Checks and splits behind the stream builders of :mod:`skcl.datasets`."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def _check_X_y(X, y) -> tuple[np.ndarray, np.ndarray]:
    """Validate a labelled data set and return X as float32 and y as an array."""
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2:
        raise ValueError(
            f"X must be 2-D (n_samples, n_features), got shape {X.shape}; "
            "flatten images with X.reshape(len(X), -1)."
        )
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}.")
    if len(X) != len(y):
        raise ValueError(f"X and y have different lengths: {len(X)} and {len(y)}.")
    if len(y) == 0:
        raise ValueError("X and y are empty.")
    try:
        X = np.ascontiguousarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X must be numeric, got dtype {X.dtype}.") from exc
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity.")
    return X, y


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _split_indices(
    y: np.ndarray, test_size, random_state, task: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a stratified train/test split (in ``train_test_split``'s order).

    Without ``task`` the whole data set is split at once; with it, the rows of
    each task value are split on their own, stratified by class, with the same seed.
    """
    if task is None:
        return train_test_split(np.arange(len(y)), test_size=test_size,
                                random_state=random_state, stratify=y)
    parts = [
        train_test_split(rows, test_size=test_size, random_state=random_state, stratify=y[rows])
        for rows in (np.flatnonzero(task == value) for value in np.unique(task))
    ]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _resolve_task_classes(classes: np.ndarray, classes_per_task, task_classes):
    """Turn ``classes_per_task`` or ``task_classes`` into a list of label arrays."""
    if task_classes is None:
        k = _positive_int(classes_per_task, "classes_per_task")
        return [classes[start:start + k] for start in range(0, len(classes), k)]
    known = set(classes.tolist())
    groups, used = [], set()
    for t, group in enumerate(task_classes):
        labels = np.asarray(group).reshape(-1)
        if labels.size == 0:
            raise ValueError(f"task_classes[{t}] is empty.")
        for label in labels.tolist():
            if label not in known:
                raise ValueError(
                    f"task_classes[{t}] names class {label!r}, which is absent from y "
                    f"(classes in y: {sorted(known)})."
                )
            if label in used:
                raise ValueError(f"Class {label!r} appears in more than one task of task_classes.")
            used.add(label)
        groups.append(labels)
    if not groups:
        raise ValueError("task_classes is empty.")
    return groups


def _rotate(X: np.ndarray, image_shape: tuple[int, ...], angle: float) -> np.ndarray:
    """Rotate flattened images counter-clockwise by ``angle`` degrees about their centre."""
    from scipy import ndimage

    images = X.reshape((len(X), *image_shape))
    rotated = ndimage.rotate(images, angle, axes=(2, 1), reshape=False, order=1, mode="constant")
    return rotated.reshape(len(X), -1).astype(np.float32)
