r"""Exact per-sample parameter importances: EWC's Fisher and MAS, the Python side of
``csrc/fisher.hpp`` (and ``csrc/cuda/fisher.cu``).

Part of :mod:`skcl.kernels`, the one door to compiled code, which re-exports
:func:`importance_diagonal`, :func:`fisher_diagonal` and :func:`mas_importance`:
import them from there. The input checks and the CPU/CUDA dispatch are
:mod:`skcl.kernels`'; this module holds what is particular to importances:
the batched pass over ``nn.Linear`` layers (:math:`\sum_b (\delta_b^2)^\top a_b^2`
from one backward), the ``torch.func`` pass for every other parameter, and the
losses of EWC and MAS.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from skcl.kernels import _C, _as_array, _count, _cuda_call, _cuda_module, _mark

__all__ = ["fisher_diagonal", "importance_diagonal", "mas_importance"]

_MODES = {2: "square", 1: "abs"}


def _accumulate_outer(delta: torch.Tensor, a: torch.Tensor, out: torch.Tensor, mode: str):
    """out += op(delta)^T op(a) on the tensors' device."""
    if out.device.type == "cuda":
        launcher = _cuda_module().accumulate_outer
        _cuda_call(launcher, out.device, delta, a, *delta.shape, a.shape[1], out, mode)
    else:
        _C.accumulate_outer(delta.numpy(), a.numpy(), out.numpy(), mode)


def _accumulate_rows(X: torch.Tensor, out: torch.Tensor, mode: str):
    """out += sum over rows of op(X) on the tensors' device."""
    if out.device.type == "cuda":
        _cuda_call(_cuda_module().accumulate_rows, out.device, X, *X.shape, out, mode)
    else:
        _C.accumulate_rows(X.numpy(), out.numpy(), mode)


def _linear_layers(model: nn.Module, names: dict[int, str]) -> dict[nn.Module, tuple]:
    """nn.Linear layers whose per-sample gradients are outer products of their own."""
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    layers = {}
    for module in model.modules():
        if type(module) is not nn.Linear:
            continue
        w, b = module.weight, module.bias
        if id(w) not in names or owners[id(w)] != 1:
            continue
        if b is not None and (owners[id(b)] != 1 or not b.requires_grad):
            b = None
        layers[module] = (names[id(w)], names[id(b)] if b is not None else None)
    return layers


class _LinearTap:
    """Forward hooks on the fast-path Linear layers, registered once per call. While
    ``active``, a layer records its input and output and hands a clone downstream, so
    in-place operations after it cannot change the tensor whose gradient is taken."""

    def __init__(self, layers):
        self.active = False
        self.records: dict[nn.Module, list] = {module: [] for module in layers}
        self.handles = [module.register_forward_hook(self._tap) for module in layers]

    def _tap(self, module, inputs, output):
        if not self.active:
            return None
        self.records[module].append((inputs[0], output))
        return output.clone()

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _linear_pass(model, tap, layers, xb, yb, per_sample_loss, acc, mode) -> set[str]:
    """Accumulate the Linear layers from one batched backward; return the names done."""
    if not layers:
        return set()
    for calls in tap.records.values():
        calls.clear()
    tap.active = True
    try:
        with torch.enable_grad():
            loss = per_sample_loss(model(xb), yb).sum()
    finally:
        tap.active = False
    ready = {
        module: calls[0]
        for module, calls in tap.records.items()
        if len(calls) == 1 and calls[0][0].dim() == 2 and calls[0][1].requires_grad
    }
    if not ready:
        return set()
    deltas = torch.autograd.grad(
        loss, [z for _, z in ready.values()], allow_unused=True, materialize_grads=True
    )
    done = set()
    for (module, (a, _)), delta in zip(ready.items(), deltas, strict=True):
        w_name, b_name = layers[module]
        delta = delta.detach().contiguous()
        _accumulate_outer(delta, a.detach().contiguous(), acc[w_name], mode)
        done.add(w_name)
        if b_name is not None:
            _accumulate_rows(delta, acc[b_name], mode)
            done.add(b_name)
    return done


