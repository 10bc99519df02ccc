"""Task streams: the data a continual learner sees, one experience at a time.

A :class:`TaskStream` is an ordered sequence of :class:`Experience` objects,
each with its own train and test arrays. Any ``(X, y)`` arrays become a stream
of disjoint classes (:func:`make_split_stream`), of feature permutations
(:func:`make_permuted_stream`), of image rotations
(:func:`make_rotated_stream`) or of a task label per sample
(:func:`make_task_stream`); :mod:`skcl.tabular` reads them from CSV,
Parquet and ``.npz`` files. The protocol's streams (``PROTOCOL.md``),
built on scikit-learn's bundled digits, are listed in :data:`STREAMS`;
:data:`skcl.heldout.HELD_OUT_STREAMS` lists streams no default or benchmark
setting is chosen on, on which defaults are checked;
:func:`load_mnist_idx` reads MNIST-format files.

Examples
--------
>>> from skcl.datasets import load_split_digits
>>> stream = load_split_digits()
>>> [exp.classes.tolist() for exp in stream]
[[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits

from skcl._streams import _check_X_y, _positive_int, _resolve_task_classes, _rotate, _split_indices
from skcl.idx import load_idx, load_mnist_idx

__all__ = [
    "STREAMS", "Experience", "TaskStream", "load_idx", "load_mnist_idx", "load_permuted_digits",
    "load_split_digits", "load_stream", "make_permuted_stream", "make_rotated_stream",
    "make_split_stream", "make_task_stream",
]

SCENARIOS = ("class", "task", "domain")

#: Split-digits class groups of the benchmark protocol, in stream order.
DIGITS_TASK_CLASSES = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


@dataclass(frozen=True, eq=False)
class Experience:
    """One step of a stream: a train set, a test set and the task it belongs to.

    Parameters
    ----------
    X_train, X_test : ndarray of shape (n_samples, n_features), dtype float32
        Training and test inputs.
    y_train, y_test : ndarray of shape (n_samples,)
        Training and test labels.
    task_id : int
        The task identifier passed to ``partial_fit(..., task_id=task_id)``.
    classes : ndarray
        Sorted labels present in this experience.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.datasets import Experience
    >>> X, y = np.zeros((4, 3), dtype=np.float32), np.array([0, 1, 0, 1])
    >>> Experience(X, y, X, y, task_id=0, classes=np.array([0, 1]))
    Experience(task_id=0, classes=[0, 1], n_train=4, n_test=4)
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task_id: int
    classes: np.ndarray

    def __post_init__(self) -> None:
        for X, y in ((self.X_train, self.y_train), (self.X_test, self.y_test)):
            if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
                raise ValueError(
                    f"Experience needs X of shape (n, n_features) and y of shape (n,); got X "
                    f"{X.shape} and y {y.shape}."
                )
        if self.X_train.shape[1] != self.X_test.shape[1]:
            raise ValueError("Experience train and test sets differ in their number of features.")

    @property
    def n_features(self) -> int:
        """Number of input features."""
        return int(self.X_train.shape[1])

    def __repr__(self) -> str:
        return (
            f"Experience(task_id={self.task_id}, classes={self.classes.tolist()}, "
            f"n_train={len(self.y_train)}, n_test={len(self.y_test)})"
        )


