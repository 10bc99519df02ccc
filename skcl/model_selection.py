"""Hyperparameter search on task streams that never looks at test data.

Comparing continual-learning methods honestly means choosing each method's
hyperparameters without the data it is reported on. The searches here score
every candidate with :func:`skcl.evaluation.evaluate_stream` on a
*validation stream* made only of the stream's training data
(:func:`make_validation_stream`), under one of two protocols:

- ``'first-tasks'`` (the default; Chaudhry et al., 2019): tune on held-out
  validation splits of the first ``n_tasks`` experiences' training data, then
  train the best setting over the whole stream. The candidates never see the
  later experiences at all, as in a real stream where they have not arrived.
  On streams much longer than ``n_tasks`` it is biased towards strong
  regularisation (below).
- ``'validation'``: a validation split of every experience's training data;
  the candidates run the whole stream on the rest.

**Measured bias of 'first-tasks' on long streams.** Penalties that add a
stiffness per task (EWC, SI, MAS) cost plasticity in proportion to the
tasks seen, which the first three tasks do not show, while a weak strength's
forgetting shows at once. On permuted-digits (10 tasks, domain-incremental,
PROTOCOL.md settings, candidates 0.01, 0.03, 0.1, 0.3, 1, 3) the strengths
picked on validation data were:

======  ======================  ======================  ======================
seed    EWC (k=3 / k=5 / all)   SI (k=3 / k=5 / all)    MAS (k=3 / k=5 / all)
======  ======================  ======================  ======================
0       0.1 / 0.1 / 0.03        0.1 / 0.1 / 0.01        0.03 / 0.03 / 0.01
1       0.3 / 0.03 / 0.01       3 / 0.03 / 0.01         0.03 / 0.01 / 0.01
======  ======================  ======================  ======================

('all': the ``'validation'`` protocol over the whole stream.) The k=3 picks
are 3 to 300 times the whole-stream ones, the k=5 picks 1 to 10 times. At
seed 0 they cost 0.05 (EWC), 0.08 (SI) and 0.09 (MAS) test ACC against the
whole-stream picks (test ACC measured once for this note, never used to
choose). Scaling the k=3 pick by the stiffness the stream adds, (k - 1) /
(T - 1), lands on the whole-stream pick at seed 0 but not at seed 1 (EWC
0.07, SI 0.7 against 0.01): the k=3 scores are too noisy to extrapolate
from, so no such correction is applied. When the whole stream's training
data is at hand (a benchmark), ``'validation'`` is the unbiased choice;
``'first-tasks'`` is the protocol for a stream whose later tasks have not
arrived, and a larger ``n_tasks`` reduces, but does not remove, its bias
(``benchmarks/tune_defaults.py --first-tasks`` measures it).

A third value, ``'oracle'``, trains each candidate on the full training
splits and scores it on the **test** splits. It is the test-tuned number that
papers must not report as their result: use it only as a labelled reference
row (how much an honest protocol gives up), never as the selection itself.

:class:`StreamGridSearch` and :class:`StreamRandomizedSearch` mirror
scikit-learn's ``GridSearchCV`` and ``RandomizedSearchCV``;
:func:`select_params` is the one-call form for benchmarks.

References
----------
.. [1] A. Chaudhry, M. Ranzato, M. Rohrbach and M. Elhoseiny, "Efficient
   Lifelong Learning with A-GEM", ICLR 2019.

Examples
--------
>>> from skcl import NaiveClassifier
>>> from skcl.datasets import load_split_digits
>>> from skcl.model_selection import select_params
>>> clf = NaiveClassifier(hidden_layer_sizes=(16,), random_state=0)
>>> best, results = select_params(clf, load_split_digits(), {"learning_rate": [0.001, 0.1]},
...                               n_tasks=2, epochs=1)
>>> best
{'learning_rate': 0.1}
>>> results["rank_score"].tolist()
[2, 1]
"""

from __future__ import annotations

import numbers
import time
import warnings
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.utils.validation import check_is_fitted

from skcl._validation_streams import _check_n_tasks, make_validation_stream
from skcl.datasets import TaskStream
from skcl.evaluation import _is_continual, _resolve_epochs, _train, evaluate_stream
from skcl.results import StreamResult

