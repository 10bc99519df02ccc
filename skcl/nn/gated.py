r"""Units gated per task by a sigmoid on a learned task embedding (HAT's attention).

A :class:`GatedLinear` layer multiplies each output unit :math:`i` by a gate

.. math:: a^t_i = \sigma(s \, e^t_i) \in (0, 1),

where :math:`e^t` is task :math:`t`'s embedding (one learned number per unit)
and :math:`s > 0` the slope: a large slope makes the gate a near-binary
"this task uses this unit". :class:`GatedHeads` puts such a trunk under one
output head per task and hands the layers a :class:`GateContext` (the task
and the slope); plain task ids are gated at the network's ``s_max``.
:func:`min_entropy_heads` answers a prediction without a task id by the head
that is most confident.

Examples
--------
>>> import torch
>>> from skcl.nn import GatedHeads, GatedLinear, make_mlp
>>> net = GatedHeads(lambda: make_mlp(4, (8,), linear=GatedLinear), n_features=4, s_max=400.0)
>>> net.add_units(task=0, n_new=2, seed=0)
>>> net(torch.zeros(3, 4), task=0).shape
torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from skcl.nn.core import TaskHeads
from skcl.nn.inference import check_task_inference, min_entropy_heads

__all__ = ["GateContext", "GatedHeads", "GatedLinear"]


class GateContext(NamedTuple):
    """The task context gated layers read: the task (one id or one per sample) and the
    slope :math:`s` of the gates."""

    task: torch.Tensor | int
    slope: float


class GatedLinear(nn.Linear):
    r"""A linear layer whose output units are gated per task: :math:`h = (W x + b) \odot
    \sigma(s \, e^t)`.

    Placed before a ReLU this is HAT's :math:`\mathrm{ReLU}(W x + b) \odot a^t`, since the
    gate is positive. The embeddings :math:`e^t` are rows of ``embedding``, one per task
    added by :meth:`add_task`, drawn from :math:`N(0, 1)` (``torch.nn.Embedding``'s
    initialisation, HAT's). Called with ``None`` for the task it is a plain linear layer.

    Parameters
    ----------
    in_features, out_features : int
        As in :class:`torch.nn.Linear`.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import GateContext, GatedLinear
    >>> layer = GatedLinear(3, 2)
    >>> layer.add_task(7, seed=0)
    >>> with torch.no_grad():
    ...     _ = layer.embedding.fill_(-6.0)
    >>> layer(torch.ones(1, 3), GateContext(7, 400.0)).abs().max().item()
    0.0
    """

    takes_task = True

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features)
        self.embedding = nn.Parameter(torch.empty(0, out_features))
        self.register_buffer("gate_tasks", torch.empty(0, dtype=torch.long))

    @property
    def tasks(self) -> list[int]:
        """Task ids with an embedding, in the order of ``embedding``'s rows."""
        return self.gate_tasks.tolist()

    def add_task(self, task: int, seed: int) -> None:
        """Append an embedding row for ``task``, drawn from N(0, 1) with ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        row = torch.randn(1, self.out_features, generator=generator)
        device = self.weight.device
        self.embedding = nn.Parameter(torch.cat([self.embedding.data, row.to(device,
                                                 self.embedding.dtype)]))
        self.gate_tasks = torch.cat([self.gate_tasks,
                                     torch.tensor([task], device=self.gate_tasks.device)])

    def rows(self, task: torch.Tensor | int) -> torch.Tensor | int:
        """The embedding row of ``task`` (an int), or of every sample (a tensor)."""
        if isinstance(task, int):
            return self.tasks.index(task)
        return (task.unsqueeze(1) == self.gate_tasks.unsqueeze(0)).int().argmax(1)

    def gate(self, task: torch.Tensor | int, slope: float) -> torch.Tensor:
        r""":math:`\sigma(s \, e^t)`: shape ``(out_features,)`` for one task, ``(n,
        out_features)`` for a task per sample."""
        return torch.sigmoid(slope * self.embedding[self.rows(task)])

    def forward(self, x: torch.Tensor, context: GateContext | None = None) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if context is None:
            return out
        return out * self.gate(context.task, context.slope)


class GatedHeads(TaskHeads):
    """A trunk of gated layers under one output head per task (HAT's network).

    ``forward(x, task)`` takes a task id, one per sample, a :class:`GateContext`
    (training passes the annealed slope this way), or ``None``: then every task
    answers with its own gates and head and :func:`min_entropy_heads` picks one per
    sample or one for the batch (``task_inference``). Plain ids are gated at ``s_max``.

    Parameters
    ----------
    make_trunk : callable
        Zero-argument factory of the trunk (a :class:`~skcl.nn.TaskSequential` of
        :class:`GatedLinear` layers).
    n_features : int
    s_max : float
        The slope of predictions.
    task_inference : {'sample', 'batch'}, default='sample'
        Without a task: one head per sample, or one for all the rows of a call.
    """

    def __init__(self, make_trunk: Callable[[], nn.Module], n_features: int, s_max: float,
                 task_inference: str = "sample"):
        super().__init__(make_trunk, n_features, shared_trunk=True)
        self.s_max = float(s_max)
        self.task_inference = check_task_inference(task_inference)

    @property
    def gated_layers(self) -> list[GatedLinear]:
        """The trunk's gated layers, input side first."""
        return [m for m in self.trunks["shared"].modules() if isinstance(m, GatedLinear)]

    def add_units(self, task: int, n_new: int, seed: int) -> None:
        """Append ``n_new`` units to ``task``'s head; a new task also gets its embeddings."""
        if str(task) not in self.heads:
            for offset, layer in enumerate(self.gated_layers):
                layer.add_task(task, seed + offset + 1)
        super().add_units(task, n_new, seed)

    def context(self, task) -> GateContext | None:
        """``task`` as a :class:`GateContext` (plain ids at ``s_max``; ``None`` stays)."""
        if task is None or isinstance(task, GateContext):
            return task
        return GateContext(task, self.s_max)

    def features(self, x: torch.Tensor, task) -> torch.Tensor:
        return super().features(x, self.context(task))

    def forward(self, x: torch.Tensor, task=None) -> torch.Tensor:
        context = self.context(task)
        if context is not None:
            return super().forward(x, context)
        tasks = [int(t) for t in self.heads.keys()]
        if not tasks:
            return super().forward(x, None)
        each = super().forward
        return min_entropy_heads(torch.stack([each(x, GateContext(t, self.s_max))
                                              for t in tasks]), self.task_inference)

    def _tasks_to_run(self, task, *rest):
        return super()._tasks_to_run(task.task if isinstance(task, GateContext) else task,
                                     *rest)
