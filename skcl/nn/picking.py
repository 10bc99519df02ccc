r"""Layers that own, pick and grow their weights per task (CPG's network).

A :class:`PickLinear` layer gives each weight an *owner*, the training
episode that trained it (or none: free), and computes a task :math:`t` with

.. math:: y = x_{:i_t} \left(W_{:o_t, :i_t} \odot M_t\right)^\top + b^t_{:o_t},
          \qquad M_t = O_t \lor (P_t \land \mathrm{pick}_t),

where :math:`O_t` marks the weights :math:`t` owns, :math:`P_t` those older
episodes own, :math:`\mathrm{pick}_t = [s_t > \tau]` the old weights task
:math:`t` chose with learned scores (straight-through, as
:class:`~skcl.nn.ScoreMaskLinear`), :math:`b^t` the task's own bias, and
:math:`o_t \times i_t` the layer's size when the task ended: weights and
units added later are outside its slice. While a task trains only the weights
it owns receive gradients (the old ones enter detached). When it ends
:meth:`PickLinear.freeze` stores :math:`M_t`, so its computation never changes
again. :class:`PickHeads` puts such a trunk under one head per task and
widens its hidden layers (:meth:`PickHeads.grow`).

Examples
--------
>>> import torch
>>> from skcl.nn import PickHeads, PickLinear, make_mlp
>>> net = PickHeads(lambda: make_mlp(4, (8,), linear=PickLinear), n_features=4)
>>> net.add_units(task=0, n_new=3, seed=0)
>>> net.open_task(0, episode=0, pick_init=1e-2)
>>> net.grow(2, seed=1, task=0)
>>> net.pick_layers[0].out_features, net(torch.zeros(5, 4), task=0).shape
(10, torch.Size([5, 3]))
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from skcl.nn.core import IncrementalLinear, TaskHeads
from skcl.nn.inference import check_task_inference, min_entropy_heads
from skcl.nn.masked import ScoreMaskLinear, task_groups

__all__ = ["FREE", "PickHeads", "PickLinear", "PrefixLinear"]

#: Owner code of a weight no episode owns: pruned, or never trained.
FREE = -1


def _uniform(shape, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


class PickLinear(ScoreMaskLinear):
    """A linear layer with owned, picked and growable weights and a bias per task.

    Parameters
    ----------
    in_features, out_features : int
    threshold : float, default=5e-3
        :math:`\\tau`, the threshold of the pick scores (Piggyback's).

    Attributes
    ----------
    owner : Tensor of int, the weight's shape
        The episode owning each weight, or :data:`FREE`.
    task_bias : Parameter of shape (n_tasks, out_features)
        One bias per task, rows in the order of ``bias_tasks``.
    """

    def __init__(self, in_features: int, out_features: int, threshold: float = 5e-3):
        super().__init__(in_features, out_features, bias=False, threshold=threshold)
        self.task_bias = nn.Parameter(torch.empty(0, out_features))
        self.register_buffer("owner", torch.full((out_features, in_features), FREE,
                                                 dtype=torch.int32))
        self.register_buffer("own_mask", torch.empty(0))
        self.register_buffer("old_mask", torch.empty(0))
        self.bias_tasks: list[int] = []
        self.episode = FREE

    def add_task(self, task: int, seed: int) -> None:
        """Give ``task`` a bias row, drawn as ``nn.Linear`` draws biases."""
        row = _uniform((1, self.out_features), self.in_features,
                       torch.Generator().manual_seed(seed))
        self.task_bias = nn.Parameter(torch.cat([self.task_bias.data,
                                                 row.to(self.task_bias)]))
        self.bias_tasks.append(int(task))

    def open(self, task: int, episode: int, pick_init: float) -> None:
        """Start training episode ``episode`` of ``task``: it takes every free weight and
        gets pick scores ``pick_init`` over the rest."""
        self.episode = episode
        self.owner[self.owner == FREE] = episode
        self.add_scores(task, torch.full_like(self.weight, pick_init))
        self._ownership_changed()

    def owned(self) -> torch.Tensor:
        """The weights the open episode owns."""
        return self.owner == self.episode

    def _ownership_changed(self) -> None:
        """Cache the open episode's own and old weights as 0/1 masks (empty when none is
        open)."""
        if self.episode == FREE:
            self.own_mask, self.old_mask = self.own_mask.new_empty(0), self.old_mask.new_empty(0)
            return
        own = self.owned()
        dtype = self.weight.dtype
        self.own_mask, self.old_mask = own.to(dtype), ((self.owner != FREE) & ~own).to(dtype)

    def mask(self, task: int) -> torch.Tensor | None:
        key = str(int(task))
        if key not in self.scores:
            return self.stored_mask(task)
        return self.own_mask + self.old_mask * super().mask(task)

    def masked_weight(self, task: int | None) -> torch.Tensor:
        if task is not None and str(int(task)) in self.scores:
            # Training: own weights get gradients, picked old ones enter detached.
            picks = super().mask(task)
            return self.weight * self.own_mask + self.weight.detach() * self.old_mask * picks
        mask = None if task is None else self.mask(task)
        if mask is None:
            return self.weight
        out, inp = mask.shape
        return self.weight[:out, :inp] * mask

    def forward(self, x: torch.Tensor, task=None) -> torch.Tensor:
        if task is None:
            return F.linear(x, self.weight)
        groups = task_groups(task, x.shape[0])
        if len(groups) == 1:
            return self._task_output(x, groups[0][0])
        out = x.new_zeros(x.shape[0], self.out_features)
        for t, rows in groups:
            out = out.index_copy(0, rows, self._task_output(x[rows], t))
        return out

    def _task_output(self, x: torch.Tensor, task: int) -> torch.Tensor:
        weight = self.masked_weight(task)
        out, inp = weight.shape
        bias = self.task_bias[self.bias_tasks.index(int(task)), :out]
        y = F.linear(x[:, :inp], weight, bias)
        return y if out == self.out_features else F.pad(y, (0, self.out_features - out))

    def freeze(self, task: int) -> None:
        """Store ``task``'s mask (the weights it owns and those it picked) and drop its
        scores. The caller rebuilds its optimizer."""
        with torch.no_grad():
            self.set_mask(task, self.mask(task) > 0.5)
        del self.scores[str(int(task))]
        self.episode = FREE
        self._ownership_changed()

    def prune(self, n: int) -> None:
        """Release the ``n`` owned weights of smallest magnitude: zeroed and made free."""
        own = self.owned()
        if n <= 0 or not bool(own.any()):
            return
        magnitude = torch.where(own, self.weight.detach().abs(),
                                torch.full_like(self.weight, math.inf))
        index = magnitude.flatten().topk(min(n, int(own.sum())), largest=False).indices
        with torch.no_grad():
            self.weight.view(-1)[index] = 0.0
        self.owner.view(-1)[index] = FREE
        self._ownership_changed()

    def grow(self, n_out: int, n_in: int, seed: int) -> None:
        """Append ``n_out`` units (rows drawn as ``nn.Linear`` draws them) and ``n_in``
        input columns (zeros, so the layer's function is unchanged), all owned by the open
        episode."""
        generator = torch.Generator().manual_seed(seed)
        device, dtype = self.weight.device, self.weight.dtype
        in_features = self.in_features + n_in
        weight = torch.cat([self.weight.data, torch.zeros(self.out_features, n_in,
                                                          device=device, dtype=dtype)], 1)
        rows = _uniform((n_out, in_features), in_features, generator).to(device, dtype)
        self.weight = nn.Parameter(torch.cat([weight, rows]))
        bias = _uniform((len(self.bias_tasks), n_out), in_features, generator)
        self.task_bias = nn.Parameter(torch.cat([self.task_bias.data, bias.to(device, dtype)],
                                                1))
        owner = F.pad(self.owner, (0, n_in, 0, n_out), value=self.episode)
        self.owner = owner
        for key in list(self.scores):
            self.scores[key] = nn.Parameter(F.pad(self.scores[key].data, (0, n_in, 0, n_out),
                                                  value=self.threshold))
        self.in_features, self.out_features = in_features, self.out_features + n_out
        self._ownership_changed()


class PrefixLinear(IncrementalLinear):
    """An output head that reads the first ``in_features`` features of a wider input, and
    widens with zero columns (so its function is unchanged)."""

    def widen(self, width: int) -> None:
        """Read ``width`` features, new columns zero."""
        if width > self.in_features:
            self.weight = nn.Parameter(F.pad(self.weight.data, (0, width - self.in_features)))
            self.in_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x[:, :self.in_features], self.weight, self.bias)


class PickHeads(TaskHeads):
    """A trunk of :class:`PickLinear` layers under one head per task (CPG's network).

    ``forward(x, None)`` (no task id) runs every task with its own masks and
    head and answers with the most confident head per sample, or for all the
    rows of the call (``task_inference``; :func:`~skcl.nn.min_entropy_heads`).

    Parameters
    ----------
    make_trunk : callable
        Zero-argument factory of a :class:`~skcl.nn.TaskSequential` of
        :class:`PickLinear` layers and activations.
    n_features : int
    task_inference : {'sample', 'batch'}, default='sample'
    """

    def __init__(self, make_trunk: Callable[[], nn.Module], n_features: int,
                 task_inference: str = "sample"):
        super().__init__(make_trunk, n_features, shared_trunk=True)
        self.task_inference = check_task_inference(task_inference)

    @property
    def pick_layers(self) -> list[PickLinear]:
        """The trunk's layers, input side first."""
        return [m for m in self.trunks["shared"].modules() if isinstance(m, PickLinear)]

    @property
    def width(self) -> int:
        """Width of the features the heads read."""
        layers = self.pick_layers
        return layers[-1].out_features if layers else self.n_features

    def add_units(self, task: int, n_new: int, seed: int) -> None:
        """Append ``n_new`` units to ``task``'s head; a new task gets its biases and head."""
        key = str(task)
        if key not in self.heads:
            for offset, layer in enumerate(self.pick_layers):
                layer.add_task(task, seed + offset + 1)
            self.heads[key] = PrefixLinear(self.width).to(self.unit_task.device)
        super().add_units(task, n_new, seed)

    def open_task(self, task: int, episode: int, pick_init: float) -> None:
        """Start training episode ``episode`` of ``task`` in every layer; its head reads
        every feature."""
        for layer in self.pick_layers:
            layer.open(task, episode, pick_init)
        self.heads[str(task)].widen(self.width)

    def grow(self, n_new: int, seed: int, task: int) -> None:
        """Add ``n_new`` units to every hidden layer, owned by the open episode; the
        network's function is unchanged (new units feed the next layer through zeros)."""
        layers = self.pick_layers
        for index, layer in enumerate(layers):
            n_in = n_new if index > 0 else 0
            layer.grow(n_new, n_in, seed + index)
        self.heads[str(task)].widen(self.width)

    def forward(self, x: torch.Tensor, task=None) -> torch.Tensor:
        if task is not None or not self.heads:
            return super().forward(x, task)
        each = super().forward
        return min_entropy_heads(torch.stack([each(x, int(t)) for t in self.heads.keys()]),
                                 self.task_inference)
