"""Pipelines that learn from a stream: sklearn's ``Pipeline`` plus ``partial_fit``.

sklearn's :class:`~sklearn.pipeline.Pipeline` has no ``partial_fit``. A
:class:`ContinualPipeline` updates its transformers incrementally where they
support it (``StandardScaler.partial_fit``, ``IncrementalPCA.partial_fit``,
...) and hands ``task_id`` to the final estimator, so a streaming loop reads
the same with a skcl estimator or with ``SGDClassifier`` at the end. Its
``predict``, ``predict_proba``, ``predict_log_proba``, ``decision_function``
and ``score`` take ``task_id`` too and hand it to the final estimator, with
sklearn's metadata routing on or off (a plain ``Pipeline`` drops it from
``score`` and refuses it in ``decision_function`` unless routing is on).
Scorers that pass ``task_id`` on are in :mod:`skcl.scoring`.
"""

from __future__ import annotations

import inspect

import sklearn
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline, _name_estimators
from sklearn.utils.metadata_routing import UNUSED
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted


def _final_estimator_has(method: str):
    """For ``available_if``: whether the final estimator has ``method``."""

    def check(pipeline) -> bool:
        getattr(pipeline._final_estimator, method)
        return True

    return check


class ContinualPipeline(Pipeline):
    """A :class:`~sklearn.pipeline.Pipeline` with ``partial_fit(X, y, task_id=...)``.

    ``partial_fit`` runs each transformer's ``partial_fit`` then its
    ``transform``; a transformer without ``partial_fit`` is fitted on the first
    call's data and only transforms afterwards. The final estimator gets
    ``partial_fit(Xt, y, task_id=..., classes=..., sample_weight=...)``; an
    estimator whose ``partial_fit`` takes no ``task_id`` (e.g.
    ``SGDClassifier``) gets the call without it. ``predict``,
    ``predict_proba``, ``decision_function`` and ``score`` pass ``task_id`` on
    as :class:`~sklearn.pipeline.Pipeline` passes keyword arguments.

    The prediction methods take ``task_id`` (``None``: class-incremental) and
    hand it to the final estimator whether or not sklearn's metadata routing
    is enabled; with routing off, a final estimator whose method takes no
    ``task_id`` raises ``ValueError`` rather than answer another question.

    Parameters are those of :class:`~sklearn.pipeline.Pipeline`.

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skcl import NaiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.pipeline import make_pipeline
    >>> stream = load_split_digits()
    >>> pipe = make_pipeline(StandardScaler(), NaiveClassifier(hidden_layer_sizes=(32,),
    ...                                                         random_state=0))
    >>> for exp in stream:
    ...     pipe = pipe.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> pipe.predict(stream[0].X_test[:2], task_id=0).shape
    (2,)
    >>> score = pipe.score(stream[0].X_test, stream[0].y_test, task_id=0)
    """

    # task_id is an argument of the prediction methods, not a request of the pipeline's
    # own: a Pipeline routes metadata by its steps' requests (get_metadata_routing), so
    # no set_predict_request(...) that would do nothing is generated for it.
    __metadata_request__predict = {"task_id": UNUSED}
    __metadata_request__predict_proba = {"task_id": UNUSED}
    __metadata_request__predict_log_proba = {"task_id": UNUSED}
    __metadata_request__decision_function = {"task_id": UNUSED}
    __metadata_request__score = {"task_id": UNUSED}

    def partial_fit(self, X, y, task_id=0, classes=None, sample_weight=None):
        """Update the transformers incrementally, then ``partial_fit`` the final estimator.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        task_id : int or array-like of shape (n_samples,), default=0
            Passed to the final estimator when its ``partial_fit`` accepts it.
        classes : array-like, default=None
            Passed to the final estimator.
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to the final estimator.

        Returns
        -------
        self
        """
        Xt = X
        for _, _, transformer in self._iter(with_final=False, filter_passthrough=True):
            if hasattr(transformer, "partial_fit"):
                Xt = transformer.partial_fit(Xt, y).transform(Xt)
            elif _is_fitted(transformer):
                Xt = transformer.transform(Xt)
            else:
                Xt = transformer.fit_transform(Xt, y)
        final = self._final_estimator
        if final == "passthrough":
            return self
        kwargs = {"classes": classes}
        if sample_weight is not None:
            kwargs["sample_weight"] = sample_weight
        if "task_id" in inspect.signature(final.partial_fit).parameters:
            kwargs["task_id"] = task_id
        final.partial_fit(Xt, y, **kwargs)
        return self

    @available_if(_final_estimator_has("predict"))
    def predict(self, X, task_id=None, **params):
        """Transform ``X``, then ``predict`` with the final estimator, handing it ``task_id``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        task_id : int or array-like of shape (n_samples,), default=None
            Predict among that task's classes (task-incremental); ``None``
            predicts among all classes.
        **params : dict
            Other parameters, passed as :meth:`sklearn.pipeline.Pipeline.predict`
            passes them.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        return self._predict_with("predict", X, task_id, params)

    @available_if(_final_estimator_has("predict_proba"))
    def predict_proba(self, X, task_id=None, **params):
        """Transform ``X``, then ``predict_proba`` with the final estimator, handing it
        ``task_id``.

        Parameters are those of :meth:`predict`.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return self._predict_with("predict_proba", X, task_id, params)

    @available_if(_final_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X, task_id=None, **params):
        """Transform ``X``, then ``predict_log_proba`` with the final estimator, handing
        it ``task_id``.

        Parameters are those of :meth:`predict`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        return self._predict_with("predict_log_proba", X, task_id, params)

    @available_if(_final_estimator_has("decision_function"))
    def decision_function(self, X, task_id=None, **params):
        """Transform ``X``, then ``decision_function`` with the final estimator, handing
        it ``task_id``.

        Parameters are those of :meth:`predict`.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes) or (n_samples,)
        """
        return self._predict_with("decision_function", X, task_id, params)

    @available_if(_final_estimator_has("score"))
    def score(self, X, y=None, task_id=None, sample_weight=None, **params):
        """Transform ``X``, then ``score`` with the final estimator, handing it ``task_id``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        task_id : int or array-like of shape (n_samples,), default=None
            Score task-incrementally (each sample among its task's classes);
            ``None`` scores class-incrementally.
        sample_weight : array-like of shape (n_samples,), default=None
        **params : dict
            Other parameters, passed as :meth:`sklearn.pipeline.Pipeline.score`
            passes them.

        Returns
        -------
        score : float
        """
        if sample_weight is not None:
            params["sample_weight"] = sample_weight
        return self._predict_with("score", X, task_id, params, y)

    def _predict_with(self, method: str, X, task_id, params: dict, *y):
        """Run ``method`` of the final estimator on transformed ``X`` with ``task_id``.

        With metadata routing on, :class:`~sklearn.pipeline.Pipeline` routes
        ``task_id`` by the steps' requests. With it off, the transformers only
        transform and the final estimator gets ``task_id`` when it is given.
        """
        if task_id is not None:
            params["task_id"] = task_id
        if sklearn.get_config()["enable_metadata_routing"]:
            return getattr(super(), method)(X, *y, **params)
        check_is_fitted(self)
        final = self._final_estimator
        if task_id is not None and not _takes(getattr(final, method), "task_id"):
            raise ValueError(
                f"task_id was given, but {type(final).__name__}.{method} takes no task_id: "
                "it cannot answer per task. Call it without task_id for the "
                "class-incremental answer."
            )
        Xt = X
        for _, _, transformer in self._iter(with_final=False):
            Xt = transformer.transform(Xt)
        return getattr(final, method)(Xt, *y, **params)

    @available_if(_final_estimator_has("_register"))
    def _register(self, X, y, task_id=0, classes=None):
        """Register the tasks and classes of ``X, y`` with the final estimator, untrained.

        :func:`skcl.evaluation.evaluate_stream` calls this on copies of the
        pipeline, so that tasks not trained yet can be scored (forward transfer).
        Fitted transformers only transform; one not fitted yet (on an untrained
        copy) is fitted on ``X`` so that the final estimator sees its output width.
        """
        Xt = X
        for _, _, transformer in self._iter(with_final=False, filter_passthrough=True):
            if _is_fitted(transformer):
                Xt = transformer.transform(Xt)
            else:
                Xt = transformer.fit_transform(Xt, y)
        self._final_estimator._register(Xt, y, task_id=task_id, classes=classes)
        return self

    def end_task(self):
        """Close the final estimator's open task (see ``ContinualClassifier.end_task``)."""
        end_task = getattr(self._final_estimator, "end_task", None)
        if end_task is not None:
            end_task()
        return self


def _takes(method, name: str) -> bool:
    """Whether ``method`` accepts a keyword argument ``name`` (by name or ``**kwargs``)."""
    parameters = inspect.signature(method).parameters
    return name in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def _is_fitted(estimator) -> bool:
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def make_pipeline(*steps, memory=None, verbose=False) -> ContinualPipeline:
    """Build a :class:`ContinualPipeline` from estimators, naming steps automatically.

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skcl import NaiveClassifier
    >>> from skcl.pipeline import make_pipeline
    >>> make_pipeline(StandardScaler(), NaiveClassifier()).steps[1][0]
    'naiveclassifier'
    """
    return ContinualPipeline(_name_estimators(steps), memory=memory, verbose=verbose)
