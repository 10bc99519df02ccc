"""The compiled modules and the checks every kernel call shares.

Private groundwork of :mod:`skcl.kernels` (herding, GEM, A-GEM) and
:mod:`skcl._fisher` (EWC and MAS importances): both import from here and
neither imports the other, so the package has no import cycle. Users go
through :mod:`skcl.kernels`, the one public door to compiled code.
"""

from __future__ import annotations

import importlib
import math
import numbers
import threading
from typing import Any

import numpy as np
import torch

try:
    from skcl import _C  # noqa: F401 - imported from here by kernels and _fisher
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "skcl's compiled module skcl._C is missing: skcl was not built. Install it with "
        "`pip install .` (or `make install`) from a source tree with a C++17 compiler."
    ) from exc


def _load_cuda_module():
    try:
        return importlib.import_module("skcl._C_cuda")
    except ImportError:
        return None


_C_cuda = _load_cuda_module()
_last = threading.local()


def count(value: Any, name: str) -> int:
    """``value`` as an int; TypeError for anything but an integer (bools included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)


def nonneg_float(value: Any, name: str) -> float:
    """``value`` as a finite float >= 0, else TypeError or ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def as_array(x: Any, name: str, ndim: int) -> np.ndarray:
    """A C-contiguous float32 copy or view of an array-like of real numbers."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are rejected
        return np.ascontiguousarray(arr, dtype=np.float32)


def check_tensor(x: torch.Tensor, name: str, ndim: int) -> torch.Tensor:
    """``x`` detached, after checking it is a float32, contiguous, ``ndim``-D tensor on
    the CPU or a CUDA device (TypeError or ValueError naming ``name`` otherwise)."""
    if x.dtype != torch.float32:
        raise TypeError(f"{name} must be float32, got {x.dtype}; convert it with .float()")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous; call .contiguous() first")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} is on unsupported device {x.device}")
    return x.detach()


def cuda_module():
    """skcl._C_cuda, or a RuntimeError saying it was not built."""
    if _C_cuda is None:
        raise RuntimeError(
            "a CUDA tensor was passed but skcl._C_cuda was not built (no nvcc/CUDA toolkit at "
            "install time); reinstall skcl where nvcc is available, or move the data to the CPU"
        )
    return _C_cuda


def cuda_call(launcher, device: torch.device, *args):
    """Call a skcl._C_cuda launcher: tensors go as device pointers, then the device
    index and the handle of torch's current stream on it, so work stays ordered."""
    ptrs = (a.data_ptr() if isinstance(a, torch.Tensor) else a for a in args)
    return launcher(*ptrs, device.index, torch.cuda.current_stream(device).cuda_stream)


def inputs(named: dict[str, tuple[Any, int]]) -> tuple[str, list]:
    """Check the inputs of one kernel call; return the input kind ("numpy", "torch"
    or "cuda") and the inputs as float32 numpy arrays (CPU) or tensors (CUDA)."""
    tensors = [isinstance(x, torch.Tensor) for x, _ in named.values()]
    if any(tensors) and not all(tensors):
        raise TypeError(f"{', '.join(named)} must all be numpy arrays or all torch tensors")
    if not tensors[0]:
        return "numpy", [as_array(x, name, nd) for name, (x, nd) in named.items()]
    checked = [check_tensor(x, name, nd) for name, (x, nd) in named.items()]
    if len({x.device for x in checked}) > 1:
        raise ValueError(f"{', '.join(named)} must be on the same device")
    if checked[0].device.type == "cuda":
        cuda_module()
        return "cuda", checked
    return "torch", [x.numpy() for x in checked]


def mark(backend: str) -> None:
    """Record the backend of this thread's latest kernel call."""
    _last.backend = "cuda" if backend == "cuda" else "cpu"


def last() -> str | None:
    """The backend recorded by :func:`mark` in this thread, or None."""
    return getattr(_last, "backend", None)


def output(kind: str, result: np.ndarray):
    """A CPU kernel's result in the kind of the input."""
    return torch.from_numpy(result) if kind == "torch" else result
