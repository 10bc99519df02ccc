"""The one door to skcl's compiled code.

Every call into ``skcl._C`` (C++, OpenMP) or ``skcl._C_cuda`` (CUDA) goes
through this module: it checks dtypes, shapes, contiguity and devices, chooses
the backend from where the data lives, and says which backend ran
(:func:`backend_info` for what is built, :func:`last_backend` for the last
call). A missing compiled module is an installation error, never a silent slow
path: a CUDA tensor without ``skcl._C_cuda`` raises.

Inputs: numpy arrays (or array-likes) of real numbers are converted to
C-contiguous float32 and run on the CPU; torch tensors must be float32 and
contiguous (no hidden copies of large gradients) and run where they live,
``cpu`` or ``cuda``. Results come back in the kind of the input.

Examples
--------
>>> from skcl import kernels
>>> info = kernels.backend_info()
>>> info["cpu"]["compiled"]
True
"""

from __future__ import annotations

import importlib
import math
import numbers
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

try:
    from skcl import _C
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "skcl's compiled module skcl._C is missing: skcl was not built. Install it with "
        "`pip install .` (or `make install`) from a source tree with a C++17 compiler."
    ) from exc

__all__ = ["agem_project", "backend_info", "fisher_diagonal", "gem_project", "herding"]
__all__ += ["importance_diagonal", "last_backend", "mas_importance"]


def _load_cuda_module():
    try:
        return importlib.import_module("skcl._C_cuda")
    except ImportError:
        return None


_C_cuda = _load_cuda_module()
_last = threading.local()


def backend_info() -> dict[str, Any]:
    """Report what was compiled and which backends can run.

    Returns
    -------
    info : dict
        ``info["cpu"]``: the C++ build (``compiled``, ``compiler``, ``flags``,
        ``simd``, ``openmp``, ``openmp_version``, ``max_threads``).
        ``info["cuda"]``: ``compiled`` (whether ``skcl._C_cuda`` was built),
        ``available`` (whether a CUDA device can run it now) and, when
        compiled, the toolkit and runtime versions it was built with.

    Examples
    --------
    >>> from skcl.kernels import backend_info
    >>> sorted(backend_info())
    ['cpu', 'cuda']
    """
    cpu = {"compiled": True, **_C.build_info()}
    cuda: dict[str, Any] = {"compiled": _C_cuda is not None}
    if _C_cuda is not None:
        cuda.update(_C_cuda.build_info())
    cuda["available"] = bool(
        _C_cuda is not None and torch.cuda.is_available() and cuda.get("device_count", 0) > 0
    )
    return {"cpu": cpu, "cuda": cuda}


def last_backend() -> str | None:
    """Name the backend that ran this thread's most recent kernel call.

    Returns
    -------
    backend : {"cpu", "cuda"} or None
        ``None`` before the first call in this thread.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.kernels import herding, last_backend
    >>> _ = herding(np.eye(3), 1)
    >>> last_backend()
    'cpu'
    """
    return getattr(_last, "backend", None)


# --------------------------------------------------------------------------- checks


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)


def _nonneg_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _as_array(x: Any, name: str, ndim: int) -> np.ndarray:
    """A C-contiguous float32 copy or view of an array-like of real numbers."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are rejected
        return np.ascontiguousarray(arr, dtype=np.float32)


def _check_tensor(x: torch.Tensor, name: str, ndim: int) -> torch.Tensor:
    if x.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {x.dtype}; convert it with .float()")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous; call .contiguous() first")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on unsupported device {x.device}")
    return x.detach()


def _cuda_module():
    if _C_cuda is None:
        raise RuntimeError(
            "a CUDA tensor was passed but skcl._C_cuda was not built (no nvcc/CUDA toolkit at "
            "install time); reinstall skcl where nvcc is available, or move the data to the CPU"
        )
    return _C_cuda


def _cuda_call(launcher, device: torch.device, *args):
    """Call a skcl._C_cuda launcher: tensors go as device pointers, then the device
    index and the handle of torch's current stream on it, so work stays ordered."""
    ptrs = (a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args)
    return launcher(*ptrs, device.index, torch.cuda.current_stream(device).cuda_stream)


def _inputs(named: dict[str, tuple[Any, int]]) -> tuple[str, list]:
    """Check the inputs of one kernel call; return the input kind ("numpy", "torch"
    or "cuda") and the inputs as float32 numpy arrays (CPU) or tensors (CUDA)."""
    tensors = [isinstance(x, torch.Tensor) for x, _ in named.values()]
    if any(tensors) and not all(tensors):
        raise TypeError(f"{', '.join(named)} must all be numpy arrays or all torch tensors")
    if not tensors[0]:
        return "numpy", [_as_array(x, name, nd) for name, (x, nd) in named.items()]
    checked = [_check_tensor(x, name, nd) for name, (x, nd) in named.items()]
    if len({x.device for x in checked}) > 1:
        raise ValueError(f"{', '.join(named)} must be on the same device")
    if checked[0].device.type == "cuda":
        _cuda_module()
        return "cuda", checked
    return "torch", [x.numpy() for x in checked]


