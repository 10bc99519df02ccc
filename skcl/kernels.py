"""The one door to skcl's compiled code.

Every call into ``skcl._C`` (C++, OpenMP) or ``skcl._C_cuda`` (CUDA) goes
through this module: it checks dtypes, shapes, contiguity and devices, chooses
the backend from where the data lives, and says which backend ran
(:func:`backend_info`). A missing compiled module is an installation error,
never a silent slow path.

Examples
--------
>>> from skcl import kernels
>>> info = kernels.backend_info()
>>> info["cpu"]["compiled"]
True
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

try:
    from skcl import _C
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