class TaskStream(Sequence):
    """An ordered sequence of experiences with a name and a default scenario.

    Parameters
    ----------
    experiences : sequence of Experience
        The experiences in training order; all share one number of features.
    name : str, default="stream"
        Name used in reports and plots.
    default_scenario : {'class', 'task', 'domain'}, default='class'
        How :func:`skcl.evaluation.evaluate_stream` scores the stream unless
        told: ``'class'`` (no task id at test, all classes compete), ``'task'``
        (task id given at test) or ``'domain'`` (the same classes in every
        experience, no task id at test). Stored as an attribute, like ``name``.

    Examples
    --------
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> stream
    TaskStream(name='split-digits', n_experiences=5, n_features=64, n_classes=10, default_scenario='class')
    >>> len(stream), stream[0].task_id, stream.n_features
    (5, 0, 64)
    """  # noqa: E501

    def __init__(
        self, experiences: Sequence[Experience], name: str = "stream",
        default_scenario: str = "class",
    ) -> None:
        experiences = tuple(experiences)
        if not experiences:
            raise ValueError("A TaskStream needs at least one experience.")
        if not all(isinstance(exp, Experience) for exp in experiences):
            raise ValueError("TaskStream items must be Experience objects.")
        n_features = {exp.n_features for exp in experiences}
        if len(n_features) != 1:
            raise ValueError(f"Experiences have different numbers of features: {n_features}.")
        if default_scenario not in SCENARIOS:
            raise ValueError(f"default_scenario must be one of {SCENARIOS}: {default_scenario!r}.")
        self._experiences = experiences
        self.name = str(name)
        self.default_scenario = default_scenario

    def __len__(self) -> int:
        return len(self._experiences)

    def __getitem__(self, index):
        return self._experiences[index]

    def __iter__(self) -> Iterator[Experience]:
        return iter(self._experiences)

    @property
    def n_experiences(self) -> int:
        """Number of experiences."""
        return len(self._experiences)

    @property
    def n_features(self) -> int:
        """Number of input features, shared by all experiences."""
        return self._experiences[0].n_features

    @property
    def classes(self) -> np.ndarray:
        """Sorted union of the classes of all experiences."""
        return np.unique(np.concatenate([exp.classes for exp in self._experiences]))

    @property
    def task_ids(self) -> list[int]:
        """Task id of each experience, in stream order."""
        return [exp.task_id for exp in self._experiences]

    def __repr__(self) -> str:
        return (
            f"TaskStream(name={self.name!r}, n_experiences={self.n_experiences}, "
            f"n_features={self.n_features}, n_classes={len(self.classes)}, "
            f"default_scenario={self.default_scenario!r})"
        )


def _class_experiences(X, y, train, test, groups) -> list[Experience]:
    """Experience ``t``: the train and test rows whose class is in ``groups[t]``."""
    X_train, y_train, X_test, y_test = X[train], y[train], X[test], y[test]
    experiences = []
    for t, labels in enumerate(groups):
        tr, te = np.isin(y_train, labels), np.isin(y_test, labels)
        experiences.append(_experience(X_train[tr], y_train[tr], X_test[te], y_test[te], t))
    return experiences


def _permuted_experiences(X, y, train, test, n_experiences: int) -> list[Experience]:
    """Experience ``t``: every row, features reordered by ``default_rng(t)`` (``t > 0``)."""
    X_train, y_train, X_test, y_test = X[train], y[train], X[test], y[test]
    experiences = []
    for t in range(n_experiences):
        perm = np.random.default_rng(t).permutation(X.shape[1]) if t else np.arange(X.shape[1])
        experiences.append(_experience(X_train[:, perm], y_train, X_test[:, perm], y_test, t))
    return experiences


def _task_experiences(X, y, train, test, task) -> list[Experience]:
    """Experience ``t``: the rows of the ``t``-th smallest task value."""
    return [
        _experience(X[tr], y[tr], X[te], y[te], t)
        for t, (tr, te) in enumerate(
            (train[task[train] == value], test[task[test] == value]) for value in np.unique(task)
        )
    ]


def _no_id_scenario(experiences: Sequence[Experience]) -> str:
    """``'domain'`` when every experience holds the same classes, else ``'class'``."""
    return "domain" if len({tuple(exp.classes.tolist()) for exp in experiences}) == 1 else "class"


def _experience(X_train, y_train, X_test, y_test, task_id: int) -> Experience:
    classes = np.unique(np.concatenate([y_train, y_test]))
    return Experience(
        np.ascontiguousarray(X_train, dtype=np.float32), y_train,
        np.ascontiguousarray(X_test, dtype=np.float32), y_test,
        task_id=int(task_id), classes=classes,
    )