__all__ = [
    "ORACLE", "PROTOCOLS", "SCORINGS", "StreamGridSearch", "StreamRandomizedSearch",
    "make_validation_stream", "select_params",
]

#: Protocols that choose hyperparameters without test data.
PROTOCOLS = ("first-tasks", "validation")
#: The test-tuned reference protocol: never a result, only a labelled oracle row.
ORACLE = "oracle"
#: Named selection criteria (see the ``scoring`` parameter of the searches).
SCORINGS = ("acc", "acc-forgetting")

_METRICS = ("acc", "bwt", "fwt", "forgetting")


def _check_params(estimator, candidates: Sequence[dict], source: str) -> None:
    """Every candidate names parameters the estimator has (nested ``a__b`` included)."""
    if not candidates:
        raise ValueError(f"{source} gives no candidate.")
    valid = estimator.get_params(deep=True)
    for params in candidates:
        unknown = sorted(name for name in params if name not in valid)
        if unknown:
            raise ValueError(
                f"{source} names parameter(s) {unknown} that {type(estimator).__name__} "
                f"does not have; valid parameters: {sorted(valid)}."
            )


def _run_candidate(estimator, params: dict, stream: TaskStream, scenario: str | None,
                   epochs: int | None, catch: bool):
    """Train and score one candidate: its StreamResult, or the exception when ``catch``."""
    try:
        return evaluate_stream(clone(estimator).set_params(**params), stream, scenario, epochs)
    except Exception as exc:
        if not catch:
            raise
        return exc


