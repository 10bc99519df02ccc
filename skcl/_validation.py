"""Input checks shared by skcl estimators: task ids, labels, ``classes``, devices."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.utils.multiclass import check_classification_targets

_INT64_MAX = int(np.iinfo(np.int64).max)
_CLASSES_HINT = (
    " If you meant the set of classes (as in SGDClassifier.partial_fit(X, y, classes)), "
    "pass it by name: partial_fit(X, y, classes=...)."
)
_PREVIEW = 10


def check_task_ids(task_id, n_samples: int, *, allow_none: bool = False,
                   y=None) -> np.ndarray | None:
    """Turn ``task_id`` (an int or one id per sample) into an int64 array of ``n_samples``.

    Task ids are non-negative integers that fit in int64. The array returned is
    C-contiguous, writable and owned by nobody else when it was made here (a
    read-only input, such as the arrays pandas 3 hands out, is copied), so it
    can go to ``torch.from_numpy`` as it is.

    ``SGDClassifier`` code passes the class list third, ``partial_fit(X, y,
    classes)``, where skcl expects ``task_id``. When the class list has a
    length other than ``n_samples`` the call fails on its length. When the two
    lengths happen to agree, the labels ``y`` tell the mistake apart: a
    per-sample ``task_id`` array of two or more ids that are **all distinct**
    and **contain every label of** ``y`` is read as a class list and rejected.
    That covers ``np.unique(y)`` and any class list ``SGDClassifier`` would
    accept (it holds every label of ``y``). The honest call it also rejects,
    every sample its own task with labels among the task ids, is written as
    one ``partial_fit`` per task with an integer ``task_id``. A single sample
    is never rejected this way (``SGDClassifier`` needs two classes), nor are
    ids that repeat or miss a label of ``y``.

    Parameters
    ----------
    task_id : int, array-like of int or None
        A non-negative integer for the whole call, or one per sample.
    n_samples : int
        Number of samples the ids must cover.
    allow_none : bool, default=False
        Whether ``None`` is accepted (then ``None`` is returned).
    y : array-like of shape (n_samples,), default=None
        The call's labels, when it has any (training); they enable the class
        list check above.

    Returns
    -------
    ids : ndarray of shape (n_samples,) and dtype int64, or None

    Raises
    ------
    ValueError
        If ``task_id`` is negative, larger than int64 allows, not an integer,
        an array whose length is not ``n_samples``, or a class list by the rule
        above. The message suggests ``classes=`` where that may be the mistake.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl._validation import check_task_ids
    >>> check_task_ids(2, 3)
    array([2, 2, 2])
    >>> check_task_ids(np.array([0, 0, 1], dtype=np.uint8), 3, y=[5, 6, 7])
    array([0, 0, 1])
    >>> check_task_ids(np.array([0, 1, 2]), 3, y=[2, 0, 0])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: task_id=[0, 1, 2] gives each of the 3 samples its own task and holds every ...
    """
    if task_id is None:
        if allow_none:
            return None
        raise ValueError("task_id must be a non-negative integer, got None")
    if isinstance(task_id, bool | np.bool_):
        raise ValueError(f"task_id must be a non-negative integer, got the boolean {task_id}")
    if isinstance(task_id, Integral):
        _check_id_range(int(task_id), int(task_id))
        return np.full(n_samples, int(task_id), dtype=np.int64)
    if isinstance(task_id, str | bytes | float | np.floating):
        raise ValueError(
            f"task_id must be a non-negative integer or an array of {n_samples} per-sample "
            f"integer ids, got {task_id!r}.{_CLASSES_HINT}"
        )
    ids = _integer_array(task_id)
    if ids.ndim != 1 or ids.shape[0] != n_samples:
        raise ValueError(
            f"task_id must be a non-negative integer or an array of n_samples={n_samples} "
            f"per-sample task ids, got an array of shape {ids.shape}.{_CLASSES_HINT}"
        )
    if ids.dtype.kind not in "iu":
        raise ValueError(
            f"task_id must hold integers, got an array of dtype {ids.dtype}.{_CLASSES_HINT}"
        )
    if n_samples:
        _check_id_range(int(ids.min()), int(ids.max()))
    ids = np.require(ids, dtype=np.int64, requirements=["C", "W"])
    if y is not None and _looks_like_class_list(ids, y):
        raise ValueError(
            f"task_id={_preview(ids)} gives each of the {n_samples} samples its own task and "
            "holds every label of y, like the class list of SGDClassifier.partial_fit(X, y, "
            "classes). If you meant the set of classes, pass it by name: partial_fit(X, y, "
            "classes=...). If every sample really belongs to another task, call partial_fit "
            "once per task with an integer task_id."
        )
    return ids


def _integer_array(task_id) -> np.ndarray:
    """``np.asarray(task_id)``, except that Python ints past int64 (which numpy turns into
    floats or objects) come back as an object array of those ints."""
    ids = np.asarray(task_id)
    if ids.dtype.kind in "fO" and ids.ndim == 1:
        values = np.asarray(task_id, dtype=object)
        if all(isinstance(v, Integral) and not isinstance(v, bool | np.bool_) for v in values):
            if values.size:
                _check_id_range(min(values), max(values))
            return values.astype(np.int64)
    return ids


def _check_id_range(low: int, high: int) -> None:
    if low < 0:
        raise ValueError(f"task_id must be non-negative, got {low}")
    if high > _INT64_MAX:
        raise ValueError(
            f"task ids must fit in int64 (at most {_INT64_MAX}), got {high}"
        )


def _looks_like_class_list(ids: np.ndarray, y) -> bool:
    """Two or more distinct ids that contain every (numeric) label of ``y``."""
    if ids.size < 2:
        return False
    labels = np.asarray(y)
    if labels.dtype.kind not in "iuf":
        return False
    return np.unique(ids).size == ids.size and bool(np.isin(labels, ids).all())


def check_classes_argument(classes) -> np.ndarray:
    """Check the ``classes=`` argument of ``partial_fit``; return its sorted unique labels.

    Parameters
    ----------
    classes : array-like of shape (n_classes,)
        Class labels: all numbers or all strings, one-dimensional, with no
        missing value (NaN, ``None``); repeats are allowed.

    Returns
    -------
    classes : ndarray of shape (n_unique_classes,)
        The labels, sorted and unique.

    Raises
    ------
    ValueError
        If ``classes`` is a string or a scalar, not one-dimensional, empty,
        holds NaN or ``None``, mixes numbers and strings, or holds values that
        are not class labels (such as continuous floats).

    Examples
    --------
    >>> from skcl._validation import check_classes_argument
    >>> check_classes_argument([3, 1, 3])
    array([1, 3])
    >>> check_classes_argument([0, 1, float("nan")])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: classes=[0, 1, nan] holds a missing value (NaN or None); ...
    """
    if isinstance(classes, str | bytes):
        raise ValueError(
            f"classes must be an array-like of class labels, got the string {classes!r}"
        )
    try:
        values = np.asarray(classes)
    except ValueError as exc:
        raise ValueError(
            f"classes must be a 1-D array-like of class labels, got {classes!r}"
        ) from exc
    if values.ndim != 1:
        raise ValueError(
            f"classes must be a 1-D array-like of class labels, got an array of shape "
            f"{values.shape}"
        )
    if values.size == 0:
        raise ValueError("classes must name at least one class, got an empty array-like")
    as_objects = np.asarray(classes, dtype=object)
    shown = _preview(as_objects)
    if any(v is None or (isinstance(v, float | np.floating) and np.isnan(v))
           for v in as_objects):
        raise ValueError(
            f"classes={shown} holds a missing value (NaN or None); class labels must be "
            "numbers or strings"
        )
    if _label_kind(as_objects) == "mixed":
        raise ValueError(
            f"classes={shown} mixes numbers and strings; class labels must be all numbers "
            "or all strings"
        )
    try:
        check_labels(values)
    except ValueError as exc:
        raise ValueError(f"classes={shown} are not class labels: {exc}") from exc
    return np.unique(values)


def check_same_kind(labels, known: np.ndarray | None, name: str = "labels") -> None:
    """Raise unless ``labels`` are numbers when the ``known`` classes are, strings when
    they are strings.

    Parameters
    ----------
    labels : array-like
        The labels of a call (``y``, or ``classes``).
    known : ndarray or None
        The classes known so far; ``None`` (nothing known yet) accepts anything
        but labels that mix numbers and strings.
    name : str, default="labels"
        What ``labels`` are called in the message (``"y"``, ``"classes"``).

    Raises
    ------
    ValueError
        Naming both the offending labels and the known classes.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl._validation import check_same_kind
    >>> check_same_kind(np.array([0, 1]), np.array([1, 2, 3]))
    >>> check_same_kind([0, 1, 1], np.array(["a", "b"]), name="y")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: y holds numbers [0, 1], but the classes are strings: ['a', 'b']; ...
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    kind = _label_kind(labels)
    if kind == "mixed":
        raise ValueError(
            f"{name} {_preview(labels)} mix numbers and strings; labels must be all numbers "
            "or all strings"
        )
    if known is None:
        return
    known_kind = _label_kind(np.asarray(known))
    if kind != known_kind:
        raise ValueError(
            f"{name} holds {kind} {_preview(labels)}, but the classes are {known_kind}: "
            f"{_preview(known)}; labels must not mix numbers and strings"
        )


def _label_kind(labels: np.ndarray) -> str:
    """``'numbers'``, ``'strings'`` or ``'mixed'``."""
    if labels.dtype.kind in "biuf":
        return "numbers"
    if labels.dtype.kind in "US":
        return "strings"
    kinds = {"strings" if isinstance(v, str | bytes) else
             "numbers" if isinstance(v, Integral | float | np.number) else "mixed"
             for v in labels.ravel()}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _preview(values) -> str:
    """The distinct values, in order of first appearance, at most ``_PREVIEW`` of them."""
    distinct = list(dict.fromkeys(np.asarray(values, dtype=object).ravel().tolist()))
    if len(distinct) <= _PREVIEW:
        return repr(distinct)
    return f"{repr(distinct[:_PREVIEW])[:-1]}, ... ({len(distinct)} in all)]"


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
    return _label_kind(labels) == "numbers"


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
