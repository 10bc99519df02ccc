"""Scores computed in float64, so that a sample's scores do not depend on its batch.

A float32 matrix product takes different kernels (and summation orders) for
one row and for many, so a sample scored alone and within a batch can differ
in the last bits, more than scikit-learn's ``check_methods_subset_invariance``
allows. The memory family's estimators score through a float64 copy of the
network's parameters (training stays float32): the rounding of float64
products is far below float32 resolution, so the scores are the same either
way.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


def forward_float64(module: nn.Module, *inputs):
    """``module(*inputs)`` with its floating-point parameters, buffers and inputs in float64.

    Examples
    --------
    >>> import torch
    >>> from skcl.strategies._float64 import forward_float64
    >>> forward_float64(torch.nn.Linear(3, 2), torch.ones(1, 3)).dtype
    torch.float64
    """
    state = {name: t.double() if t.is_floating_point() else t
             for name, t in [*module.named_parameters(), *module.named_buffers()]}
    args = [x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
            for x in inputs]
    return functional_call(module, state, tuple(args))


class Float64Scores:
    """Mixin: ``_predict_scores`` through :func:`forward_float64`."""

    def _predict_scores(self, X: torch.Tensor, task: torch.Tensor | None) -> torch.Tensor:
        return self._class_scores(forward_float64(self.network_, X, task))