class _BaseStreamSearch(MetaEstimatorMixin, BaseEstimator, metaclass=ABCMeta):
    """Shared machinery of the stream searches; subclasses list the candidates."""

    def __init__(
        self, estimator, *, protocol: str = "first-tasks", n_tasks: int = 3,
        scenario: str | None = None, epochs: int | None = None, validation_size: float = 0.2,
        scoring: str | Callable[[StreamResult], float] = "acc", forgetting_weight: float = 1.0,
        refit: bool = True, n_jobs: int | None = None, random_state: int | None = 0,
        error_score: float | str = np.nan, verbose: int = 0,
    ) -> None:
        self.estimator = estimator
        self.protocol = protocol
        self.n_tasks = n_tasks
        self.scenario = scenario
        self.epochs = epochs
        self.validation_size = validation_size
        self.scoring = scoring
        self.forgetting_weight = forgetting_weight
        self.refit = refit
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.error_score = error_score
        self.verbose = verbose

    @abstractmethod
    def _candidates(self) -> list[dict]:
        """The parameter settings to score, checked against the estimator's parameters."""

    def _check_settings(self) -> None:
        if self.protocol not in (*PROTOCOLS, ORACLE):
            raise ValueError(
                f"protocol must be one of {(*PROTOCOLS, ORACLE)}, got {self.protocol!r}."
            )
        if not (callable(self.scoring) or self.scoring in SCORINGS):
            raise ValueError(
                f"scoring must be one of {SCORINGS} or a callable taking a StreamResult, "
                f"got {self.scoring!r}."
            )
        weight = self.forgetting_weight
        if (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
                or not np.isfinite(weight) or weight < 0):
            raise ValueError(
                f"forgetting_weight must be a finite number >= 0, got {weight!r}."
            )
        if not (self.error_score == "raise" or isinstance(self.error_score, numbers.Real)):
            raise ValueError(
                f"error_score must be 'raise' or a number, got {self.error_score!r}."
            )
        _is_continual(self.estimator)
        if self.epochs is not None:
            _resolve_epochs(self.estimator, self.epochs)

    def _selection_stream(self, stream: TaskStream) -> TaskStream:
        """What the candidates run on: training data only, unless this is the oracle."""
        if self.protocol == ORACLE:
            return stream
        n_tasks = _check_n_tasks(self.n_tasks, stream) if self.protocol == "first-tasks" else None
        return make_validation_stream(stream, self.validation_size, n_tasks, self.random_state)

    def _criterion(self, result: StreamResult) -> float:
        if callable(self.scoring):
            return float(self.scoring(result))
        if self.scoring == "acc-forgetting":
            return result.acc - self.forgetting_weight * result.mean_forgetting
        return result.acc

    def fit(self, stream: TaskStream):
        """Score every candidate under the protocol, then refit the best over the stream.

        Parameters
        ----------
        stream : TaskStream
            The stream to tune on; under ``'first-tasks'`` and
            ``'validation'`` only its training data is read. Unlike
            scikit-learn's searches, ``fit`` takes a stream, not ``(X, y)``.

        Returns
        -------
        self : object
            The fitted search.
        """
        if not isinstance(stream, TaskStream):
            raise ValueError(f"stream must be a TaskStream, got {type(stream).__name__}.")
        self._check_settings()
        candidates = self._candidates()
        selection = self._selection_stream(stream)
        catch = self.error_score != "raise"
        outcomes = Parallel(n_jobs=self.n_jobs, verbose=self.verbose)(
            delayed(_run_candidate)(self.estimator, params, selection, self.scenario,
                                    self.epochs, catch)
            for params in candidates
        )
        self.cv_results_ = self._results(candidates, outcomes)
        self.best_index_ = int(np.flatnonzero(self.cv_results_["rank_score"] == 1)[0])
        self.best_params_ = candidates[self.best_index_]
        self.best_score_ = float(self.cv_results_["score"][self.best_index_])
        self.scored_on_ = "test" if self.protocol == ORACLE else "validation"
        if self.refit:
            start = time.perf_counter()
            self.best_estimator_ = self._refit(stream)
            self.refit_time_ = time.perf_counter() - start
        return self

    def _results(self, candidates: list[dict], outcomes: list) -> dict[str, Any]:
        failed = [(i, out) for i, out in enumerate(outcomes) if isinstance(out, Exception)]
        if len(failed) == len(outcomes):
            raise failed[0][1]
        if failed:
            lines = "\n".join(f"  {candidates[i]}: {type(e).__name__}: {e}" for i, e in failed)
            warnings.warn(
                f"{len(failed)} of {len(outcomes)} candidates failed and score "
                f"error_score={self.error_score}:\n{lines}", FitFailedWarning, stacklevel=3,
            )
        n = len(candidates)
        results: dict[str, Any] = {"params": candidates}
        for name in sorted({name for params in candidates for name in params}):
            column = np.ma.MaskedArray(np.empty(n, dtype=object), mask=True)
            for i, params in enumerate(candidates):
                if name in params:
                    column[i] = params[name]
            results[f"param_{name}"] = column
        columns = {key: np.full(n, np.nan) for key in (*_METRICS, "score", "fit_time")}
        for i, out in enumerate(outcomes):
            if isinstance(out, StreamResult):
                values = (out.acc, out.bwt, out.fwt, out.mean_forgetting,
                          self._criterion(out), out.train_seconds)
                for key, value in zip(columns, values, strict=True):
                    columns[key][i] = value
            else:
                columns["score"][i] = self.error_score
        results.update(columns)
        scores = results["score"]
        floor = 0.0 if np.isnan(scores).all() else np.nanmin(scores) - 1
        results["rank_score"] = rankdata(-np.nan_to_num(scores, nan=floor),
                                         method="min").astype(np.int32)
        return results

    def _refit(self, stream: TaskStream):
        """A clone with the best parameters, trained over every experience's full training split."""
        estimator = clone(self.estimator).set_params(**self.best_params_)
        continual = _is_continual(estimator)
        epochs = _resolve_epochs(estimator, self.epochs)
        classes = np.unique(np.concatenate([exp.y_train for exp in stream]))
        for exp in stream:
            _train(estimator, exp, epochs, continual, classes)
        return estimator

    def predict(self, X, task_id=None) -> np.ndarray:
        """Predict with :attr:`best_estimator_` (``refit=True`` only).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        task_id : int, optional
            Passed on to a skcl estimator for task-incremental prediction.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "best_estimator_")
        kwargs = {} if task_id is None else {"task_id": task_id}
        return self.best_estimator_.predict(X, **kwargs)

    def score(self, X, y, task_id=None) -> float:
        """Accuracy of :attr:`best_estimator_` on ``(X, y)`` (``refit=True`` only).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,)
            True labels.
        task_id : int, optional
            Passed on to a skcl estimator for task-incremental scoring.

        Returns
        -------
        score : float
        """
        check_is_fitted(self, "best_estimator_")
        kwargs = {} if task_id is None else {"task_id": task_id}
        return float(self.best_estimator_.score(X, y, **kwargs))


class StreamGridSearch(_BaseStreamSearch):
    """Exhaustive search over a parameter grid, scored on a stream without its test data.

    Each candidate is a ``clone`` of ``estimator`` with one setting of the
    grid; :func:`~skcl.evaluation.evaluate_stream` trains it over the
    protocol's validation stream (:func:`make_validation_stream`) and fills
    its accuracy matrix on the validation splits. Candidates run in parallel
    through joblib, so ``with joblib.parallel_backend('dask'):`` sends them to
    a Dask cluster.

    Parameters
    ----------
    estimator : estimator with ``partial_fit``
        A skcl estimator or a scikit-learn one with ``partial_fit``, as for
        :func:`~skcl.evaluation.evaluate_stream`. Fix its ``random_state`` for
        reproducible results.
    param_grid : dict or list of dicts
        Parameter names (``get_params`` keys) to lists of values, as for
        :class:`sklearn.model_selection.GridSearchCV`.
    protocol : {'first-tasks', 'validation', 'oracle'}, default='first-tasks'
        ``'first-tasks'`` (Chaudhry et al., 2019): candidates run on the
        first ``n_tasks`` experiences only, each split into training and
        validation parts of its *training* data. ``'validation'``: the same
        split of every experience. ``'oracle'``: candidates train on the full
        training splits and are scored on the **test** splits; this is
        test-set tuning, to be shown only as a labelled oracle row for
        reference, never as a result.
    n_tasks : int, default=3
        ``k``, the experiences tuned on under ``'first-tasks'`` (PROTOCOL.md
        uses 3); ignored by the other protocols. At most the stream's length.
        On a stream much longer than ``k`` the pick is biased towards strong
        penalties (module docstring: 3 to 300 times the whole-stream pick on
        10-task permuted-digits at k=3, 1 to 10 times at k=5).
    scenario : {'class', 'task', 'domain'}, optional
        How candidates are scored, as in
        :func:`~skcl.evaluation.evaluate_stream`; defaults to the stream's
        default scenario.
    epochs : int, optional
        Passes over each experience, for the candidates and the refit.
        Defaults to each estimator's ``max_epochs`` (so a grid may search it),
        else 1.
    validation_size : float, default=0.2
        Fraction of each experience's training samples held out for
        validation.
    scoring : {'acc', 'acc-forgetting'} or callable, default='acc'
        The selection criterion, higher is better, computed from the
        candidate's validation accuracy matrix ``R`` (:mod:`skcl.metrics`):
        ``'acc'`` is the final average accuracy ACC; ``'acc-forgetting'`` is
        ``ACC - forgetting_weight * F``, with ``F`` the mean forgetting
        ``mean_j (max_{i<T-1} R[i, j] - R[T-1, j])``, which prefers settings
        that keep what they learned; a callable receives the candidate's
        :class:`~skcl.results.StreamResult` and returns a float.
    forgetting_weight : float, default=1.0
        ``w >= 0`` in ``'acc-forgetting'``.
    refit : bool, default=True
        Train a clone with the best parameters over the whole stream: every
        experience's full training split, in order, ``epochs`` passes each,
        then ``end_task()``. Its test data is still never read.
    n_jobs : int, optional
        Candidates run at once (joblib; ``None`` is 1 unless a
        ``joblib.parallel_backend`` context says otherwise, -1 all CPUs). Use
        process-based workers (joblib's default loky, a Dask cluster of
        processes): torch's random generator is shared by the threads of a
        process, so candidates trained in threads of one process are not
        reproducible.
    random_state : int or None, default=0
        Seed of the validation splits (stratified per experience when
        possible); :class:`StreamRandomizedSearch` also samples from it.
    error_score : 'raise' or float, default=np.nan
        Score of a candidate whose training raises (a diverging learning rate
        or strength raises ``FloatingPointError``); it ranks last when NaN
        and a ``FitFailedWarning`` lists the failures. ``'raise'`` raises at
        once. When every candidate fails, the first error is raised.
    verbose : int, default=0
        joblib's verbosity.

    Attributes
    ----------
    cv_results_ : dict of ndarrays
        One entry per candidate, in candidate order (``pandas.DataFrame``
        takes it as is): ``'params'`` (list of dicts), ``'param_<name>'``
        (masked arrays), ``'acc'``, ``'bwt'``, ``'fwt'``, ``'forgetting'``
        (mean forgetting) of the candidate's accuracy matrix, ``'score'``
        (the criterion), ``'rank_score'`` (1 is best, ties share the lowest
        rank) and ``'fit_time'`` (training seconds). Scores are on validation
        data, or on test data for the oracle (see :attr:`scored_on_`).
    best_index_ : int
        Index of the best candidate (the first among ties).
    best_params_ : dict
        Its parameters.
    best_score_ : float
        Its criterion.
    scored_on_ : {'validation', 'test'}
        ``'test'`` only under ``protocol='oracle'``.
    best_estimator_ : estimator
        The refitted clone (``refit=True``).
    refit_time_ : float
        Seconds of the refit (``refit=True``).

    See Also
    --------
    StreamRandomizedSearch : the same over sampled candidates.
    select_params : the best parameters and ``cv_results_`` in one call.

    References
    ----------
    .. [1] A. Chaudhry, M. Ranzato, M. Rohrbach and M. Elhoseiny, "Efficient
       Lifelong Learning with A-GEM", ICLR 2019.

    Examples
    --------
    >>> from skcl import NaiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.model_selection import StreamGridSearch
    >>> stream = load_split_digits()
    >>> search = StreamGridSearch(NaiveClassifier(hidden_layer_sizes=(16,), random_state=0),
    ...                           {"learning_rate": [0.001, 0.1]}, n_tasks=2, epochs=1)
    >>> search = search.fit(stream)
    >>> search.best_params_, search.scored_on_
    ({'learning_rate': 0.1}, 'validation')
    >>> search.best_estimator_.tasks_seen_
    [0, 1, 2, 3, 4]
    """

    def __init__(
        self, estimator, param_grid: Mapping | Sequence[Mapping], *,
        protocol: str = "first-tasks", n_tasks: int = 3, scenario: str | None = None,
        epochs: int | None = None, validation_size: float = 0.2,
        scoring: str | Callable[[StreamResult], float] = "acc", forgetting_weight: float = 1.0,
        refit: bool = True, n_jobs: int | None = None, random_state: int | None = 0,
        error_score: float | str = np.nan, verbose: int = 0,
    ) -> None:
        super().__init__(
            estimator, protocol=protocol, n_tasks=n_tasks, scenario=scenario, epochs=epochs,
            validation_size=validation_size, scoring=scoring,
            forgetting_weight=forgetting_weight, refit=refit, n_jobs=n_jobs,
            random_state=random_state, error_score=error_score, verbose=verbose,
        )
        self.param_grid = param_grid

    def _candidates(self) -> list[dict]:
        candidates = list(ParameterGrid(self.param_grid))
        _check_params(self.estimator, candidates, "param_grid")
        return candidates


class StreamRandomizedSearch(_BaseStreamSearch):
    """Search over ``n_iter`` sampled settings, scored on a stream without its test data.

    Candidates are drawn by :class:`sklearn.model_selection.ParameterSampler`
    from ``param_distributions`` with ``random_state``, then scored as in
    :class:`StreamGridSearch`.

    Parameters
    ----------
    estimator : estimator with ``partial_fit``
        As for :class:`StreamGridSearch`.
    param_distributions : dict or list of dicts
        Parameter names to lists (sampled uniformly) or scipy distributions
        (with an ``rvs`` method), as for
        :class:`sklearn.model_selection.RandomizedSearchCV`.
    n_iter : int, default=10
        Candidates sampled (without replacement when every value is a list).
    **kwargs
        ``protocol``, ``n_tasks``, ``scenario``, ``epochs``,
        ``validation_size``, ``scoring``, ``forgetting_weight``, ``refit``,
        ``n_jobs``, ``random_state`` (seeds the sampling and the validation
        splits), ``error_score`` and ``verbose``, as for
        :class:`StreamGridSearch`, keyword-only.

    Attributes
    ----------
    cv_results_, best_index_, best_params_, best_score_, scored_on_, best_estimator_, refit_time_
        As for :class:`StreamGridSearch`.

    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> from skcl import NaiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.model_selection import StreamRandomizedSearch
    >>> search = StreamRandomizedSearch(
    ...     NaiveClassifier(hidden_layer_sizes=(16,), random_state=0),
    ...     {"learning_rate": loguniform(1e-3, 1e-1)}, n_iter=2, n_tasks=2, epochs=1, refit=False)
    >>> len(search.fit(load_split_digits()).cv_results_["params"])
    2
    """

    def __init__(
        self, estimator, param_distributions: Mapping | Sequence[Mapping], *, n_iter: int = 10,
        protocol: str = "first-tasks", n_tasks: int = 3, scenario: str | None = None,
        epochs: int | None = None, validation_size: float = 0.2,
        scoring: str | Callable[[StreamResult], float] = "acc", forgetting_weight: float = 1.0,
        refit: bool = True, n_jobs: int | None = None, random_state: int | None = 0,
        error_score: float | str = np.nan, verbose: int = 0,
    ) -> None:
        super().__init__(
            estimator, protocol=protocol, n_tasks=n_tasks, scenario=scenario, epochs=epochs,
            validation_size=validation_size, scoring=scoring,
            forgetting_weight=forgetting_weight, refit=refit, n_jobs=n_jobs,
            random_state=random_state, error_score=error_score, verbose=verbose,
        )
        self.param_distributions = param_distributions
        self.n_iter = n_iter

    def _candidates(self) -> list[dict]:
        candidates = list(ParameterSampler(self.param_distributions, self.n_iter,
                                           random_state=self.random_state))
        _check_params(self.estimator, candidates, "param_distributions")
        return candidates


def select_params(
    estimator, stream: TaskStream, param_grid: Mapping | Sequence[Mapping] | None = None, *,
    param_distributions: Mapping | Sequence[Mapping] | None = None, n_iter: int = 10,
    protocol: str = "first-tasks", **kwargs,
) -> tuple[dict, dict[str, Any]]:
    """The tuned parameters of an estimator on a stream, without its test data.

    Runs :class:`StreamGridSearch` (``param_grid``) or
    :class:`StreamRandomizedSearch` (``param_distributions``) with
    ``refit=False``; the benchmark calls it once per (estimator, stream,
    seed) and then trains the tuned estimator itself.

    Parameters
    ----------
    estimator : estimator with ``partial_fit``
        The estimator to tune; not modified.
    stream : TaskStream
        The stream to tune on.
    param_grid : dict or list of dicts, optional
        A grid, as for :class:`StreamGridSearch`. Give it or
        ``param_distributions``.
    param_distributions : dict or list of dicts, optional
        Distributions, as for :class:`StreamRandomizedSearch`.
    n_iter : int, default=10
        Candidates sampled from ``param_distributions``.
    protocol : {'first-tasks', 'validation', 'oracle'}, default='first-tasks'
        As for :class:`StreamGridSearch`; ``'oracle'`` tunes on the test
        splits and its parameters may only be reported as an oracle row.
    **kwargs
        ``n_tasks``, ``scenario``, ``epochs``, ``validation_size``,
        ``scoring``, ``forgetting_weight``, ``n_jobs``, ``random_state``,
        ``error_score``, ``verbose``: as for :class:`StreamGridSearch`.

    Returns
    -------
    best_params : dict
        The best candidate's parameters.
    cv_results : dict
        The search's ``cv_results_``.

    Examples
    --------
    >>> from skcl import NaiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> from skcl.model_selection import select_params
    >>> clf = NaiveClassifier(hidden_layer_sizes=(16,), random_state=0)
    >>> best, results = select_params(clf, load_split_digits(), {"learning_rate": [0.001, 0.1]},
    ...                               n_tasks=2, scenario="task", epochs=1)
    >>> best, results["acc"].round(2).tolist()
    ({'learning_rate': 0.1}, [0.5, 0.91])
    """
    if (param_grid is None) == (param_distributions is None):
        raise ValueError("Give exactly one of param_grid and param_distributions.")
    if param_grid is not None:
        search = StreamGridSearch(estimator, param_grid, protocol=protocol, refit=False,
                                  **kwargs)
    else:
        search = StreamRandomizedSearch(estimator, param_distributions, n_iter=n_iter,
                                        protocol=protocol, refit=False, **kwargs)
    search.fit(stream)
    return search.best_params_, search.cv_results_