def make_split_stream(
    X, y, classes_per_task: int = 2, task_classes: Sequence[Sequence] | None = None,
    test_size: float = 0.3, random_state: int | None = 0, name: str = "split",
    default_scenario: str = "class",
) -> TaskStream:
    """Split a classification data set into experiences of disjoint classes.

    The data is first split once into train and test sets (stratified by
    class), then experience ``t`` takes the samples of its classes from each.

    Parameters
    ----------
    X, y : array-like of shape (n_samples, n_features) and (n_samples,)
        Inputs (converted to float32; NaN or infinity is an error) and labels
        (integers or strings).
    classes_per_task : int, default=2
        Classes per experience when ``task_classes`` is not given: the sorted
        unique labels are taken in order, ``classes_per_task`` at a time (the
        last experience holds the remainder).
    task_classes : sequence of sequences of labels, optional
        The classes of each experience, in stream order. Every label must occur
        in ``y`` and in at most one experience; samples of classes not listed
        are left out of the stream.
    test_size, random_state : float, int or None, default=0.3, 0
        Size and seed of the stratified :func:`~sklearn.model_selection.train_test_split`.
    name : str, default="split"
        Name of the stream.
    default_scenario : {'class', 'task'}, default='class'
        Scenario the stream is scored in by default.

    Returns
    -------
    stream : TaskStream
        Experience ``t`` has ``task_id == t``.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.datasets import make_split_stream
    >>> X = np.arange(24, dtype=float).reshape(12, 2)
    >>> y = np.array(["a", "b", "c", "d"] * 3)
    >>> stream = make_split_stream(X, y, task_classes=[("d", "a"), ("b",)], test_size=1 / 3)
    >>> [exp.classes.tolist() for exp in stream]
    [['a', 'd'], ['b']]
    """
    X, y = _check_X_y(X, y)
    if default_scenario not in ("class", "task"):
        raise ValueError(f"default_scenario must be 'class' or 'task': {default_scenario!r}.")
    groups = _resolve_task_classes(np.unique(y), classes_per_task, task_classes)
    keep = np.isin(y, np.concatenate(groups))
    X, y = X[keep], y[keep]
    train, test = _split_indices(y, test_size, random_state)
    return TaskStream(_class_experiences(X, y, train, test, groups), name=name,
                      default_scenario=default_scenario)


def make_permuted_stream(
    X, y, n_experiences: int = 10, test_size: float = 0.3, random_state: int | None = 0,
    name: str = "permuted",
) -> TaskStream:
    """Build a domain-incremental stream of fixed feature permutations.

    The data is split once into train and test sets (stratified). Experience
    ``t`` holds all of it with its features reordered by
    ``np.random.default_rng(t).permutation(n_features)``, except experience 0,
    which keeps the original order.

    Parameters
    ----------
    X, y : array-like of shape (n_samples, n_features) and (n_samples,)
        Inputs (converted to float32) and labels (integers or strings).
    n_experiences : int, default=10
        Number of experiences.
    test_size, random_state : float, int or None, default=0.3, 0
        Size and seed of the stratified train/test split (not of the permutations).
    name : str, default="permuted"
        Name of the stream.

    Returns
    -------
    stream : TaskStream
        Default scenario ``'domain'``; experience ``t`` has ``task_id == t``.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.datasets import make_permuted_stream
    >>> X = np.tile(np.arange(5.0), (8, 1))
    >>> y = np.array([0, 1] * 4)
    >>> stream = make_permuted_stream(X, y, n_experiences=2, test_size=0.5)
    >>> stream[0].X_train[0].tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0]
    >>> bool((stream[1].X_train[0] == np.random.default_rng(1).permutation(5)).all())
    True
    """
    X, y = _check_X_y(X, y)
    n_experiences = _positive_int(n_experiences, "n_experiences")
    train, test = _split_indices(y, test_size, random_state)
    return TaskStream(_permuted_experiences(X, y, train, test, n_experiences), name=name,
                      default_scenario="domain")


