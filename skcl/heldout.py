"""Held-out streams: data no default or benchmark setting of skcl is chosen on.

The protocol's streams (:data:`skcl.datasets.STREAMS`, split-digits and
permuted-digits) are where the benchmark's settings are tuned, honestly or
not. A default that only holds there is tuned to them. The streams here are
kept out of every such choice: a method's defaults are *checked* on them (at
its defaults it must not fall below Naive), never chosen on them. They are
rotated digits and three tabular streams drawn by scikit-learn's
``make_classification`` (standardized features, unlike the digits' [0, 1]
pixels), so a strength that depends on the data's scale shows it here.
``skcl bench --streams`` takes their names.

Examples
--------
>>> from skcl.heldout import HELD_OUT_STREAMS
>>> sorted(HELD_OUT_STREAMS)
['drift-tabular', 'permuted-tabular', 'rotated-digits', 'split-tabular']
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.datasets import make_classification

from skcl.datasets import (
    DIGITS_TASK_CLASSES,
    TaskStream,
    _digits,
    _positive_int,
    make_permuted_stream,
    make_rotated_stream,
    make_split_stream,
    make_task_stream,
)

__all__ = ["HELD_OUT_STREAMS", "load_drift_tabular", "load_permuted_tabular",
           "load_rotated_digits", "load_split_tabular"]


def load_rotated_digits(n_experiences: int = 5) -> TaskStream:
    """Rotated-digits, a held-out domain-incremental stream.

    The split of :func:`load_split_digits` with all 10 classes in every
    experience; experience ``t`` rotates every image by ``180 * t /
    n_experiences`` degrees (:func:`make_rotated_stream`).

    Parameters
    ----------
    n_experiences : int, default=5
        Number of experiences (rotations 0, 36, 72, 108, 144 degrees).

    Returns
    -------
    stream : TaskStream
        Named ``'rotated-digits'``, default scenario ``'domain'``.

    Examples
    --------
    >>> from skcl.heldout import load_rotated_digits
    >>> stream = load_rotated_digits()
    >>> len(stream), stream.default_scenario, len(stream[0].y_train)
    (5, 'domain', 1257)
    """
    X, y = _digits()
    return make_rotated_stream(X, y, (8, 8), n_experiences=n_experiences, name="rotated-digits")


def _tabular(n_samples: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes of ``make_classification`` in 32 standardized features (16 informative)."""
    X, y = make_classification(
        n_samples=n_samples, n_features=32, n_informative=16, n_redundant=4, n_classes=10,
        n_clusters_per_class=2, class_sep=1.5, flip_y=0.0, random_state=random_state,
    )
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X.astype(np.float32), y


def load_split_tabular() -> TaskStream:
    """Split-tabular, a held-out class-incremental stream of synthetic tabular data.

    1800 samples of ten classes drawn by scikit-learn's ``make_classification``
    (32 features standardized over the whole set, 16 informative, two Gaussian
    clusters per class, ``class_sep=1.5``, ``random_state=1``), split as split-digits: stratified
    70/30, then 5 experiences of classes (0, 1), ..., (8, 9).

    Returns
    -------
    stream : TaskStream
        Named ``'split-tabular'``, default scenario ``'class'``.

    Examples
    --------
    >>> from skcl.heldout import load_split_tabular
    >>> stream = load_split_tabular()
    >>> [exp.classes.tolist() for exp in stream][:2], stream[0].X_train.shape
    ([[0, 1], [2, 3]], (252, 32))
    """
    X, y = _tabular(1800, random_state=1)
    return make_split_stream(X, y, task_classes=DIGITS_TASK_CLASSES, name="split-tabular")


def load_permuted_tabular(n_experiences: int = 10) -> TaskStream:
    """Permuted-tabular: the data of :func:`load_split_tabular`, permuted as permuted-digits.

    Parameters
    ----------
    n_experiences : int, default=10
        Number of experiences; experience ``t`` reorders the 32 features by
        ``np.random.default_rng(t).permutation(32)`` (none for ``t = 0``).

    Returns
    -------
    stream : TaskStream
        Named ``'permuted-tabular'``, default scenario ``'domain'``.

    Examples
    --------
    >>> from skcl.heldout import load_permuted_tabular
    >>> stream = load_permuted_tabular()
    >>> len(stream), stream[0].X_train.shape
    (10, (1260, 32))
    """
    X, y = _tabular(1800, random_state=1)
    return make_permuted_stream(X, y, n_experiences=n_experiences, name="permuted-tabular")


def load_drift_tabular(n_experiences: int = 5, drift: float = 1.5) -> TaskStream:
    """Drift-tabular, a held-out domain-incremental stream whose classes move per task.

    ``400 * n_experiences`` samples of ten classes from ``make_classification``
    (as :func:`load_split_tabular`, ``random_state=2``), 400 per experience;
    in experience ``t`` every sample of class ``c`` is shifted by
    ``drift * u[t, c]``, ``u[t, c]`` a standard normal vector in the 32
    features (``default_rng(t)``; none for ``t = 0``). The class-conditional
    distributions move by about ``drift * sqrt(32)`` per experience, the same
    order as the distance between classes, so a later experience's class may
    sit where another class was before. Each experience is split 70/30,
    stratified, on its own.

    Parameters
    ----------
    n_experiences : int, default=5
    drift : float, default=1.5
        Scale of the per-class shift.

    Returns
    -------
    stream : TaskStream
        Named ``'drift-tabular'``, default scenario ``'domain'``.

    Examples
    --------
    >>> from skcl.heldout import load_drift_tabular
    >>> stream = load_drift_tabular()
    >>> len(stream), stream.default_scenario, stream[0].X_train.shape
    (5, 'domain', (280, 32))
    """
    n_experiences = _positive_int(n_experiences, "n_experiences")
    X, y = _tabular(400 * n_experiences, random_state=2)
    task = np.repeat(np.arange(n_experiences), 400)
    for t in range(1, n_experiences):
        shift = np.random.default_rng(t).standard_normal((10, X.shape[1])).astype(np.float32)
        rows = task == t
        X[rows] += drift * shift[y[rows]]
    return make_task_stream(X, y, task, name="drift-tabular")


#: Streams held out from every choice of a default or a benchmark setting: defaults are
#: checked on them (a method at its defaults must not fall below Naive), never tuned.
HELD_OUT_STREAMS: dict[str, Callable[..., TaskStream]] = {
    "rotated-digits": load_rotated_digits,
    "drift-tabular": load_drift_tabular,
    "split-tabular": load_split_tabular,
    "permuted-tabular": load_permuted_tabular,
}

