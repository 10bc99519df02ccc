"""A trunk cut in two, for replaying activations of an inner layer (latent replay)."""

from __future__ import annotations

import torch
from torch import nn


class LatentSplit(nn.Module):
    """A trunk cut at ``replay_layer``: ``upper(lower(x))``, or ``upper(z)`` from latents.

    Parameters
    ----------
    trunk : torch.nn.Sequential
        The trunk to cut.
    replay_layer : int
        Number of the trunk's modules below the cut (0 replays the inputs).

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import make_mlp
    >>> from skcl.nn import LatentSplit
    >>> split = LatentSplit(make_mlp(8, (16, 4)), replay_layer=2)
    >>> split.lower(torch.zeros(3, 8)).shape
    torch.Size([3, 16])
    """

    def __init__(self, trunk: nn.Module, replay_layer: int):
        super().__init__()
        if not isinstance(trunk, nn.Sequential):
            raise TypeError(
                "latent replay cuts the trunk at replay_layer, so the backbone must return a "
                f"torch.nn.Sequential; got {type(trunk).__name__}"
            )
        if replay_layer > len(trunk):
            raise ValueError(
                f"replay_layer={replay_layer} exceeds the trunk's {len(trunk)} modules"
            )
        self.lower = trunk[:replay_layer]
        self.upper = trunk[replay_layer:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(x))
