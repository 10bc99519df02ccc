"""Baselines: the lower and upper bounds every continual-learning method sits between."""

from __future__ import annotations

import torch
from torch import nn

from skcl.base import Batch, ContinualClassifier
from skcl.memory import SampleStore
from skcl.nn import TaskHeads
from skcl.strategies.architectural import _PerTaskParts


class NaiveClassifier(ContinualClassifier):
    """Fine-tuning: plain SGD on each task in turn, the lower bound.

    One network with one output layer that grows as classes arrive; nothing
    protects what earlier tasks taught, so it forgets (catastrophic forgetting).
    With ``task_id`` at predict time only that task's classes compete.

    Parameters are those of :class:`~skcl.base.ContinualClassifier`.

    Examples
    --------
    >>> from skcl import NaiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = NaiveClassifier(hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.classes_.tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """


class JointClassifier(ContinualClassifier):
    """Offline training on everything seen so far, the upper bound.

    Each ``partial_fit`` call that brings samples not stored before (repeated
    epochs over the same arrays bring none) stores them and retrains the
    network from scratch on the union of all stored samples: ``max_epochs``
    epochs of mini-batches shuffled across tasks. It breaks the continual
    setting on purpose: it is the multi-task reference other methods are
    judged against, and its cost grows with everything seen.

    Parameters are those of :class:`~skcl.base.ContinualClassifier`.

    Examples
    --------
    >>> from skcl import JointClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = JointClassifier(hidden_layer_sizes=(64,), max_epochs=2, random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.score(stream[0].X_test, stream[0].y_test) > 0.8
    True
    """

    def _initialize(self) -> None:
        super()._initialize()
        self.memory_ = SampleStore()

    def _observe(self, samples: Batch) -> None:
        if not self.memory_.add(samples):
            return
        self._replace_network(self._fresh_network())
        self._train_phase(self.memory_.tensors(), self.max_epochs)


class CumulativeClassifier(ContinualClassifier):
    """Cumulative training: keep every sample, train each epoch on the union so far.

    Unlike :class:`JointClassifier` it continues from the current weights; each
    ``partial_fit`` call is one epoch over all samples stored up to now
    (the current task's included).

    Parameters are those of :class:`~skcl.base.ContinualClassifier`.

    Examples
    --------
    >>> from skcl import CumulativeClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = CumulativeClassifier(hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.score(stream[0].X_test, stream[0].y_test) > 0.8
    True
    """

    def _initialize(self) -> None:
        super()._initialize()
        self.memory_ = SampleStore()

    def _observe(self, samples: Batch) -> None:
        self.memory_.add(samples)
        self._run_epoch(self.memory_.tensors())


class EnsembleClassifier(_PerTaskParts):
    """One independent model per task.

    Each task id gets a fresh network (trunk and head) trained only on that
    task, so later tasks never change it (zero forgetting when the task is
    known). With ``task_id`` at predict time the task's model answers. Without
    it (class-incremental) every model answers and each class takes its most
    confident model's probability: scores are per-model log-softmax values,
    and the label with the highest one wins.

    Parameters are those of :class:`~skcl.base.ContinualClassifier`.

    Examples
    --------
    >>> from skcl import EnsembleClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = EnsembleClassifier(hidden_layer_sizes=(32,), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> len(clf.network_.heads)
    5
    """

    def _make_network(self):
        return TaskHeads(self._make_trunk, self.n_features_in_, shared_trunk=False)

    def _scoring_network(self) -> nn.Module:
        return _PerTaskLogSoftmax(super()._scoring_network())


class _PerTaskLogSoftmax(nn.Module):
    """Scores of a per-task network as log-softmax values within each task's units."""

    def __init__(self, network: TaskHeads):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.network(x, task)
        unit_task = self.network.unit_task
        log_probs = torch.empty_like(logits)
        for t in torch.unique(unit_task):
            cols = torch.nonzero(unit_task == t).flatten()
            block = logits.index_select(1, cols)
            log_probs[:, cols] = block - torch.logsumexp(block, dim=1, keepdim=True)
        return torch.nan_to_num(log_probs, nan=float("-inf"))