def _mark(backend: str) -> None:
    _last.backend = "cuda" if backend == "cuda" else "cpu"


def _output(kind: str, result: np.ndarray):
    """A CPU kernel's result in the kind of the input."""
    return torch.from_numpy(result) if kind == "torch" else result


# --------------------------------------------------------------------------- herding


def herding(features: np.ndarray | torch.Tensor, m: int) -> np.ndarray | torch.Tensor:
    r"""Pick ``m`` exemplars by herding (iCaRL, Rebuffi et al., CVPR 2017, Alg. 4).

    Pick :math:`k = 1, \dots, m` takes the row :math:`f_i` not picked yet that
    minimises :math:`\lVert \mu - (S + f_i) / k \rVert`, where :math:`\mu` is the
    mean of all rows and :math:`S` the sum of the rows already picked; ties go
    to the lowest index. Each pick costs one pass over the features (the
    products :math:`S \cdot f_i` are updated incrementally) and decisions are
    those of the rule evaluated in float64. On a CUDA device each pick is one
    kernel launch with no host round trip.

    Parameters
    ----------
    features : ndarray or Tensor of shape (n_samples, n_features)
        One feature vector per row (numpy: any real dtype, converted to
        float32; torch: float32, contiguous, on the CPU or a CUDA device).
    m : int
        Number of exemplars, ``0 <= m <= n_samples``.

    Returns
    -------
    indices : ndarray or Tensor of shape (m,), int64
        Distinct row indices in pick order, of the input's kind and device.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.kernels import herding
    >>> X = np.array([[0.0, 0.0], [1.0, 1.0], [4.0, 4.0], [3.0, 3.0]])
    >>> herding(X, 2)
    array([1, 3])
    """
    m = _count(m, "m")
    backend, (F,) = _inputs({"features": (features, 2)})
    n, d = F.shape
    if not 0 <= m <= n:
        raise ValueError(f"m must satisfy 0 <= m <= n_samples = {n}, got {m}")
    _mark(backend)
    if backend != "cuda":
        return _output(backend, _C.herding(F, m))
    out = torch.empty(m, dtype=torch.int64, device=F.device)
    if m == 0:
        return out
    ws = torch.empty(_C_cuda.herding_workspace_bytes(n, d), dtype=torch.uint8, device=F.device)
    if not _cuda_call(_C_cuda.herding, F.device, F, n, d, m, out, ws, ws.numel()):
        raise ValueError("features contain NaN or infinity")
    return out


# --------------------------------------------------------------------------- GEM / A-GEM


def _gram(backend: str, G, g) -> np.ndarray:
    """Gram matrix of the rows [G; g] in float64 on the host, checked finite."""
    if backend == "cuda":
        t, P = G.shape
        gram = torch.zeros((t + 1, t + 1), dtype=torch.float64, device=G.device)
        _cuda_call(_C_cuda.gem_gram, G.device, G, g, t, P, gram)
        gram = gram.cpu().numpy()
        gram = np.triu(gram) + np.triu(gram, 1).T
    else:
        gram = _C.gem_gram(G, g)
    if not np.isfinite(gram).all():
        raise ValueError("the gradients contain NaN or infinity (or their products overflow)")
    return gram


def _apply(backend: str, G, g, v: np.ndarray):
    """g + G^T v in the input's kind."""
    if backend != "cuda":
        return _output(backend, _C.gem_apply(G, g, v))
    out = torch.empty_like(g)
    v_dev = torch.from_numpy(np.ascontiguousarray(v)).to(g.device)
    _cuda_call(_C_cuda.gem_apply, g.device, G, g, v_dev, *G.shape, out)
    return out