def make_task_stream(
    X, y, task, test_size: float = 0.3, random_state: int | None = 0, name: str = "tasks",
) -> TaskStream:
    """Build a stream from a task label per sample (a period, a site, a subject...).

    Experience ``t`` holds the samples of the ``t``-th smallest value of
    ``task`` (numbers in numeric order, strings in lexicographic order) and
    has ``task_id == t``. Each task's samples are split into train and test
    sets on their own, stratified by class, with ``random_state``: the same
    seed gives the same split.

    Parameters
    ----------
    X, y : array-like of shape (n_samples, n_features) and (n_samples,)
        Inputs (converted to float32) and labels (integers or strings).
    task : array-like of shape (n_samples,)
        Task of each sample (numbers or strings; no missing values).
    test_size, random_state : float, int or None, default=0.3, 0
        Size and seed of each task's stratified train/test split.
    name : str, default="tasks"
        Name of the stream.

    Returns
    -------
    stream : TaskStream
        Default scenario ``'domain'`` when every task holds the same classes,
        ``'class'`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.datasets import make_task_stream
    >>> X = np.arange(16.0).reshape(8, 2)
    >>> y = np.array([0, 1, 0, 1, 2, 3, 2, 3])
    >>> stream = make_task_stream(X, y, task=["b"] * 4 + ["a"] * 4, test_size=0.5)
    >>> [exp.classes.tolist() for exp in stream], stream.default_scenario
    ([[2, 3], [0, 1]], 'class')
    """
    X, y = _check_X_y(X, y)
    task = np.asarray(task)
    if task.shape != y.shape:
        raise ValueError(f"task must hold one value per sample: shape {task.shape}, "
                         f"expected {y.shape}.")
    if task.dtype.kind == "f" and not np.isfinite(task).all():
        raise ValueError("task contains NaN or infinity.")
    if task.dtype.kind == "O":
        raise ValueError("task must hold numbers or strings, got Python objects.")
    train, test = _split_indices(y, test_size, random_state, task=task)
    experiences = _task_experiences(X, y, train, test, task)
    return TaskStream(experiences, name=name, default_scenario=_no_id_scenario(experiences))


def make_rotated_stream(
    X, y, image_shape: Sequence[int], angles: Sequence[float] | None = None,
    n_experiences: int | None = None, test_size: float = 0.3, random_state: int | None = 0,
    name: str = "rotated",
) -> TaskStream:
    """Build a domain-incremental stream of rotated images.

    The data is split once into train and test sets (stratified). Experience
    ``t`` holds all of it with every image rotated counter-clockwise by
    ``angles[t]`` degrees about its centre, keeping the image size
    (:func:`scipy.ndimage.rotate` with ``reshape=False, order=1``: bilinear
    interpolation, zeros where the rotated image leaves the frame).

    Parameters
    ----------
    X, y : array-like of shape (n_samples, n_features) and (n_samples,)
        Flattened images in row-major order (``n_features`` must equal
        ``prod(image_shape)``) and labels (integers or strings).
    image_shape : tuple of int
        ``(height, width)`` or ``(height, width, channels)`` of one image.
    angles : sequence of float, optional
        Rotation of each experience in degrees. Give this or ``n_experiences``.
    n_experiences : int, optional
        Number of experiences, with angles ``180 * t / n_experiences``
        (0, 45, 90, 135 for four). Defaults to 4 when ``angles`` is not given.
    test_size, random_state : float, int or None, default=0.3, 0
        Size and seed of the stratified train/test split.
    name : str, default="rotated"
        Name of the stream.

    Returns
    -------
    stream : TaskStream
        Default scenario ``'domain'``; experience ``t`` has ``task_id == t``.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.datasets import make_rotated_stream
    >>> from sklearn.datasets import load_digits
    >>> digits = load_digits()
    >>> stream = make_rotated_stream(digits.data / 16, digits.target, (8, 8), angles=[0, 90])
    >>> image = stream[0].X_test[0].reshape(8, 8)
    >>> bool(np.allclose(stream[1].X_test[0].reshape(8, 8), np.rot90(image), atol=1e-5))
    True
    """
    X, y = _check_X_y(X, y)
    image_shape = tuple(int(s) for s in np.atleast_1d(image_shape))
    if len(image_shape) not in (2, 3) or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (height, width[, channels]), got {image_shape}.")
    if int(np.prod(image_shape)) != X.shape[1]:
        raise ValueError(f"image_shape {image_shape} does not match X's {X.shape[1]} features.")
    if angles is not None and n_experiences is not None:
        raise ValueError("Give angles or n_experiences, not both.")
    if angles is None:
        n = 4 if n_experiences is None else _positive_int(n_experiences, "n_experiences")
        angles = [180.0 * t / n for t in range(n)]
    angles = [float(a) for a in angles]
    if not angles or not np.isfinite(angles).all():
        raise ValueError(f"angles must be a non-empty sequence of finite numbers, got {angles}.")
    train, test = _split_indices(y, test_size, random_state)
    X_train, X_test, y_train, y_test = X[train], X[test], y[train], y[test]
    experiences = [
        _experience(_rotate(X_train, image_shape, a), y_train, _rotate(X_test, image_shape, a),
                    y_test, t)
        for t, a in enumerate(angles)
    ]
    return TaskStream(experiences, name=name, default_scenario="domain")


