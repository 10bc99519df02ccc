"""Scorers that hand ``task_id`` to the estimator, for sklearn's model selection tools.

sklearn's scorers (``scoring="accuracy"``, :func:`~sklearn.metrics.get_scorer`,
:func:`~sklearn.metrics.make_scorer`) call ``predict(X)`` and nothing else, so
a grid search scored with them measures class-incremental accuracy even when
the task of every sample is known. A :class:`TaskScorer` asks for ``task_id``
through sklearn's metadata routing and calls ``predict(X, task_id=...)`` (or
``predict_proba``, ``decision_function``): each sample is judged among its own
task's classes (task-incremental).

Where task ids travel
---------------------
- ``GridSearchCV``, ``RandomizedSearchCV``, ``cross_validate``: enable
  routing (``sklearn.config_context(enable_metadata_routing=True)``), pass
  ``task_id`` to ``fit`` (``cross_validate(..., params={"task_id": ids})``)
  and score with :data:`task_accuracy` or :func:`make_task_scorer`, alone or in
  a dict of scorers. Each fold's training part reaches the estimator's ``fit``
  and its test part reaches the scorer, both sliced by sample.
- ``permutation_importance`` passes no metadata: give the scorer a fixed
  task, ``make_task_scorer(accuracy_score, task_id=2)``, and the data of that
  task.
- ``cross_val_predict`` routes metadata to ``fit`` only, never to
  ``predict``; score with ``cross_validate`` and a task scorer instead.
- :class:`skcl.pipeline.ContinualPipeline` hands ``task_id`` from its
  ``predict``, ``score``, ... to the final estimator, with routing on or off.

dask-ml
-------
``dask_ml.wrappers.Incremental(est).fit(dX, dy, task_id=ids)`` hands the whole
``ids`` array to the ``partial_fit`` of every block, where it has the wrong
length. Train task by task instead, one ``Incremental.partial_fit`` per task
with an integer ``task_id`` (every block of that call belongs to the task),
then close the last task on the fitted estimator. Predict block by block with
``dask.array.map_blocks``, passing the task id, or the blocks of a per-sample
id array aligned with the rows of ``dX``:

.. code-block:: python

    import dask.array as da
    from dask_ml.wrappers import Incremental
    from skcl import NaiveClassifier

    inc = Incremental(NaiveClassifier(random_state=0), shuffle_blocks=False)
    for task, (dX_t, dy_t) in enumerate(tasks):      # dask arrays, rows in blocks
        for _ in range(epochs):
            inc.partial_fit(dX_t, dy_t, task_id=task)
    est = inc.estimator_.end_task()

    # one task for all rows
    pred = dX.map_blocks(lambda b: est.predict(b, task_id=0), drop_axis=1,
                         dtype=est.classes_.dtype)
    # one task per row: dtask has the row chunks of dX
    pred = da.map_blocks(lambda b, t: est.predict(b, task_id=t[:, 0]),
                         dX, dtask[:, None], drop_axis=1, dtype=est.classes_.dtype)

``Incremental`` shuffles the order of blocks within a call unless
``shuffle_blocks=False``; its ``predict`` and ``score`` take no ``task_id``
and are class-incremental.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from numbers import Integral

import numpy as np
from sklearn.metrics import accuracy_score
from sklearn.utils.metadata_routing import UNCHANGED, MetadataRequest

from skcl._validation import check_task_ids

_RESPONSE_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function")


class TaskScorer:
    """Scorer ``scorer(estimator, X, y_true, task_id=...)`` that predicts with ``task_id``.

    Build one with :func:`make_task_scorer`. Under sklearn's metadata routing
    it requests ``task_id`` for ``score`` (and ``sample_weight`` on request,
    as sklearn's scorers do), so model selection tools route it the sample
    ids of each test fold. It then calls the estimator's response method as
    ``method(X, task_id=task_id)`` and returns ``sign * score_func(y_true,
    response, **kwargs)``.

    For a two-class estimator, ``predict_proba`` and ``predict_log_proba``
    are reduced to the column of the positive class (``pos_label`` in
    ``kwargs``, else ``classes_[1]``), as sklearn's scorers do; other
    responses reach ``score_func`` as the estimator returns them.

    Parameters
    ----------
    score_func : callable
        ``score_func(y_true, response, **kwargs) -> float``.
    response_method : str or sequence of str
        The method called, or methods tried in order (the first the estimator
        has is called): ``'predict'``, ``'predict_proba'``,
        ``'predict_log_proba'``, ``'decision_function'``.
    sign : {1, -1}
        1 when a larger ``score_func`` is better, -1 when smaller is.
    task_id : int or None
        Task used when the call brings none; ``None`` makes such a call raise.
    kwargs : dict
        Further arguments of ``score_func``.

    Examples
    --------
    >>> from skcl import NaiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.scoring import task_accuracy
    >>> stream = load_split_digits()
    >>> clf = NaiveClassifier(hidden_layer_sizes=(32,), random_state=0)
    >>> for exp in stream[:2]:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> X, y = stream[0].X_test, stream[0].y_test
    >>> task_accuracy(clf, X, y, task_id=0) == clf.score(X, y, task_id=0)
    True
    """

    def __init__(self, score_func: Callable, response_method: str | Sequence[str],
                 sign: int, task_id: int | None, kwargs: dict):
        self._score_func = score_func
        self._response_method = response_method
        self._sign = sign
        self._task_id = task_id
        self._kwargs = kwargs
        self._requests = {"task_id": True}
        if self._accept_sample_weight():
            self._requests["sample_weight"] = None

    def __call__(self, estimator, X, y_true, task_id=None, sample_weight=None) -> float:
        """Score ``estimator`` on ``X, y_true``, predicting with ``task_id``.

        Parameters
        ----------
        estimator : object
            A fitted estimator whose response method takes ``task_id``.
        X : array-like of shape (n_samples, n_features)
        y_true : array-like of shape (n_samples,)
        task_id : int or array-like of shape (n_samples,), default=None
            The task of the samples, or of each sample; ``None`` takes the
            scorer's fixed task.
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to ``score_func``.

        Returns
        -------
        score : float
        """
        if task_id is None:
            task_id = self._task_id
        if task_id is None:
            raise ValueError(
                f"{self!r} got no task_id. Under sklearn's metadata routing "
                "(sklearn.set_config(enable_metadata_routing=True)) pass task_id to fit "
                "(GridSearchCV(...).fit(X, y, task_id=ids), cross_validate(..., "
                "params={'task_id': ids})), call the scorer with task_id=..., or fix the "
                "task with make_task_scorer(..., task_id=t)."
            )
        response = self._response(estimator, X, task_id)
        kwargs = dict(self._kwargs)
        if sample_weight is not None:
            kwargs["sample_weight"] = sample_weight
        return self._sign * self._score_func(y_true, response, **kwargs)

    def _response(self, estimator, X, task_id):
        names = ((self._response_method,) if isinstance(self._response_method, str)
                 else tuple(self._response_method))
        name = next((n for n in names if hasattr(estimator, n)), None)
        if name is None:
            raise AttributeError(
                f"{type(estimator).__name__} has none of the response methods {list(names)}"
            )
        response = getattr(estimator, name)(X, task_id=task_id)
        classes = getattr(estimator, "classes_", None)
        if (name in ("predict_proba", "predict_log_proba") and classes is not None
                and len(classes) == 2 and np.ndim(response) == 2):
            positive = self._kwargs.get("pos_label", classes[1])
            response = response[:, list(classes).index(positive)]
        return response

    def set_score_request(self, *, task_id=UNCHANGED, sample_weight=UNCHANGED) -> TaskScorer:
        """Set which metadata the scorer requests under sklearn's metadata routing.

        The scorer changes in place, like sklearn's scorers; the ready-made
        :data:`task_accuracy` is shared, so build your own with
        :func:`make_task_scorer` before changing its requests.

        Parameters
        ----------
        task_id : bool, None or str, default=UNCHANGED
            ``True`` (the default state) requests ``task_id``; a string
            requests it under that name (an alias).
        sample_weight : bool, None or str, default=UNCHANGED
            ``True`` requests ``sample_weight`` for ``score_func`` (which must
            take it).

        Returns
        -------
        self
        """
        if sample_weight is not UNCHANGED and not self._accept_sample_weight():
            raise ValueError(
                f"{self._func_name()} takes no sample_weight, so the scorer cannot request it"
            )
        for param, alias in (("task_id", task_id), ("sample_weight", sample_weight)):
            if alias is not UNCHANGED:
                self._requests[param] = alias
        return self

    def get_metadata_routing(self) -> MetadataRequest:
        """The metadata the scorer requests: ``task_id`` and, if asked, ``sample_weight``.

        Returns
        -------
        routing : sklearn.utils.metadata_routing.MetadataRequest
        """
        request = MetadataRequest(owner=self)
        for param, alias in self._requests.items():
            request.score.add_request(param=param, alias=alias)
        return request

    def _accept_sample_weight(self) -> bool:
        # sklearn's search estimators ask this, routing off, before handing weights on.
        return "sample_weight" in inspect.signature(self._score_func).parameters

    def _func_name(self) -> str:
        return getattr(self._score_func, "__name__", repr(self._score_func))

    def __repr__(self) -> str:
        parts = [self._func_name()]
        if self._response_method != "predict":
            parts.append(f"response_method={self._response_method!r}")
        if self._sign < 0:
            parts.append("greater_is_better=False")
        if self._task_id is not None:
            parts.append(f"task_id={self._task_id}")
        parts += [f"{k}={v!r}" for k, v in self._kwargs.items()]
        return f"make_task_scorer({', '.join(parts)})"


def make_task_scorer(score_func: Callable, *,
                     response_method: str | Sequence[str] = "predict",
                     greater_is_better: bool = True, task_id: int | None = None,
                     **kwargs) -> TaskScorer:
    """Make a scorer that predicts with each sample's ``task_id`` (task-incremental).

    The counterpart of :func:`sklearn.metrics.make_scorer` for continual
    learning: the scorer requests ``task_id`` through sklearn's metadata
    routing and hands it to the estimator's response method.

    Parameters
    ----------
    score_func : callable
        Metric ``score_func(y_true, response, **kwargs)``, such as
        :func:`~sklearn.metrics.accuracy_score` or
        :func:`~sklearn.metrics.f1_score`.
    response_method : str or sequence of str, default='predict'
        ``'predict'``, ``'predict_proba'``, ``'predict_log_proba'`` or
        ``'decision_function'``, or several of them to try in order.
    greater_is_better : bool, default=True
        Whether a larger ``score_func`` is better; if not, the scorer returns
        its negative, as sklearn's scorers do.
    task_id : int, default=None
        A task for calls that bring no ``task_id`` (``permutation_importance``
        passes no metadata); routed or passed task ids take precedence. An
        integer only: such callers may score subsets of the rows.
    **kwargs
        Further arguments of ``score_func``.

    Returns
    -------
    scorer : TaskScorer

    Raises
    ------
    ValueError
        If ``response_method`` names an unknown method or ``task_id`` is not a
        non-negative integer.

    Examples
    --------
    Task-incremental grid search, with a second metric:

    >>> import numpy as np
    >>> import sklearn
    >>> from sklearn.metrics import f1_score
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skcl import NaiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.scoring import make_task_scorer, task_accuracy
    >>> first_two = load_split_digits()[:2]
    >>> X = np.concatenate([exp.X_train[:150] for exp in first_two])
    >>> y = np.concatenate([exp.y_train[:150] for exp in first_two])
    >>> task_id = np.repeat([exp.task_id for exp in first_two], 150)
    >>> scoring = {"acc": task_accuracy, "f1": make_task_scorer(f1_score, average="macro")}
    >>> est = NaiveClassifier(hidden_layer_sizes=(16,), max_epochs=1, random_state=0)
    >>> with sklearn.config_context(enable_metadata_routing=True):
    ...     search = GridSearchCV(est, {"learning_rate": [0.01, 0.05]}, scoring=scoring,
    ...                           refit="acc", cv=2).fit(X, y, task_id=task_id)
    >>> sorted(search.best_params_)
    ['learning_rate']
    """
    names = (response_method,) if isinstance(response_method, str) else tuple(response_method)
    unknown = [n for n in names if n not in _RESPONSE_METHODS]
    if not names or unknown:
        raise ValueError(
            f"response_method must be one or more of {list(_RESPONSE_METHODS)}, "
            f"got {response_method!r}"
        )
    if task_id is not None:
        if not isinstance(task_id, Integral):
            raise ValueError(
                f"task_id of a scorer must be one integer task, got {task_id!r}: a scorer "
                "may be called on subsets of the rows, where per-sample ids would not line up"
            )
        check_task_ids(task_id, 1)
        task_id = int(task_id)
    return TaskScorer(score_func, response_method, 1 if greater_is_better else -1, task_id,
                      kwargs)


task_accuracy = make_task_scorer(accuracy_score)
"""Task-incremental accuracy: ``accuracy_score`` of ``predict(X, task_id=...)``."""
