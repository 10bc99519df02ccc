r"""Per-sample gradients of linear layers from one batched backward pass.

The one implementation of the linear-layer trick, shared by the importances
of EWC and MAS (:mod:`skcl._fisher`) and GEM's per-task memory gradients
(:mod:`skcl.strategies.gradient`). For a linear layer :math:`z_b = W a_b + c`
applied once to each sample's 2-D input, sample :math:`b`'s gradient of its
own loss is the outer product

.. math:: \nabla_W \ell_b = \delta_b a_b^\top, \qquad \nabla_c \ell_b = \delta_b,
          \qquad \delta_b = \frac{\partial \ell_b}{\partial z_b},

and when samples do not interact (eval mode) :math:`\delta_b` is also the
gradient of :math:`\sum_i \ell_i` with respect to :math:`z_b`: one forward
with hooks that capture every layer's input and output, and one backward to
the outputs, give all of them.

A hook hands a clone of the layer's output downstream, so an in-place
operation after the layer (``nn.ReLU(inplace=True)``) changes the clone, not
the tensor whose gradient is taken. A layer whose input is changed in place
after the layer read it, that runs more than once per forward, or whose input
is not 2-D is left out; its parameters are reported in ``rest`` for the
caller's general path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import nn

from skcl.nn import IncrementalLinear

__all__ = ["LinearGrads", "linear_backward", "linear_layers"]

# Layers whose forward is exactly F.linear(x, weight, bias); subclasses may differ.
_LINEAR_TYPES = (nn.Linear, IncrementalLinear)


def linear_layers(
    model: nn.Module, params: Iterable[torch.Tensor]
) -> dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]]:
    """The linear layers of ``model`` whose gradients the outer product gives.

    Parameters
    ----------
    model : nn.Module
        The network.
    params : iterable of Tensor
        The parameters whose gradients are wanted.

    Returns
    -------
    layers : dict of nn.Module to (Tensor, Tensor or None)
        Each ``nn.Linear`` or :class:`~skcl.nn.IncrementalLinear` (exact type)
        whose weight is in ``params``, requires grad and belongs to this layer
        alone, mapped to its weight and its bias (``None`` when the bias is
        absent, not in ``params``, frozen or shared with another module).
    """
    wanted = {id(p) for p in params}
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    layers = {}
    for module in model.modules():
        if type(module) not in _LINEAR_TYPES:
            continue
        w, b = module.weight, module.bias
        if id(w) not in wanted or owners[id(w)] != 1 or not w.requires_grad:
            continue
        if b is not None and (id(b) not in wanted or owners[id(b)] != 1 or not b.requires_grad):
            b = None
        layers[module] = (w, b)
    return layers


class LinearGrads(NamedTuple):
    """What :func:`linear_backward` returns."""

    losses: torch.Tensor
    """The per-sample losses, shape (n,), still attached to the graph."""
    grads: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]
    """Layer to ``(a, delta)``: its input (n, in) and the gradient of the summed
    losses with respect to its output (n, out), both detached."""
    rest: list[torch.Tensor]
    """The parameters of ``params`` these layers do not cover, in order."""


def linear_backward(
    layers: dict[nn.Module, tuple[torch.Tensor, torch.Tensor | None]],
    forward: Callable[[], torch.Tensor],
    n: int,
    params: Iterable[torch.Tensor],
) -> LinearGrads:
    """Run ``forward`` once with the layers tapped and backpropagate to their outputs.

    Parameters
    ----------
    layers : dict
        From :func:`linear_layers`.
    forward : callable
        ``forward() -> Tensor of shape (n,)``: the per-sample losses of the
        batch. It runs with gradients enabled; the caller sets eval mode.
    n : int
        Number of samples in the batch.
    params : iterable of Tensor
        The parameters whose gradients are wanted; those the tapped layers do
        not cover come back in ``rest``, and the graph is kept for them.

    Returns
    -------
    result : LinearGrads

    Raises
    ------
    ValueError
        When ``forward`` does not return one loss per sample.
    """
    records: dict[nn.Module, list] = {module: [] for module in layers}

    def tap(module, inputs, output):
        a = inputs[0]
        records[module].append((a, a._version, output))
        return output.clone()

    handles = [module.register_forward_hook(tap) for module in layers]
    try:
        with torch.enable_grad():
            losses = forward()
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (n,):
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(
            f"the per-sample loss must return one loss per sample, shape ({n},), got {shape}; "
            "use reduction='none'"
        )
    ready = {
        module: (a, z)
        for module, calls in records.items()
        if len(calls) == 1
        for a, version, z in calls
        if a.dim() == 2 and a._version == version and z.requires_grad
    }
    covered = {id(p) for module in ready for p in layers[module] if p is not None}
    rest = [p for p in params if id(p) not in covered and p.requires_grad]
    if not ready:
        return LinearGrads(losses, {}, rest)
    deltas = torch.autograd.grad(
        losses.sum(),
        [z for _, z in ready.values()],
        retain_graph=bool(rest),
        allow_unused=True,
        materialize_grads=True,
    )
    grads = {
        module: (a.detach(), delta.detach())
        for (module, (a, _)), delta in zip(ready.items(), deltas, strict=True)
    }
    return LinearGrads(losses, grads, rest)
