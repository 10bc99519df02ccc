r"""The importance-weighted quadratic penalty shared by EWC, online EWC, SI, MAS and IMM.

At the end of each task every parameter :math:`\theta_i` receives an importance
:math:`\Omega_i` and an anchor :math:`\theta^*_i` (a detached copy of its value
then), and later tasks train on

.. math:: \mathcal{L}(\theta) = \mathcal{L}_{task}(\theta)
          + \tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2, \qquad k_i = s\,\Omega_i ,

the *stiffness* :math:`k_i` being the penalty's curvature. EWC, SI and MAS
share this mechanism (:class:`ImportancePenalty`) and differ only in how
:math:`\Omega` is computed (and in the factor :math:`s` that writes each
paper's penalty in this form); IMM's L2-transfer is the same penalty with unit
importance.

Stability under SGD. Heavy-ball SGD with step size :math:`\eta` and momentum
:math:`\mu` on the quadratic :math:`\tfrac12 k (\theta - \theta^*)^2` iterates
:math:`e_{t+1} = (1 + \mu - \eta k) e_t - \mu e_{t-1}`, which converges only
while :math:`\eta k < 2 (1 + \mu)`; past that the parameter oscillates with
growing amplitude and training ends in NaN. Large strengths reach it easily
(EWC with :math:`\lambda = 10^4` and a Fisher entry of 0.01 gives
:math:`\eta k = 5 > 3.8` at the protocol's :math:`\eta = 0.05, \mu = 0.9`).
With ``clip_stiffness=True`` (the default) each :math:`k_i` is clipped to
:math:`(1 + \mu) / \eta`, half that limit, leaving the other half to the task
loss's own curvature. A parameter at the clip is still pulled back to its
anchor within a few steps, so the clip changes how hard the most important
parameters are held only marginally, never whether they are held. Negative
importances (SI's path integral can be negative) give :math:`k_i = 0`: a
concave penalty is unbounded below. Adam's steps are bounded by its step size,
so no clip applies to it.
"""

from __future__ import annotations

import hashlib
from abc import ABCMeta, abstractmethod

import numpy as np
import torch
from torch import nn

from skcl.base import Batch, ContinualClassifier, Step

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


def _pad_rows(t: torch.Tensor, like: torch.Tensor, fill: torch.Tensor | None = None):
    """``t`` grown to ``like``'s rows (output layers only grow), with zeros or ``fill``'s rows."""
    n = t.shape[0]
    if n == like.shape[0]:
        return t
    extra = torch.zeros_like(like[n:]) if fill is None else fill[n:]
    return torch.cat([t, extra])