def _digits() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target


def load_split_digits() -> TaskStream:
    """Split-digits, the protocol's class-incremental stream.

    scikit-learn's bundled digits (1797 8x8 images) scaled to [0, 1] as
    float32, split once with stratified
    ``train_test_split(test_size=0.3, random_state=0)`` (1257 train, 540
    test), then into 5 experiences of classes (0, 1), (2, 3), (4, 5), (6, 7),
    (8, 9) in that order, with task ids 0 to 4.

    Returns
    -------
    stream : TaskStream
        Named ``'split-digits'``, default scenario ``'class'``.

    Examples
    --------
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> sum(len(exp.y_train) for exp in stream), sum(len(exp.y_test) for exp in stream)
    (1257, 540)
    """
    X, y = _digits()
    return make_split_stream(X, y, task_classes=DIGITS_TASK_CLASSES, name="split-digits")


def load_permuted_digits(n_experiences: int = 10) -> TaskStream:
    """Permuted-digits, the protocol's domain-incremental stream.

    The split of :func:`load_split_digits` with all 10 classes in every
    experience; experience ``t`` reorders the 64 pixels by
    ``np.random.default_rng(t).permutation(64)`` and experience 0 is the
    original image. Task ids are 0 to ``n_experiences - 1``.

    Parameters
    ----------
    n_experiences : int, default=10
        Number of experiences (the protocol uses 10).

    Returns
    -------
    stream : TaskStream
        Named ``'permuted-digits'``, default scenario ``'domain'``.

    Examples
    --------
    >>> from skcl.datasets import load_permuted_digits
    >>> stream = load_permuted_digits()
    >>> len(stream), stream.default_scenario, stream[3].classes.tolist()
    (10, 'domain', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """
    X, y = _digits()
    return make_permuted_stream(X, y, n_experiences=n_experiences, name="permuted-digits")


#: The protocol's named streams: name -> loader taking no required argument.
STREAMS: dict[str, Callable[..., TaskStream]] = {
    "split-digits": load_split_digits,
    "permuted-digits": load_permuted_digits,
}


def load_stream(name: str, **kwargs) -> TaskStream:
    """Load a named stream of :data:`STREAMS`.

    Parameters
    ----------
    name : str
        A key of :data:`STREAMS` (``'split-digits'``, ``'permuted-digits'``);
        the held-out streams are loaded from :data:`skcl.heldout.HELD_OUT_STREAMS`.
    **kwargs
        Passed to the loader (e.g. ``n_experiences`` for permuted-digits).

    Returns
    -------
    stream : TaskStream

    Examples
    --------
    >>> from skcl.datasets import load_stream
    >>> load_stream("permuted-digits", n_experiences=3).n_experiences
    3
    """
    try:
        loader = STREAMS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown stream {name!r}; valid names: {', '.join(sorted(STREAMS))}."
        ) from None
    return loader(**kwargs)
