"""The one door to skcl's compiled code.

Every call into ``skcl._C`` (C++, OpenMP) or ``skcl._C_cuda`` (CUDA) goes
through this module (the per-sample importances of EWC and MAS through
:mod:`skcl._fisher`, re-exported here; both share the checks of
:mod:`skcl._backend`): it checks dtypes, shapes, contiguity
and devices, chooses the backend from where the data lives, and says which
backend ran (:func:`backend_info` for what is built, :func:`last_backend` for
the last call). A missing compiled module is an installation error, never a silent slow
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

import math
from typing import Any

import numpy as np
import torch

from skcl import _backend
from skcl._backend import _C, count, inputs, mark, nonneg_float, output
from skcl._fisher import fisher_diagonal, importance_diagonal, mas_importance

__all__ = ["agem_project", "backend_info", "fisher_diagonal", "gem_project", "herding"]
__all__ += ["NonFiniteError", "importance_diagonal", "last_backend", "mas_importance"]


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
    cuda_mod = _backend._C_cuda
    cpu = {"compiled": True, **_C.build_info()}
    cuda: dict[str, Any] = {"compiled": cuda_mod is not None}
    if cuda_mod is not None:
        cuda.update(cuda_mod.build_info())
    cuda["available"] = bool(
        cuda_mod is not None and torch.cuda.is_available() and cuda.get("device_count", 0) > 0
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
    return _backend.last()


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
    m = count(m, "m")
    backend, (F,) = inputs({"features": (features, 2)})
    n, d = F.shape
    if not 0 <= m <= n:
        raise ValueError(f"m must satisfy 0 <= m <= n_samples = {n}, got {m}")
    mark(backend)
    if backend != "cuda":
        return output(backend, _C.herding(F, m))
    out = torch.empty(m, dtype=torch.int64, device=F.device)
    if m == 0:
        return out
    cuda = _backend.cuda_module()
    ws = torch.empty(cuda.herding_workspace_bytes(n, d), dtype=torch.uint8, device=F.device)
    if not _backend.cuda_call(cuda.herding, F.device, F, n, d, m, out, ws, ws.numel()):
        raise ValueError("features contain NaN or infinity")
    return out


# --------------------------------------------------------------------------- GEM / A-GEM


class NonFiniteError(ValueError, FloatingPointError):
    """A kernel's input holds NaN or infinity (or overflows): bad input, and, inside
    training, the sign of a diverging run."""


def _gram(backend: str, G, g) -> np.ndarray:
    """Gram matrix of the rows [G; g] in float64 on the host, checked finite."""
    if backend == "cuda":
        t, P = G.shape
        gram = torch.zeros((t + 1, t + 1), dtype=torch.float64, device=G.device)
        _backend.cuda_call(_backend.cuda_module().gem_gram, G.device, G, g, t, P, gram)
        gram = gram.cpu().numpy()
        gram = np.triu(gram) + np.triu(gram, 1).T
    else:
        gram = _C.gem_gram(G, g)
    if not np.isfinite(gram).all():
        raise NonFiniteError("the gradients contain NaN or infinity (or their products overflow)")
    return gram


def _copy(backend: str, x):
    """A new float32 copy of a checked input, in the input's kind."""
    return x.clone() if backend == "cuda" else output(backend, x.copy())


# Entries whose squares float32 holds with room to spare: |x| in [2^-40, 2^40].
_SAFE_EXPONENT = 40


def _unit_scale(backend: str, x):
    """``x`` itself, or ``x`` times a power of two (exact) when its largest entry is so
    small or so large that products of its entries would underflow or overflow."""
    peak = float(x.abs().max()) if backend == "cuda" else float(np.abs(x).max(initial=0.0))
    if peak == 0.0 or not math.isfinite(peak):
        return x
    exponent = math.frexp(peak)[1]
    if abs(exponent) <= _SAFE_EXPONENT:
        return x
    scale = 2.0**-exponent  # beyond float32's range for denormal x: scale in float64
    if backend == "cuda":
        return (x.double() * scale).float()
    return (x.astype(np.float64) * scale).astype(np.float32)


