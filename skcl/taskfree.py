"""Streams without task ids: find the task boundaries, then let the method do its work.

river's ``learn_one``, dask-ml's ``Incremental`` and most production streams
never say when a task ends. Every call is then task 0, no task ever ends, and
every method falls back to its in-task behaviour: EWC never computes an
importance, GEM never keeps an old task's memory. Task-free continual learning
(Aljundi, Kelchtermans & Tuytelaars, "Task-Free Continual Learning", CVPR 2019)
detects the boundaries from the stream itself. :class:`TaskFreeClassifier`
wraps any skcl estimator, numbers the tasks it detects, and hands those ids
to the estimator, so each detected boundary runs the method's end-of-task work.

Boundary policies (``boundary``):

- ``'none'``: one task forever (what a bare estimator does without task ids);
- ``'labels'``: a label the current task has not shown starts a new task, once
  the task has seen ``min_task_size`` samples. Right for streams whose tasks
  bring new classes (class-incremental);
- ``'loss'``: a shift in the loss, as in Aljundi et al.: every call is scored
  (log loss of the current model, before it trains on the call); the task's
  plateau is the mean loss of the ``min_task_size`` samples before the latest
  ``window`` (at least 0.1 nats, so that noise on a near-zero loss is no
  shift), and a new task starts when the latest ``window`` samples' mean
  exceeds ``threshold`` times the plateau. A plateau over many samples keeps
  the noise of single-sample losses from looking like a shift (on
  permuted-digits learned one sample at a time, window means within a task
  vary threefold, while a new permutation raises them fivefold). The samples
  of the window that revealed the shift were already learned as the old
  task's. Right for streams whose tasks share their
  classes but shift their inputs (domain-incremental);
- an integer ``N``: a new task every ``N`` samples.
"""

from __future__ import annotations

from collections import deque
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

__all__ = ["TaskFreeClassifier"]

_MIN_PLATEAU = 0.1


class TaskFreeClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A continual learner on a stream without task ids: it detects the task boundaries.

    Wraps a skcl estimator (a clone of ``estimator`` is trained) and feeds it
    task ids of its own: ``0`` until the first boundary the policy detects,
    then ``1``, and so on. At each boundary the estimator's end-of-task work
    runs (importances, exemplars, memories), as it would with task ids. The
    policies are described in :mod:`skcl.taskfree`.

    Parameters
    ----------
    estimator : skcl estimator
        The method; its ``partial_fit`` takes ``task_id``.
    boundary : {'none', 'labels', 'loss'} or int, default='labels'
        How a new task is detected (an int ``N``: every ``N`` samples).
    min_task_size : int, default=200
        Samples a task has seen before a boundary may end it ('labels', 'loss').
    window : int, default=50
        Samples per loss window ('loss').
    threshold : float, default=3.0
        How many times the plateau's loss the latest window must reach ('loss').

    Attributes
    ----------
    estimator_ : skcl estimator
        The trained clone.
    task_ : int
        The id of the task being learned.
    boundaries_ : list of int
        For each detected boundary, the number of samples seen before it.
    n_samples_seen_ : int
    classes_ : ndarray
        The estimator's classes.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl import NaiveClassifier
    >>> from skcl.taskfree import TaskFreeClassifier
    >>> rng = np.random.default_rng(0)
    >>> clf = TaskFreeClassifier(NaiveClassifier(hidden_layer_sizes=(8,), random_state=0),
    ...                          boundary="labels", min_task_size=20)
    >>> for labels in [(0, 1), (2, 3)]:
    ...     y = rng.permutation(np.repeat(labels, 20))
    ...     X = rng.normal(size=(40, 4)) + y[:, None]
    ...     for i in range(0, 40, 10):
    ...         clf = clf.partial_fit(X[i:i + 10], y[i:i + 10])
    >>> clf.boundaries_, clf.task_
    ([40], 1)
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["partial_fit", "end_task"])],
        "boundary": [StrOptions({"none", "labels", "loss"}),
                     Interval(Integral, 1, None, closed="left")],
        "min_task_size": [Interval(Integral, 1, None, closed="left")],
        "window": [Interval(Integral, 1, None, closed="left")],
        "threshold": [Interval(Real, 1, None, closed="neither")],
    }

    def __init__(self, estimator, boundary="labels", min_task_size=200, window=50,
                 threshold=3.0):
        self.estimator = estimator
        self.boundary = boundary
        self.min_task_size = min_task_size
        self.window = window
        self.threshold = threshold

    def fit(self, X, y, sample_weight=None):
        """Reset, then learn ``X, y`` as one pass over a stream, in order, in calls of
        ``window`` samples.

        Returns
        -------
        self
        """
        X, y = validate_data(self, X, y, reset=True, dtype=np.float32)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X)
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            if name not in ("n_features_in_", "feature_names_in_"):
                delattr(self, name)
        for start in range(0, len(y), self.window):
            rows = slice(start, start + self.window)
            weight = None if sample_weight is None else sample_weight[rows]
            self.partial_fit(X[rows], y[rows], sample_weight=weight)
        return self

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Learn from ``X, y``: first decide whether they open a new task, then train.

        A call is assigned to one task as a whole; feed small calls (river's
        ``learn_one`` feeds one sample) for the boundary to fall where the
        stream shifts.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like, default=None
            Passed on (fixes the class set, as in ``SGDClassifier``).
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        first = not hasattr(self, "estimator_")
        X, y = validate_data(self, X, y, reset=first and not hasattr(self, "n_features_in_"),
                             dtype=np.float32)
        if first:
            self.estimator_ = clone(self.estimator)
            self.task_, self.boundaries_, self.n_samples_seen_ = 0, [], 0
            self._task_samples_, self._task_labels_ = 0, set()
            self._losses_: deque = deque(maxlen=self.min_task_size + self.window)
        y_array = y
        if not first and self._starts_new_task(X, y_array):
            self.boundaries_.append(self.n_samples_seen_)
            self.task_ += 1
            self._task_samples_, self._task_labels_ = 0, set()
            self._losses_.clear()
        self.estimator_.partial_fit(X, y, task_id=self.task_, classes=classes,
                                    sample_weight=sample_weight)
        n = len(y_array)
        self.n_samples_seen_ += n
        self._task_samples_ += n
        self._task_labels_.update(np.unique(y_array).tolist())
        return self

    def _starts_new_task(self, X, y: np.ndarray) -> bool:
        if self.boundary == "none":
            return False
        if not isinstance(self.boundary, str):
            return self._task_samples_ >= self.boundary
        if self.boundary == "labels":
            new = not set(np.unique(y).tolist()) <= self._task_labels_
            return new and self._task_samples_ >= self.min_task_size
        return self._loss_shift(X, y)

    def _loss_shift(self, X, y: np.ndarray) -> bool:
        """Score the call before training on it; a window well above the plateau is a shift."""
        proba = self.estimator_.predict_proba(X)
        classes = self.estimator_.classes_
        column = np.minimum(np.searchsorted(classes, y), len(classes) - 1)
        p = np.where(classes[column] == y, proba[np.arange(len(y)), column], 0.0)
        self._losses_.extend((-np.log(np.clip(p, 1e-12, None))).tolist())
        if len(self._losses_) < self._losses_.maxlen:
            return False
        losses = np.fromiter(self._losses_, dtype=float)
        recent, plateau = losses[-self.window:].mean(), losses[:-self.window].mean()
        return bool(recent > self.threshold * max(plateau, _MIN_PLATEAU))

    def end_task(self):
        """Close the current task (e.g. at the end of the stream)."""
        check_is_fitted(self)
        self.estimator_.end_task()
        return self

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator_.classes_

    def predict(self, X, task_id=None):
        """The estimator's prediction (class-incremental unless ``task_id`` is given)."""
        X = self._checked(X)
        return self.estimator_.predict(X, task_id=task_id)

    def predict_proba(self, X, task_id=None):
        """The estimator's class probabilities."""
        X = self._checked(X)
        return self.estimator_.predict_proba(X, task_id=task_id)

    def decision_function(self, X, task_id=None):
        """The estimator's class scores."""
        X = self._checked(X)
        return self.estimator_.decision_function(X, task_id=task_id)

    def score(self, X, y, task_id=None, sample_weight=None):
        """Accuracy of :meth:`predict`."""
        X = self._checked(X)
        return self.estimator_.score(X, y, task_id=task_id, sample_weight=sample_weight)

    def _checked(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=np.float32)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "estimator_")