def _generic_pass(model, params, names, xb, yb, per_sample_loss, acc, mode) -> None:
    """Accumulate per-sample gradients from torch.func (vmap of grad) for ``names``."""
    from torch.func import functional_call, grad, vmap

    theta = {n: params[n].detach() for n in names}
    rest = {n: p.detach() for n, p in model.named_parameters() if n not in theta}
    rest.update(model.named_buffers())

    def sample_loss(theta, x, y):
        out = functional_call(model, (theta, rest), (x.unsqueeze(0),))
        return per_sample_loss(out, None if y is None else y.unsqueeze(0)).sum()

    in_dims = (None, 0, None if yb is None else 0)
    grads = vmap(grad(sample_loss), in_dims=in_dims)(theta, xb, yb)
    for n, g in grads.items():
        _accumulate_rows(g.reshape(g.shape[0], -1).contiguous(), acc[n].view(-1), mode)


def importance_diagonal(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    per_sample_loss: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    y: np.ndarray | torch.Tensor | None = None,
    *,
    power: int = 2,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    r"""Mean over samples of :math:`|\partial \ell_i / \partial \theta|^{p}`, exactly.

    The core of :func:`fisher_diagonal` (EWC, :math:`p = 2`) and
    :func:`mas_importance` (MAS, :math:`p = 1`). No backward pass runs per
    sample. For ``nn.Linear`` layers (2-D input, used once), sample ``b``'s
    gradient is the outer product :math:`\delta_b a_b^\top` of the layer's output
    gradient and input, so :math:`\sum_b |\delta_b a_b^\top|^p =
    (|\delta|^p)^\top |a|^p`: one batched backward of :math:`\sum_i \ell_i` to the
    layer outputs (inputs and outputs captured by hooks) and a fused compiled
    product. Every other parameter gets per-sample gradients from
    ``torch.func`` (``vmap`` of ``grad``), raised to :math:`p` and summed by the
    compiled kernel.

    Parameters
    ----------
    model : nn.Module
        float32 model; run in eval mode for the computation (its mode is
        restored), so each sample's loss depends on that sample alone.
    X : ndarray or Tensor of shape (n_samples, ...)
        Inputs, moved to the model's device as float32.
    per_sample_loss : callable
        ``per_sample_loss(output, y_batch) -> Tensor of shape (batch,)``;
        ``y_batch`` is ``None`` when ``y`` is.
    y : ndarray or Tensor of shape (n_samples,), optional
        Targets passed to ``per_sample_loss`` (as int64).
    power : {1, 2}, default=2
    batch_size : int, default=256

    Returns
    -------
    importance : dict of str to Tensor
        Parameter name to a float32 tensor of the parameter's shape, for every
        parameter that requires grad.

    Examples
    --------
    >>> import torch
    >>> from skcl.kernels import importance_diagonal
    >>> net = torch.nn.Linear(3, 2)
    >>> imp = importance_diagonal(net, torch.ones(4, 3), lambda out, _: out.sum(1), power=1)
    >>> imp["weight"]
    tensor([[1., 1., 1.],
            [1., 1., 1.]])
    """
    return _importance(model, X, per_sample_loss, y, power, batch_size, labels=False)


def _importance(model, X, per_sample_loss, y, power, batch_size, labels):
    """importance_diagonal; with ``labels``, y must index the model's outputs."""
    if power not in _MODES or _count(batch_size, "batch_size") < 1:
        raise ValueError(f"need power in (1, 2) and batch_size >= 1, got {power!r}, {batch_size}")
    mode = _MODES[power]
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        return {}
    for n, p in params.items():
        if p.dtype != torch.float32:
            raise TypeError(f"parameter {n} is {p.dtype}; the kernels need a float32 model")
    device = next(iter(params.values())).device
    if device.type == "cuda":
        _cuda_module()
    if isinstance(X, torch.Tensor):
        X = X.detach().to(device=device, dtype=torch.float32)
    else:
        X = torch.as_tensor(_as_array(X, "X", np.ndim(X)), device=device)
    if X.dim() < 1 or X.shape[0] == 0:
        raise ValueError(f"X must hold at least one sample, got shape {tuple(X.shape)}")
    if not torch.isfinite(X.sum()) and not torch.isfinite(X).all():
        raise ValueError("X contains NaN or infinity")
    if y is not None:
        y = torch.as_tensor(y, device=device)
        if y.shape != X.shape[:1]:
            raise ValueError(f"y must have shape ({X.shape[0]},), got {tuple(y.shape)}")
        if y.dtype in (torch.bool, torch.complex64, torch.complex128) or (
            y.is_floating_point() and not torch.equal(y, y.round())
        ):
            raise TypeError(f"y must hold integer labels, got {y.dtype}")
        y = y.long()
    names = {id(p): n for n, p in params.items()}
    layers = _linear_layers(model, names)
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in params.items()}
    was_training = model.training
    model.eval()
    tap = _LinearTap(layers)
    try:
        if labels:
            with torch.no_grad():
                n_classes = model(X[:1]).shape[-1]
            if y.min() < 0 or y.max() >= n_classes:
                raise ValueError(f"labels must lie in [0, {n_classes}), the model's outputs")
        for start in range(0, X.shape[0], batch_size):
            xb = X[start : start + batch_size]
            yb = None if y is None else y[start : start + batch_size]
            done = _linear_pass(model, tap, layers, xb, yb, per_sample_loss, acc, mode)
            rest = [n for n in params if n not in done]
            if rest:
                _generic_pass(model, params, rest, xb, yb, per_sample_loss, acc, mode)
    finally:
        tap.remove()
        model.train(was_training)
    _mark(device.type)
    scale = 1.0 / X.shape[0]
    for n, value in acc.items():
        value.mul_(scale)
        if not torch.isfinite(value).all():
            raise ValueError(f"importance of {n} is not finite: the model or its loss overflows")
    return acc


