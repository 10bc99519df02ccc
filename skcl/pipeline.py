"""Pipelines that learn from a stream: sklearn's ``Pipeline`` plus ``partial_fit``.

sklearn's :class:`~sklearn.pipeline.Pipeline` has no ``partial_fit``. A
:class:`ContinualPipeline` updates its transformers incrementally where they
support it (``StandardScaler.partial_fit``, ``IncrementalPCA.partial_fit``,
...) and hands ``task_id`` to the final estimator, so a streaming loop reads
the same with a skcl estimator or with ``SGDClassifier`` at the end.
"""

from __future__ import annotations

import inspect

from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline, _name_estimators
from sklearn.utils.validation import check_is_fitted


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
    """

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

    def end_task(self):
        """Close the final estimator's open task (see ``ContinualClassifier.end_task``)."""
        end_task = getattr(self._final_estimator, "end_task", None)
        if end_task is not None:
            end_task()
        return self


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
