"""Validation streams: each experience's training data split again, for honest selection.

:func:`make_validation_stream` is public as :func:`skcl.model_selection.make_validation_stream`.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.model_selection import train_test_split

from skcl.datasets import Experience, TaskStream


def _split_indices(y: np.ndarray, validation_size: float, random_state) -> tuple:
    """Train and validation row indices, stratified by class when every class allows it."""
    n = len(y)
    n_val = int(np.ceil(validation_size * n))
    _, counts = np.unique(y, return_counts=True)
    stratified = counts.min() >= 2 and min(n_val, n - n_val) >= len(counts)
    return train_test_split(np.arange(n), test_size=n_val, random_state=random_state,
                            stratify=y if stratified else None)


def make_validation_stream(
    stream: TaskStream, validation_size: float = 0.2, n_tasks: int | None = None,
    random_state: int | None = 0,
) -> TaskStream:
    """A stream built from training data only: each experience's training split, split again.

    Experience ``t`` of the result trains on part of ``stream[t].X_train`` and
    is "tested" on the rest of it (the validation split); ``stream[t].X_test``
    and ``stream[t].y_test`` are never read, so any score on the result is a
    validation score.

    Parameters
    ----------
    stream : TaskStream
        The stream to tune on.
    validation_size : float, default=0.2
        Fraction of each experience's training samples held out for
        validation (rounded up), in (0, 1).
    n_tasks : int, optional
        Keep only the first ``n_tasks`` experiences (the ``'first-tasks'``
        protocol). Defaults to all of them.
    random_state : int or None, default=0
        Seed of every experience's split. The split is stratified by class
        when each class has two samples or more and both parts can hold every
        class; otherwise it is a plain random split. The same seed is used for
        each experience, so on streams whose experiences share their samples
        in the same order (permuted, rotated) the same samples are held out
        in every experience, and no validation sample is trained on in
        another guise.

    Returns
    -------
    validation_stream : TaskStream
        Named ``'<name>[validation]'``, with the stream's task ids and default
        scenario; each experience's ``classes`` are those of its training
        labels.

    Examples
    --------
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.model_selection import make_validation_stream
    >>> stream = load_split_digits()
    >>> val = make_validation_stream(stream, validation_size=0.25, n_tasks=2)
    >>> val.name, len(val), len(stream[0].y_train), len(val[0].y_train), len(val[0].y_test)
    ('split-digits[validation]', 2, 251, 188, 63)
    """
    if not isinstance(stream, TaskStream):
        raise ValueError(f"stream must be a TaskStream, got {type(stream).__name__}.")
    if (isinstance(validation_size, bool) or not isinstance(validation_size, numbers.Real)
            or not 0.0 < validation_size < 1.0):
        raise ValueError(
            f"validation_size must be a fraction in (0, 1) of each experience's training "
            f"samples, got {validation_size!r}."
        )
    n_tasks = len(stream) if n_tasks is None else _check_n_tasks(n_tasks, stream)
    experiences = []
    for t, exp in enumerate(stream[:n_tasks]):
        n = len(exp.y_train)
        if n - int(np.ceil(validation_size * n)) < 1:
            raise ValueError(
                f"Experience {t} (task id {exp.task_id}) has {n} training sample(s); "
                f"validation_size={validation_size} leaves none to train on."
            )
        fit, val = _split_indices(exp.y_train, validation_size, random_state)
        experiences.append(Experience(
            exp.X_train[fit], exp.y_train[fit], exp.X_train[val], exp.y_train[val],
            task_id=exp.task_id, classes=np.unique(exp.y_train),
        ))
    return TaskStream(experiences, name=f"{stream.name}[validation]",
                      default_scenario=stream.default_scenario)


def _check_n_tasks(n_tasks, stream: TaskStream) -> int:
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, numbers.Integral) or n_tasks < 1:
        raise ValueError(f"n_tasks must be a positive integer, got {n_tasks!r}.")
    if n_tasks > len(stream):
        raise ValueError(
            f"n_tasks={n_tasks} is larger than stream {stream.name!r}, which has "
            f"{len(stream)} experiences."
        )
    return int(n_tasks)
