r"""The family of importance-weighted quadratic penalties: EWC, online EWC, SI, MAS, IMM.

When a task ends, each method computes an importance :math:`\Omega_t` of
every parameter and folds it into a :class:`~skcl.components.QuadraticPenalty`
(the penalty, its anchors, the handling of a growing output layer and the
stability clip under SGD are described there); later tasks train on

.. math:: \mathcal{L}(\theta) = \mathcal{L}_{task}(\theta)
          + \tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2, \qquad k_i = s\,\Omega_i .

The methods differ only in how :math:`\Omega` is computed and folded, and in
the factor :math:`s` that writes each paper's penalty in this form.
:class:`ImportancePenalty` wires the component into the hooks of the training
loop once for the family; a method outside it (a hybrid) holds the component
itself and wires it the same way.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABCMeta, abstractmethod

import numpy as np
import torch
from torch import nn

from skcl.base import Batch, ContinualClassifier, Step
from skcl.components import QuadraticPenalty, stiffness_limit, sum_terms
from skcl.distributed import collective, share

_KERNEL_BATCH = 512


class TaskSample:
    """Up to ``capacity`` distinct samples of the open task, kept by reservoir sampling.

    End-of-task importances (EWC's Fisher, MAS) are computed on it. A call whose
    inputs and labels equal an earlier call's (the same arrays fed once per
    epoch) adds nothing, so epochs do not duplicate samples. Samples of zero
    weight are not kept. Selection uses its own generator (seed 0), never the
    estimator's, so keeping a sample does not change training.

    Parameters
    ----------
    capacity : int
        Most samples kept.

    Examples
    --------
    >>> import torch
    >>> from skcl.strategies.importance import TaskSample
    >>> sample = TaskSample(capacity=3)
    >>> X, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
    >>> sample.add(X, y, None)
    >>> sample.add(X, y, None)
    >>> sample.tensors()[0].shape
    torch.Size([3, 2])
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.n_seen = 0
        self.X: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self._digests: set[str] = set()
        self._rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return 0 if self.X is None else int(self.X.shape[0])

    def add(self, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> None:
        """Offer a call's samples to the reservoir (once per distinct call)."""
        if self.capacity == 0:
            return
        if weight is not None:
            keep = weight > 0
            X, y = X[keep], y[keep]
        digest = hashlib.blake2b(digest_size=16)
        for tensor in (X, y):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        key = digest.hexdigest()
        if key in self._digests or X.shape[0] == 0:
            return
        self._digests.add(key)
        n_fill = min(self.capacity - len(self), X.shape[0])
        if n_fill:
            head_X, head_y = X[:n_fill].detach(), y[:n_fill].detach()
            self.X = head_X.clone() if self.X is None else torch.cat([self.X, head_X])
            self.y = head_y.clone() if self.y is None else torch.cat([self.y, head_y])
        rest = np.arange(n_fill, X.shape[0])
        seen = self.n_seen + rest
        slots = np.floor(self._rng.random(rest.size) * (seen + 1)).astype(np.int64)
        hit = slots < self.capacity
        slots, rows = slots[hit][::-1], rest[hit][::-1]
        slots, last = np.unique(slots, return_index=True)
        if slots.size:
            index = torch.from_numpy(slots).to(self.X.device)
            source = torch.from_numpy(rows[last]).to(X.device)
            self.X[index] = X[source].detach().to(self.X.device)
            self.y[index] = y[source].detach().to(self.y.device)
        self.n_seen += X.shape[0]

    def tensors(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(X, y)`` of the samples kept (``None`` if none)."""
        return self.X, self.y


def network_importance(kernel, network: nn.Module, *data) -> dict[str, torch.Tensor]:
    """Run an importance kernel (:func:`~skcl.kernels.fisher_diagonal`,
    :func:`~skcl.kernels.mas_importance`) on a network of :mod:`skcl.nn`, by parameter name.

    In data-parallel training (:mod:`skcl.distributed`) every rank holds the
    same samples; each computes the kernel on its share of them, and the
    per-sample sums and the counts are all-reduced, so the mean is over all
    samples (not a mean of the ranks' means).

    Examples
    --------
    >>> import torch
    >>> from skcl.kernels import fisher_diagonal
    >>> from skcl.nn import SharedHead, make_mlp
    >>> from skcl.strategies.importance import network_importance
    >>> net = SharedHead(lambda: make_mlp(4, (8,)), n_features=4)
    >>> net.add_units(task=0, n_new=2, seed=0)
    >>> fisher = network_importance(fisher_diagonal, net, torch.ones(3, 4), torch.tensor([0, 1, 0]))
    >>> sorted(fisher) == sorted(name for name, _ in net.named_parameters())
    True
    """
    comm = collective()
    if comm.world_size == 1:
        return kernel(network, *data, batch_size=_KERNEL_BATCH)
    rows = share(comm, data[0].shape[0], data[0].device)
    local = {name: torch.zeros_like(p) for name, p in network.named_parameters()}
    if rows.numel():
        local = kernel(network, *(d[rows] for d in data), batch_size=_KERNEL_BATCH)
    names = sorted(local)
    flat = torch.cat([local[name].reshape(-1) * rows.numel() for name in names]
                     + [torch.tensor([float(rows.numel())], device=data[0].device)])
    comm.all_reduce(flat)
    out, start = {}, 0
    for name in names:
        size = local[name].numel()
        out[name] = (flat[start:start + size] / flat[-1]).view_as(local[name])
        start += size
    return out


class ImportancePenalty(ContinualClassifier, metaclass=ABCMeta):
    r"""Base of the methods whose per-task importance feeds a quadratic penalty.

    Holds a :class:`~skcl.components.QuadraticPenalty` over every parameter
    (``penalty_``) and wires it into the training loop: its stiffness is fixed
    when a task starts, its value joins the loss and its force the gradients,
    and when a task ends the method's importance is folded in, anchored at the
    parameters the task ended with. A subclass names its strength in
    ``_strength = (parameter, s / parameter)``, takes a ``clip_stiffness``
    parameter and implements :meth:`_importance`; :meth:`_consolidate` says how
    the importance is folded (summed by default).

    Attributes
    ----------
    penalty_ : QuadraticPenalty
        The penalty: anchors, importances and the task's stiffness.
    importance_ : dict of str to Tensor
        Consolidated importance per parameter name.
    anchor_ : dict of str to Tensor
        :math:`\theta^*` per parameter name.
    """

    #: (name of the strength parameter, factor s per unit of it)
    _strength: tuple[str, float]

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "clip_stiffness": ["boolean"],
    }

    @property
    def importance_(self) -> dict[str, torch.Tensor]:
        return self.penalty_.importance

    @property
    def anchor_(self) -> dict[str, torch.Tensor]:
        return self.penalty_.anchor

    # ------------------------------------------------------------------ what a method provides

    @abstractmethod
    def _importance(self, task: int) -> dict[str, torch.Tensor] | None:
        """Importance of each parameter for the task just ended (shaped like the parameters)."""

    def _sample_size(self) -> int:
        """How many samples of each task the importance needs (0: none kept)."""
        return 0

    def _consolidate(self, importance: dict[str, torch.Tensor]) -> None:
        r"""Fold a task's importance in, :math:`\Omega \leftarrow \Omega + \Omega_t`, and anchor
        at the parameters the task ended with."""
        self.penalty_.consolidate(importance, dict(self.network_.named_parameters()))

    # ------------------------------------------------------------------ hooks

    def _initialize(self) -> None:
        super()._initialize()
        self.penalty_ = QuadraticPenalty()
        self._task_sample_ = TaskSample(0)

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self._task_sample_ = TaskSample(self._sample_size())
        name, factor = self._strength
        self.penalty_.stiffen(factor * float(getattr(self, name)), self._max_stiffness())

    def _observe(self, samples: Batch) -> None:
        self._task_sample_.add(samples.X, samples.y, samples.weight)
        super()._observe(samples)

    def _penalty(self) -> torch.Tensor | None:
        return sum_terms(super()._penalty(), self.penalty_.value(self.network_))

    def _after_backward(self, batch: Batch, step: Step) -> None:
        super()._after_backward(batch, step)
        self.penalty_.add_gradient(self.network_)

    def _parameters_changed(self) -> None:
        self.penalty_.parameters_changed()
        super()._parameters_changed()

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        importance = self._importance(task)
        if importance is not None:
            self._consolidate(importance)
        self._task_sample_ = TaskSample(0)

    # ------------------------------------------------------------------ helpers

    def _max_stiffness(self) -> float:
        """Largest stiffness kept (:func:`~skcl.components.stiffness_limit`), or none
        without ``clip_stiffness``."""
        if not self.clip_stiffness:
            return math.inf
        return stiffness_limit(self.optimizer, self.learning_rate, self.momentum)