def gem_project(
    G: np.ndarray | torch.Tensor,
    g: np.ndarray | torch.Tensor,
    margin: float = 0.5,
    eps: float = 1e-3,
    return_dual: bool = False,
) -> np.ndarray | torch.Tensor | tuple[np.ndarray | torch.Tensor, np.ndarray | None]:
    r"""Project a gradient as GEM does (Lopez-Paz & Ranzato, NeurIPS 2017, Sec. 3).

    GEM asks that the update not increase the loss of any previous task,
    :math:`\langle g', G_k \rangle \ge 0`. When :math:`G g \ge 0` already, ``g``
    is returned untouched (the same object). Otherwise it solves the dual QP

    .. math::  \min_v \tfrac12 v^\top (G G^\top + \epsilon I) v + (G g)^\top v
               \quad \text{s.t.} \quad v \ge \text{margin}

    and returns :math:`g' = G^\top v + g`. One pass over ``G`` computes
    :math:`G g` and the upper half of :math:`G G^\top`, the t x t QP is solved
    by an active-set method in float64 (on the host, also for CUDA tensors: one
    small copy each way), and one more pass forms ``g'``.

    ``margin`` is a lower bound on the dual variables, as in the paper's code
    (its ``quadprog`` call uses :math:`h = \text{margin}`). The paper biases the
    projection toward positive backward transfer by adding a small
    :math:`\gamma \ge 0` to the solution; bounding every :math:`v_k` from below
    by ``margin`` does it by giving each memory gradient at least that weight in
    :math:`g'`, which pushes :math:`g'` inside the cone rather than onto its
    boundary. ``margin = 0`` is the exact projection. ``eps`` regularises the
    Gram matrix; at the solution :math:`G g' = \lambda - \epsilon v` with
    multipliers :math:`\lambda \ge 0`, so the constraints hold up to
    :math:`\epsilon v_k` (exactly when ``eps = 0``).

    Parameters
    ----------
    G : ndarray or Tensor of shape (t, P)
        One flattened memory gradient per previous task.
    g : ndarray or Tensor of shape (P,)
        The current flattened gradient, same kind and device as ``G``.
    margin : float, default=0.5
        Lower bound on the dual variables.
    eps : float, default=1e-3
        Ridge added to :math:`G G^\top`.
    return_dual : bool, default=False
        Also return the dual solution ``v`` (float64 ndarray of shape (t,), or
        ``None`` when no constraint was violated and no QP was solved).

    Returns
    -------
    g_proj : ndarray or Tensor of shape (P,)
        The projected gradient, float32, of ``g``'s kind and device.
    v : ndarray or None
        Only with ``return_dual=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.kernels import gem_project
    >>> G = np.array([[1.0, 0.0]])
    >>> g = np.array([-1.0, 1.0])
    >>> g_proj, v = gem_project(G, g, margin=0.0, eps=0.0, return_dual=True)
    >>> g_proj, v
    (array([0., 1.], dtype=float32), array([1.]))
    """
    margin = _nonneg_float(margin, "margin")
    eps = _nonneg_float(eps, "eps")
    backend, (G_, g_) = _inputs({"G": (G, 2), "g": (g, 1)})
    t, P = G_.shape
    if g_.shape[0] != P:
        raise ValueError(f"g has {g_.shape[0]} entries but G has {P} columns")
    _mark(backend)
    gram = _gram(backend, G_, g_)
    if not (gram[:t, t] < 0).any():
        return (g, None) if return_dual else g
    try:
        v = _C.gem_solve_dual(gram, margin, eps)
    except ValueError as exc:
        raise ValueError(f"GEM's dual QP has no unique solution: {exc}") from None
    out = _apply(backend, G_, g_, v)
    return (out, v) if return_dual else out


def agem_project(
    g: np.ndarray | torch.Tensor, g_ref: np.ndarray | torch.Tensor
) -> np.ndarray | torch.Tensor:
    r"""Project a gradient as A-GEM does (Chaudhry et al., ICLR 2019, Eq. 11).

    With :math:`g_{ref}` the gradient on a batch drawn from the episodic memory,

    .. math:: g' = g - \frac{g^\top g_{ref}}{g_{ref}^\top g_{ref}} g_{ref}
              \quad \text{if } g^\top g_{ref} < 0, \qquad g' = g \text{ otherwise,}

    so :math:`\langle g', g_{ref} \rangle \ge 0`. One pass computes the three
    dot products in float64; a second forms ``g'`` only when needed.

    Parameters
    ----------
    g : ndarray or Tensor of shape (P,)
        The current flattened gradient.
    g_ref : ndarray or Tensor of shape (P,)
        The reference gradient, same kind and device as ``g``.

    Returns
    -------
    g_proj : ndarray or Tensor of shape (P,)
        ``g`` itself when no projection is needed, else a new float32 vector.

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.kernels import agem_project
    >>> agem_project(np.array([-1.0, 1.0]), np.array([1.0, 0.0]))
    array([0., 1.], dtype=float32)
    """
    backend, (g_, r_) = _inputs({"g": (g, 1), "g_ref": (g_ref, 1)})
    if g_.shape != r_.shape:
        raise ValueError(f"g and g_ref differ in length: {g_.shape[0]} vs {r_.shape[0]}")
    _mark(backend)
    gram = _gram(backend, r_.reshape(1, -1), g_)
    dot, ref2 = gram[0, 1], gram[0, 0]
    if not dot < 0:
        return g
    return _apply(backend, r_.reshape(1, -1), g_, np.array([-dot / ref2]))


# --------------------------------------------------------------------------- EWC / MAS


_MODES = {2: "square", 1: "abs"}


def _accumulate_outer(delta: torch.Tensor, a: torch.Tensor, out: torch.Tensor, mode: str):
    """out += op(delta)^T op(a) on the tensors' device."""
    if out.device.type == "cuda":
        _cuda_call(
            _C_cuda.accumulate_outer, out.device, delta, a, *delta.shape, a.shape[1], out, mode
        )
    else:
        _C.accumulate_outer(delta.numpy(), a.numpy(), out.numpy(), mode)


def _accumulate_rows(X: torch.Tensor, out: torch.Tensor, mode: str):
    """out += sum over rows of op(X) on the tensors' device."""
    if out.device.type == "cuda":
        _cuda_call(_C_cuda.accumulate_rows, out.device, X, *X.shape, out, mode)
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