def _apply(backend: str, G, g, v: np.ndarray):
    """g + G^T v in the input's kind."""
    if backend != "cuda":
        return output(backend, _C.gem_apply(G, g, v))
    out = torch.empty_like(g)
    v_dev = torch.from_numpy(np.ascontiguousarray(v)).to(g.device)
    _backend.cuda_call(_backend.cuda_module().gem_apply, g.device, G, g, v_dev, *G.shape, out)
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
    :math:`\langle g', G_k \rangle \ge 0`. When :math:`G g \ge 0` already, a
    float32 copy of ``g`` is returned. Otherwise it solves the dual QP

    .. math::  \min_v \tfrac12 v^\top (G G^\top + \epsilon\,
               \mathrm{diag}(G G^\top)) v + (G g)^\top v
               \quad \text{s.t.} \quad v \ge \text{margin}

    and returns :math:`g' = G^\top v + g`. One pass over ``G`` computes
    :math:`G g` and the upper half of :math:`G G^\top`, the t x t QP is solved
    by an active-set method in float64 (on the host, also for CUDA tensors: one
    small copy each way) on the normalised rows :math:`G_k / \lVert G_k \rVert`,
    and one more pass forms ``g'``. The solve costs at most :math:`O(t^3)`;
    ``t`` is limited to ``skcl._C.gem_max_tasks`` (4096), the Gram matrix then
    taking 128 MiB and the per-thread partial sums at most
    ``skcl._C.gem_scratch_bytes`` (256 MiB) more.

    ``margin`` is a lower bound on the dual variables, as in the paper's code
    (its ``quadprog`` call uses :math:`h = \text{margin}`). The paper biases the
    projection toward positive backward transfer by adding a small
    :math:`\gamma \ge 0` to the solution; bounding every :math:`v_k` from below
    by ``margin`` does it by giving each memory gradient at least that weight in
    :math:`g'`, which pushes :math:`g'` inside the cone rather than onto its
    boundary. ``margin = 0`` is the exact projection. ``eps`` regularises the
    Gram matrix relative to each row (the paper's code adds :math:`\epsilon I`,
    which lets rows much smaller than :math:`\sqrt{\epsilon}` lose their
    constraint): at the solution :math:`G_k g' = \lambda_k - \epsilon \lVert G_k
    \rVert^2 v_k` with multipliers :math:`\lambda_k \ge 0`, so the cosine of
    :math:`g'` with every row is at least :math:`-\epsilon \lVert G_k \rVert v_k
    / \lVert g' \rVert` whatever the rows' scales (and the constraints hold
    exactly when ``eps = 0``). A zero row constrains nothing; its ``v_k`` is
    ``margin``.

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
        The projected gradient, a new float32 array or tensor of ``g``'s kind
        and device (never ``g`` itself).
    v : ndarray or None
        Only with ``return_dual=True``.

    Raises
    ------
    ValueError
        On NaN or infinite entries, mismatched shapes, or more than
        ``skcl._C.gem_max_tasks`` rows.

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
    margin = nonneg_float(margin, "margin")
    eps = nonneg_float(eps, "eps")
    backend, (G_, g_) = inputs({"G": (G, 2), "g": (g, 1)})
    t, P = G_.shape
    if g_.shape[0] != P:
        raise ValueError(f"g has {g_.shape[0]} entries but G has {P} columns")
    if t > _C.gem_max_tasks:
        raise ValueError(
            f"GEM supports at most {_C.gem_max_tasks} memory gradients (rows of G), got {t}: "
            "the Gram matrix and the dual solve grow as t^2 and t^3"
        )
    mark(backend)
    gram = _gram(backend, G_, g_)
    if not (gram[:t, t] < 0).any():
        return (_copy(backend, g_), None) if return_dual else _copy(backend, g_)
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
    dot products in float64; a second forms ``g'`` only when needed. A
    :math:`g_{ref}` whose squared entries would underflow (or overflow) float32
    is first scaled by a power of two, which leaves :math:`g'` unchanged.

    Parameters
    ----------
    g : ndarray or Tensor of shape (P,)
        The current flattened gradient.
    g_ref : ndarray or Tensor of shape (P,)
        The reference gradient, same kind and device as ``g``.

    Returns
    -------
    g_proj : ndarray or Tensor of shape (P,)
        A new float32 vector of ``g``'s kind and device (a copy of ``g`` when
        no projection is needed).

    Examples
    --------
    >>> import numpy as np
    >>> from skcl.kernels import agem_project
    >>> agem_project(np.array([-1.0, 1.0]), np.array([1.0, 0.0]))
    array([0., 1.], dtype=float32)
    """
    backend, (g_, r_) = inputs({"g": (g, 1), "g_ref": (g_ref, 1)})
    if g_.shape != r_.shape:
        raise ValueError(f"g and g_ref differ in length: {g_.shape[0]} vs {r_.shape[0]}")
    mark(backend)
    r_ = _unit_scale(backend, r_)
    gram = _gram(backend, r_.reshape(1, -1), g_)
    dot, ref2 = gram[0, 1], gram[0, 0]
    if not dot < 0:
        return _copy(backend, g_)
    return _apply(backend, r_.reshape(1, -1), g_, np.array([-dot / ref2]))