class _LinearHead(nn.Module):
    """A shared-head network for the importance kernels: the same trunk, and its output
    layer as a plain ``nn.Linear`` holding copies of the layer's weights.

    Parameter names are the network's. The kernels compute per-sample gradients of
    ``nn.Linear`` layers in one batched pass, so the head takes that path too.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.trunk = network.trunk
        head = network.head
        self.head = nn.Linear(head.in_features, head.out_features, device="meta")
        self.head.weight = nn.Parameter(head.weight.detach().clone())
        self.head.bias = nn.Parameter(head.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class ImportancePenalty(ContinualClassifier, metaclass=ABCMeta):
    r"""Base of the importance-weighted quadratic penalties (EWC, SI, MAS, IMM's L2-transfer).

    Holds the anchors :math:`\theta^*` (``anchor_``, detached clones of the
    parameters when the last task ended), the consolidated importances
    :math:`\Omega` (``importance_``) and the penalty
    :math:`\tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2` with
    :math:`k_i = s\,\Omega_i` clipped for stability (see the module
    docstring). A subclass names its strength in ``_strength = (parameter,
    s / parameter)``, takes a ``clip_stiffness`` parameter and implements
    :meth:`_importance`; when the output layer
    has grown since, the penalty covers only the units that existed when the
    importance was computed (new units have no anchor).

    Attributes
    ----------
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

    # ------------------------------------------------------------------ what a method provides

    @abstractmethod
    def _importance(self, task: int) -> dict[str, torch.Tensor] | None:
        """Importance of each parameter for the task just ended (shaped like the parameters)."""

    def _sample_size(self) -> int:
        """How many samples of each task the importance needs (0: none kept)."""
        return 0

    def _consolidate(self, importance: dict[str, torch.Tensor]) -> None:
        r"""Fold a task's importance into ``importance_``, :math:`\Omega \leftarrow \Omega +
        \Omega_t`, and anchor at the parameters the task ended with."""
        theta = self._parameter_snapshot()
        for name, omega in importance.items():
            old = self.importance_.get(name)
            self.importance_[name] = omega if old is None else omega + _pad_rows(old, omega)
            self.anchor_[name] = theta[name]

    # ------------------------------------------------------------------ hooks

    def _initialize(self) -> None:
        super()._initialize()
        self.importance_: dict[str, torch.Tensor] = {}
        self.anchor_: dict[str, torch.Tensor] = {}
        self._stiffness_: dict[str, torch.Tensor] = {}
        self._forces_: list[torch.Tensor] | None = None
        self._penalized_: list[nn.Parameter] | None = None
        self._task_sample_ = TaskSample(0)

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self._task_sample_ = TaskSample(self._sample_size())
        self._stiffness_ = self._stiffness()
        # Fixed for the task: anchors, square roots of the stiffness, buffers of the forces.
        self._anchors_ = [self.anchor_[n] for n in self._stiffness_]
        self._root_stiffness_ = [k.sqrt() for k in self._stiffness_.values()]
        self._force_buffers_ = [torch.empty_like(k) for k in self._stiffness_.values()]
        self._forces_ = None

    def _observe(self, samples: Batch) -> None:
        self._task_sample_.add(samples.X, samples.y, samples.weight)
        # Parameters are replaced only when output units are added, before a call trains.
        self._penalized_ = self._penalized_parameters()
        super()._observe(samples)
        self._penalized_ = None

    def _penalty(self) -> torch.Tensor | None:
        # The value joins the loss; the gradient k (theta - theta*) is formed here in closed
        # form, in preallocated buffers, and added to the gradients in _after_backward.
        if not self._stiffness_:
            self._forces_ = None
            return None
        params = self._penalized_ or self._penalized_parameters()
        rows = [p if p.shape[0] == a.shape[0] else p[: a.shape[0]]
                for p, a in zip(params, self._anchors_, strict=True)]
        forces = self._force_buffers_
        with torch.no_grad():
            torch._foreach_copy_(forces, rows)
            torch._foreach_sub_(forces, self._anchors_)
            torch._foreach_mul_(forces, self._root_stiffness_)
            value = 0.5 * torch.stack(torch._foreach_norm(forces)).square().sum()
            torch._foreach_mul_(forces, self._root_stiffness_)
        self._forces_ = forces
        return value

    def _after_backward(self, batch: Batch, step: Step) -> None:
        super()._after_backward(batch, step)
        if self._forces_ is None:
            return
        grads = []
        for p, force in zip(self._penalized_ or self._penalized_parameters(), self._forces_,
                            strict=True):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad if p.shape[0] == force.shape[0] else p.grad[: force.shape[0]])
        torch._foreach_add_(grads, self._forces_)

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        importance = self._importance(task)
        if importance is not None:
            self._consolidate(importance)
        self._task_sample_ = TaskSample(0)

    # ------------------------------------------------------------------ helpers

    def _max_stiffness(self) -> float:
        """Largest stiffness kept: half of SGD-with-momentum's stability limit 2(1+mu)/eta."""
        if not self.clip_stiffness or self.optimizer != "sgd":
            return float("inf")
        return (1.0 + self.momentum) / self.learning_rate

    def _stiffness(self) -> dict[str, torch.Tensor]:
        name, factor = self._strength
        scale = factor * float(getattr(self, name))
        cap = self._max_stiffness()
        return {n: (scale * omega).clamp(0.0, cap) for n, omega in self.importance_.items()}

    def _penalized_parameters(self) -> list[nn.Parameter]:
        params = dict(self.network_.named_parameters())
        return [params[n] for n in self._stiffness_]

    def _parameter_snapshot(self) -> dict[str, torch.Tensor]:
        """Detached clones of the network's parameters, by name."""
        return {n: p.detach().clone() for n, p in self.network_.named_parameters()}

    def _importance_kernel(self, kernel, *data) -> dict[str, torch.Tensor]:
        """Run an importance kernel (``fisher_diagonal``, ``mas_importance``) on the network."""
        return kernel(_LinearHead(self.network_), *data, batch_size=_KERNEL_BATCH)