def _log_likelihood_loss(output: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return nn.functional.cross_entropy(output, y, reduction="none")


def _squared_output_norm(output: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return output.flatten(1).pow(2).sum(1)


def fisher_diagonal(
    model: nn.Module,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    r"""Exact diagonal empirical Fisher of EWC (Kirkpatrick et al., PNAS 2017).

    .. math:: F = \frac1N \sum_{i=1}^N \left(\nabla_\theta \log p(y_i \mid x_i)\right)^2

    with :math:`p(\cdot \mid x)` the softmax of the model's output (logits),
    computed per sample without a backward pass per sample (see
    :func:`importance_diagonal`).

    Parameters
    ----------
    model : nn.Module
        float32 classifier returning logits of shape (batch, n_classes).
    X : ndarray or Tensor of shape (n_samples, ...)
    y : ndarray or Tensor of shape (n_samples,)
        Class indices.
    batch_size : int, default=256

    Returns
    -------
    fisher : dict of str to Tensor
        Parameter name to its diagonal Fisher, shaped like the parameter.

    Examples
    --------
    >>> import torch
    >>> from skcl.kernels import fisher_diagonal
    >>> net = torch.nn.Linear(2, 2)
    >>> _ = torch.nn.init.zeros_(net.weight), torch.nn.init.zeros_(net.bias)
    >>> fisher_diagonal(net, torch.tensor([[2.0, 0.0]]), torch.tensor([0]))["weight"]
    tensor([[1., 0.],
            [1., 0.]])
    """
    if y is None:
        raise ValueError("fisher_diagonal needs the labels y")
    return _importance(model, X, _log_likelihood_loss, y, 2, batch_size, labels=True)


def mas_importance(
    model: nn.Module, X: np.ndarray | torch.Tensor, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    r"""Parameter importance of MAS (Aljundi et al., ECCV 2018, Eq. 2-4).

    .. math:: \Omega = \frac1N \sum_{i=1}^N
              \left| \frac{\partial \lVert f(x_i; \theta) \rVert_2^2}{\partial \theta} \right|

    unsupervised (no labels), each sample's gradient taken exactly (see
    :func:`importance_diagonal`).

    Parameters
    ----------
    model : nn.Module
        float32 model; ``f`` is its output.
    X : ndarray or Tensor of shape (n_samples, ...)
    batch_size : int, default=256

    Returns
    -------
    importance : dict of str to Tensor
        Parameter name to its importance, shaped like the parameter.

    Examples
    --------
    >>> import torch
    >>> from skcl.kernels import mas_importance
    >>> net = torch.nn.Linear(1, 1)
    >>> _ = torch.nn.init.ones_(net.weight), torch.nn.init.zeros_(net.bias)
    >>> mas_importance(net, torch.tensor([[1.0], [-2.0]]))["weight"]
    tensor([[5.]])
    """
    return importance_diagonal(model, X, _squared_output_norm, power=1, batch_size=batch_size)
