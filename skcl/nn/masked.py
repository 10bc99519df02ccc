r"""Masked linear layers: one weight tensor, a binary mask per task.

A masked layer computes, for a sample of task :math:`t`,

.. math:: y = x \, (W \odot M_t)^\top + b ,

with :math:`W` the layer's weight and :math:`M_t \in \{0, 1\}^{out \times in}`
the task's mask. It takes the task (``takes_task = True``), so built into a
trunk by :func:`skcl.nn.make_trunk` (``linear=`` one of these classes) and
run through :class:`~skcl.nn.TaskSequential`, each sample is computed with
the mask of its own task. The task is an int, one id per sample (rows are
grouped by task), ``None`` (no mask: the dense layer :math:`x W^\top + b`,
which is also how :func:`skcl.nn.output_width` probes a trunk), or a
:class:`Superposition` of tasks.

Three ways of getting the masks, one class each:

- :class:`TaskMaskLinear`: binary masks set by the method
  (:meth:`~TaskMaskLinear.set_mask`). PackNet stores, per task, the weights
  it trained plus those of earlier tasks; CPG's "pick" stores its chosen
  subset of old weights. A task without a stored mask sees the whole weight
  (the task being trained, in PackNet). The method keeps old weights fixed by
  masking their gradients (see :meth:`MaskedLinear.forward`).
- :class:`ScoreMaskLinear`: Piggyback's real-valued scores :math:`s_t`, one
  per weight and task, thresholded, :math:`M_t = [s_t > \tau]`; the gradient
  passes straight through the threshold,
  :math:`\partial L / \partial s_t = \partial L / \partial M_t`.
  :meth:`~ScoreMaskLinear.freeze_scores` turns a finished task's scores into
  its stored binary mask. The weight itself is fixed (the backbone).
- :class:`SupermaskLinear`: SupSup's supermasks over fixed random
  signed-constant weights, learned by edge-popup: :math:`M_t` keeps the
  fraction ``density`` of the weights with the largest scores :math:`|s_t|`,
  with the straight-through gradient taken with respect to :math:`|s_t|`.

Examples
--------
>>> import torch
>>> from skcl.nn import TaskMaskLinear
>>> layer = TaskMaskLinear(3, 2)
>>> layer.set_mask(0, torch.zeros(2, 3, dtype=torch.bool))
>>> torch.allclose(layer(torch.ones(4, 3), 0), layer.bias.expand(4, 2))
True
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from skcl._call import SharedExcept


class Superposition(NamedTuple):
    r"""A task context mixing the masks of several tasks (SupSup's superposition).

    A masked layer given a superposition computes, for sample :math:`n`,
    :math:`y_n = \sum_i \alpha_{n,i} \, (x_n (W \odot M_{t_i})^\top + b)`, which
    for one shared :math:`\alpha` is :math:`x (W \odot \sum_i \alpha_i M_{t_i})^\top + b`;
    one row of ``alpha`` per sample keeps each sample's gradient with respect
    to its own :math:`\alpha_n` separate.

    Attributes
    ----------
    alpha : Tensor of shape (n_samples, n_tasks)
        Mixing weights :math:`\alpha`.
    tasks : tuple of int
        The task of each column of ``alpha``.
    """

    alpha: torch.Tensor
    tasks: tuple[int, ...]


def task_groups(task, n_rows: int) -> list[tuple[int, torch.Tensor | None]]:
    """``(task, rows)`` pairs for a task given as an int or one id per sample, ``rows``
    ``None`` when every sample has that task.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn.masked import task_groups
    >>> task_groups(torch.tensor([1, 0, 1]), 3)
    [(0, tensor([1])), (1, tensor([0, 2]))]
    """
    if isinstance(task, int):
        return [(task, None)]
    values = torch.unique(task).tolist()
    if len(values) == 1:
        return [(int(values[0]), None)]
    return [(int(t), torch.nonzero(task == t).flatten()) for t in values]


class _StraightThrough(torch.autograd.Function):
    """Forward: the binary mask; backward: the gradient goes to the scores unchanged."""

    @staticmethod
    def forward(ctx, scores, mask):
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class MaskedLinear(nn.Module):
    r"""Base of the masked layers: :math:`y = x (W \odot M_t)^\top + b` per task.

    Subclasses say what :math:`M_t` is (:meth:`mask`). Gradients reach
    :math:`W` only through :math:`W \odot M_t`, so entries outside the
    mask of the task trained get none; a method that also shares masked-in
    entries between tasks (PackNet) masks their gradients itself.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default=True
        Whether the layer has a bias :math:`b` (shared by all tasks, never masked).
    """

    takes_task = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        dense = nn.Linear(in_features, out_features, bias=bias)  # torch's default init
        self.weight = dense.weight
        self.bias = dense.bias

    def mask(self, task: int) -> torch.Tensor | None:
        """:math:`M_t` (boolean or 0/1 valued, the weight's shape), or ``None``: no mask."""
        return None

    def masked_weight(self, task: int | None) -> torch.Tensor:
        r""":math:`W \odot M_t` (:math:`W` itself for ``task=None`` or no mask)."""
        mask = None if task is None else self.mask(task)
        return self.weight if mask is None else self.weight * mask

    def forward(self, x: torch.Tensor, task=None) -> torch.Tensor:
        if task is None:
            return F.linear(x, self.weight, self.bias)
        if isinstance(task, Superposition):
            return self._superposed(x, task)
        groups = task_groups(task, x.shape[0])
        if len(groups) == 1:
            return F.linear(x, self.masked_weight(groups[0][0]), self.bias)
        out = x.new_zeros(x.shape[0], self.out_features)
        for t, rows in groups:
            out = out.index_copy(0, rows, F.linear(x[rows], self.masked_weight(t), self.bias))
        return out

    def _superposed(self, x: torch.Tensor, sup: Superposition) -> torch.Tensor:
        weights = torch.stack([self.masked_weight(t) for t in sup.tasks])  # (k, out, in)
        y = torch.einsum("ni,koi->nko", x, weights)
        if self.bias is not None:
            y = y + self.bias
        return torch.einsum("nk,nko->no", sup.alpha, y)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class TaskMaskLinear(MaskedLinear):
    r"""A masked layer with a stored binary mask per task (PackNet, CPG's pick).

    :math:`M_t` is the boolean buffer set by :meth:`set_mask`; a task without
    one sees the whole weight (``mask(t)`` is ``None``). Masks are buffers, so
    they travel with the module (``state_dict``, pickling, ``.to()``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default=True

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import TaskMaskLinear
    >>> layer = TaskMaskLinear(2, 2, bias=False)
    >>> layer.set_mask(1, torch.eye(2, dtype=torch.bool))
    >>> torch.equal(layer.masked_weight(1), layer.weight.diag().diag())
    True
    >>> layer.mask_tasks, layer.mask(0) is None
    ([1], True)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.mask_tasks: list[int] = []

    @staticmethod
    def _buffer_name(task: int) -> str:
        return f"mask_{int(task)}"

    def set_mask(self, task: int, mask: torch.Tensor) -> None:
        """Store (or replace) task ``task``'s binary mask."""
        if tuple(mask.shape) != tuple(self.weight.shape):
            raise ValueError(f"a mask of shape {tuple(mask.shape)} for a weight of shape "
                             f"{tuple(self.weight.shape)}")
        self.register_buffer(self._buffer_name(task), mask.to(self.weight.device, torch.bool))
        if int(task) not in self.mask_tasks:  # a new list: a checkpoint may share the old
            self.mask_tasks = [*self.mask_tasks, int(task)]

    def stored_mask(self, task: int) -> torch.Tensor | None:
        """The boolean mask stored for ``task`` (``None`` when there is none)."""
        return self._buffers.get(self._buffer_name(task))

    def shared_with_checkpoint(self) -> list:
        """The stored masks and their list of tasks, for a call's checkpoint to share whole
        (``skcl._call.SharedExcept``): :meth:`set_mask` replaces a mask and the list,
        never changes them in place, and the layer's buffers are its masks alone."""
        return [SharedExcept(self._buffers, ()), self.mask_tasks]

    def mask(self, task: int) -> torch.Tensor | None:
        return self.stored_mask(task)


class ScoreMaskLinear(TaskMaskLinear):
    r"""Piggyback's masks: real-valued scores per task, thresholded with a straight-through
    gradient (Mallya, Davis & Lazebnik, ECCV 2018).

    While task :math:`t` learns, :math:`M_t = [s_t > \tau]` in the forward pass
    and :math:`\partial L / \partial s_t = \partial L / \partial M_t` in the
    backward pass (the threshold is skipped). :meth:`freeze_scores` then
    stores :math:`M_t` as the task's binary mask and drops :math:`s_t`. The
    weight and bias are the fixed backbone (the method keeps them out of the
    optimizer); a task with neither scores nor mask uses them unmasked.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default=True
    threshold : float, default=5e-3
        :math:`\tau`, the paper's.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import ScoreMaskLinear
    >>> layer = ScoreMaskLinear(3, 2)
    >>> layer.add_scores(1, torch.full((2, 3), 1e-2))
    >>> bool(layer.mask(1).all()), layer.scores["1"].requires_grad
    (True, True)
    >>> layer.freeze_scores(1)
    >>> layer.stored_mask(1).dtype, len(layer.scores)
    (torch.bool, 0)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 threshold: float = 5e-3):
        super().__init__(in_features, out_features, bias)
        self.threshold = threshold
        self.scores = nn.ParameterDict()

    def add_scores(self, task: int, scores: torch.Tensor) -> None:
        """Give ``task`` learnable scores (the weight's shape)."""
        if tuple(scores.shape) != tuple(self.weight.shape):
            raise ValueError(f"scores of shape {tuple(scores.shape)} for a weight of shape "
                             f"{tuple(self.weight.shape)}")
        self.scores[str(int(task))] = nn.Parameter(
            scores.to(self.weight.device, self.weight.dtype).clone())

    def ranked(self, scores: torch.Tensor) -> torch.Tensor:
        """What the mask thresholds (the scores themselves; autograd runs through it)."""
        return scores

    def select(self, ranked: torch.Tensor) -> torch.Tensor:
        r"""The binary mask of ranked scores: :math:`[s > \tau]`."""
        return ranked > self.threshold

    def binarize(self, scores: torch.Tensor) -> torch.Tensor:
        """The binary mask of ``scores``."""
        return self.select(self.ranked(scores))

    def mask(self, task: int) -> torch.Tensor | None:
        key = str(int(task))
        if key in self.scores:
            ranked = self.ranked(self.scores[key])
            return _StraightThrough.apply(ranked, self.select(ranked.detach()))
        return self.stored_mask(task)

    def freeze_scores(self, task: int | None = None) -> None:
        """Store the binary mask of ``task``'s scores (every task's for ``None``) and drop
        the scores. The caller rebuilds its optimizer (``_parameters_changed``)."""
        keys = list(self.scores) if task is None else [str(int(task))]
        for key in keys:
            if key in self.scores:
                with torch.no_grad():
                    self.set_mask(int(key), self.binarize(self.scores[key]))
                del self.scores[key]


class SupermaskLinear(ScoreMaskLinear):
    r"""SupSup's supermasks (Wortsman et al., NeurIPS 2020) over fixed signed constants,
    learned by edge-popup (Ramanujan et al., CVPR 2020).

    The weight is fixed at :math:`W_{ij} = \pm \sqrt{2 / \text{fan-in}}`
    (random signs: the signed Kaiming constant) and never trained; there is
    no bias. Task :math:`t`'s mask keeps the ``density`` fraction of the
    entries with the largest :math:`|s_t|`:
    :math:`M_t = \text{top-}k(|s_t|)`, with the straight-through gradient of
    :class:`ScoreMaskLinear` reaching :math:`|s_t|` (so :math:`s_t` through its sign).
    Scores start as ``nn.Linear`` weights do,
    :math:`U(-1/\sqrt{\text{fan-in}}, 1/\sqrt{\text{fan-in}})`.

    Parameters
    ----------
    in_features, out_features : int
    density : float, default=0.5
        :math:`k`, the fraction of each layer's weights a supermask keeps.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import SupermaskLinear
    >>> layer = SupermaskLinear(4, 5, density=0.5)
    >>> layer.new_scores(0, seed=0)
    >>> int(layer.mask(0).sum()), layer.weight.requires_grad
    (10, False)
    """

    def __init__(self, in_features: int, out_features: int, density: float = 0.5):
        super().__init__(in_features, out_features, bias=False, threshold=0.0)
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density!r}")
        self.density = density
        self.weight.requires_grad_(False)
        with torch.no_grad():
            self.weight.copy_(self._signed_constants(self.weight.sign()))

    def _signed_constants(self, signs: torch.Tensor) -> torch.Tensor:
        scale = math.sqrt(2.0 / self.in_features) if self.in_features else 0.0
        return torch.where(signs >= 0, scale, -scale).to(signs.dtype)

    def _uniform(self, shape, generator: torch.Generator) -> torch.Tensor:
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        return torch.empty(shape).uniform_(-bound, bound, generator=generator)

    def new_scores(self, task: int, seed: int) -> None:
        """Give ``task`` fresh scores drawn from ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        self.add_scores(task, self._uniform(tuple(self.weight.shape), generator))

    def ranked(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.abs()

    def select(self, ranked: torch.Tensor) -> torch.Tensor:
        """The top-:math:`k` mask of ``ranked``: the entries above its
        :math:`(n - k)`-th smallest value (a selection, not a sort). Only when
        values tie at that boundary does a ``topk`` choose among them.
        """
        flat = ranked.flatten()
        n = flat.numel()
        keep = max(1, round(self.density * n)) if n else 0
        if keep == n:
            return torch.ones_like(ranked, dtype=torch.bool)
        mask = flat > flat.kthvalue(n - keep).values
        if int(mask.sum()) != keep:
            mask = torch.zeros_like(flat, dtype=torch.bool)
            mask[flat.topk(keep).indices] = True
        return mask.view_as(ranked)

    def grow(self, n_new: int, seed: int) -> None:
        """Append ``n_new`` output rows (fixed signed constants): stored masks get rows of
        zeros, scores new random rows (an output layer whose units grow)."""
        generator = torch.Generator().manual_seed(seed)
        device, dtype = self.weight.device, self.weight.dtype
        signs = torch.randint(0, 2, (n_new, self.in_features), generator=generator) * 2 - 1
        rows = self._signed_constants(signs.to(dtype)).to(device)
        self.weight = nn.Parameter(torch.cat([self.weight.data, rows]), requires_grad=False)
        self.out_features += n_new
        for task in self.mask_tasks:
            old = self.stored_mask(task)
            self.set_mask(task, torch.cat([old, old.new_zeros(n_new, self.in_features)]))
        for key in list(self.scores):
            new = self._uniform((n_new, self.in_features), generator).to(device, dtype)
            self.scores[key] = nn.Parameter(torch.cat([self.scores[key].data, new]))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"density={self.density}")
