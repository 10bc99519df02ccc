r"""Exact per-sample parameter importances: EWC's Fisher and MAS, the Python side of
``csrc/fisher.hpp`` (and ``csrc/cuda/fisher.cu``).

Part of :mod:`skcl.kernels`, the one door to compiled code, which re-exports
:func:`importance_diagonal`, :func:`fisher_diagonal` and :func:`mas_importance`:
import them from there. The input checks and the CPU/CUDA dispatch are those of
:mod:`skcl._backend`, the per-sample gradients of linear layers those of
:mod:`skcl._per_sample` (shared with GEM); this module holds what is particular
to importances: the fused accumulation of the linear layers
(:math:`\sum_b (\delta_b^2)^\top a_b^2` from one backward), the ``torch.func``
pass for every other parameter, and the losses of EWC and MAS.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from skcl._backend import _C, as_array, check_tensor, count, cuda_call, cuda_module, mark
from skcl._per_sample import linear_backward, linear_layers

__all__ = ["fisher_diagonal", "importance_diagonal", "mas_importance"]

_MODES = {2: "square", 1: "abs"}


def _operand(x: torch.Tensor, name: str, shape: tuple, device: torch.device) -> torch.Tensor:
    """Check one operand of the accumulation kernels: float32, contiguous, of the given
    shape and on ``device`` (CUDA launchers read raw pointers, so a float16 activation
    under autocast would otherwise be read past its end)."""
    x = check_tensor(x, name, len(shape))
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the accumulator is on {device}")
    return x


def _accumulate_outer(delta: torch.Tensor, a: torch.Tensor, out: torch.Tensor, mode: str):
    """out += op(delta)^T op(a) on the tensors' device."""
    if delta.dim() != 2 or a.dim() != 2:
        raise ValueError(f"delta and a must be 2-D, got {delta.dim()}-D and {a.dim()}-D")
    (B, O), I = delta.shape, a.shape[1]
    out = _operand(out, "out", (O, I), out.device)
    delta = _operand(delta, "delta", (B, O), out.device)
    a = _operand(a, "activations", (B, I), out.device)
    if out.device.type == "cuda":
        cuda_call(cuda_module().accumulate_outer, out.device, delta, a, B, O, I, out, mode)
    else:
        _C.accumulate_outer(delta.numpy(), a.numpy(), out.numpy(), mode)


def _accumulate_rows(X: torch.Tensor, out: torch.Tensor, mode: str):
    """out += sum over rows of op(X) on the tensors' device."""
    if X.dim() != 2:
        raise ValueError(f"X must be 2-D, got {X.dim()}-D")
    out = _operand(out, "out", (X.shape[1],), out.device)
    X = _operand(X, "X", tuple(X.shape), out.device)
    if out.device.type == "cuda":
        cuda_call(cuda_module().accumulate_rows, out.device, X, *X.shape, out, mode)
    else:
        _C.accumulate_rows(X.numpy(), out.numpy(), mode)


def _float32(x: torch.Tensor) -> torch.Tensor:
    """A float32 contiguous tensor (autocast makes float16 or bfloat16 activations)."""
    return x.to(torch.float32).contiguous()


def _linear_pass(model, layers, params, names, xb, yb, per_sample_loss, acc, mode) -> set[str]:
    """Accumulate the Linear layers from one batched backward; return the names done."""
    if not layers:
        return set()
    result = linear_backward(
        layers, lambda: per_sample_loss(model(xb), yb), xb.shape[0], params.values()
    )
    for module, (a, delta) in result.grads.items():
        w, b = layers[module]
        delta = _float32(delta)
        _accumulate_outer(delta, _float32(a), acc[names[id(w)]], mode)
        if b is not None:
            _accumulate_rows(delta, acc[names[id(b)]], mode)
    rest = {id(p) for p in result.rest}
    return {n for n, p in params.items() if id(p) not in rest}


def _generic_pass(model, params, names, xb, yb, per_sample_loss, acc, mode) -> None:
    """Accumulate per-sample gradients from torch.func (vmap of grad) for ``names``."""
    from torch.func import functional_call, grad, vmap

    theta = {n: params[n].detach() for n in names}
    rest = {n: p.detach() for n, p in model.named_parameters() if n not in theta}
    rest.update(model.named_buffers())

    def sample_loss(theta, x, y):
        out = functional_call(model, (theta, rest), (x.unsqueeze(0),))
        loss = per_sample_loss(out, None if y is None else y.unsqueeze(0))
        if not isinstance(loss, torch.Tensor) or loss.shape != (1,):
            raise ValueError(
                "the per-sample loss must return one loss per sample, shape (batch,); "
                "use reduction='none'"
            )
        return loss.sum()

    in_dims = (None, 0, None if yb is None else 0)
    grads = vmap(grad(sample_loss), in_dims=in_dims)(theta, xb, yb)
    for n, g in grads.items():
        _accumulate_rows(_float32(g.reshape(g.shape[0], -1)), acc[n].view(-1), mode)


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
    return _importance(model, X, per_sample_loss, y, power, batch_size, output="any")


def _probe(model: nn.Module, x: torch.Tensor, output: str) -> torch.Tensor:
    """The model's output on one sample, with a ValueError naming what does not fit:
    ``output`` is "logits" (shape (1, n_classes)), "batched" (shape (1, ...)) or "any"."""
    try:
        with torch.no_grad():
            out = model(x)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise ValueError(
            f"the model cannot run on X's samples of shape {tuple(x.shape[1:])}: {exc}"
        ) from exc
    if output == "any":
        return out
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model must return a tensor, got {type(out).__name__}")
    if output == "logits" and (out.dim() != 2 or out.shape[0] != 1):
        raise ValueError(
            "the model must return logits of shape (n_samples, n_classes); on one sample it "
            f"returned shape {tuple(out.shape)}"
        )
    if output == "batched" and (out.dim() < 2 or out.shape[0] != 1):
        raise ValueError(
            "the model must return outputs of shape (n_samples, ...) with at least 2 axes; on "
            f"one sample it returned shape {tuple(out.shape)}"
        )
    return out


def _importance(model, X, per_sample_loss, y, power, batch_size, output):
    """importance_diagonal, the model's output checked by :func:`_probe`; for "logits",
    y must index the model's outputs."""
    if power not in _MODES or count(batch_size, "batch_size") < 1:
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
        cuda_module()
    if isinstance(X, torch.Tensor):
        X = X.detach().to(device=device, dtype=torch.float32)
    else:
        X = torch.as_tensor(as_array(X, "X", np.ndim(X)), device=device)
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
    layers = linear_layers(model, params.values())
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        out = _probe(model, X[:1], output)
        if output == "logits":
            n_classes = out.shape[1]
            if y.min() < 0 or y.max() >= n_classes:
                raise ValueError(f"labels must lie in [0, {n_classes}), the model's outputs")
        for start in range(0, X.shape[0], batch_size):
            xb = X[start : start + batch_size]
            yb = None if y is None else y[start : start + batch_size]
            done = _linear_pass(model, layers, params, names, xb, yb, per_sample_loss, acc, mode)
            rest = [n for n in params if n not in done]
            if rest:
                _generic_pass(model, params, rest, xb, yb, per_sample_loss, acc, mode)
    finally:
        model.train(was_training)
    mark(device.type)
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
    return _importance(model, X, _log_likelihood_loss, y, 2, batch_size, output="logits")


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
    return _importance(model, X, _squared_output_norm, None, 1, batch_size, output="batched")
