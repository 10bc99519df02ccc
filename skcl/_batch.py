"""What the training loop hands its hooks: a mini-batch and where the step stands."""

from __future__ import annotations

from typing import NamedTuple

import torch

#: Codes of ``Batch.origin``: where each sample of a mini-batch comes from.
STREAM, REPLAY, GENERATED = 0, 1, 2


class Batch(NamedTuple):
    """One mini-batch as the training loop sees it.

    ``y`` holds unit indices (output neurons), ``task`` one task id per sample,
    ``weight`` per-sample loss weights or ``None`` for unweighted samples, and
    ``origin`` one code per sample (:data:`STREAM`, :data:`REPLAY`,
    :data:`GENERATED`) or ``None`` when every sample comes from the stream.
    Helpers that join or slice batches go over its fields, so a field added
    here travels with them.

    Examples
    --------
    >>> import torch
    >>> from skcl.base import Batch
    >>> b = Batch(torch.zeros(2, 3), torch.tensor([0, 1]), None, torch.zeros(2, dtype=torch.long))
    >>> b.origin is None, len(b)
    (True, 5)
    """

    X: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor | None
    task: torch.Tensor
    origin: torch.Tensor | None = None

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.X.shape[0])

    def origins(self) -> torch.Tensor:
        """``origin`` as a tensor (stream codes where it is ``None``)."""
        if self.origin is not None:
            return self.origin
        return torch.full((self.n,), STREAM, dtype=torch.int8, device=self.X.device)

    def take(self, index: torch.Tensor) -> Batch:
        """The rows ``index`` of every field."""
        return Batch(*(None if f is None else f[index] for f in self))


class Step(NamedTuple):
    """Where a training step stands: the hooks that need it receive it.

    ``epoch`` counts the epochs this task trained before this one (a
    ``partial_fit`` call is one epoch), ``batch`` is the mini-batch's index
    within its epoch, ``n_batches`` the epoch's number of mini-batches and
    ``rows`` the mini-batch's number of stream rows over all ranks (in
    data-parallel training a rank holds a share of them; anything weighted by
    batch sizes must use this count, not its share's).

    Examples
    --------
    >>> from skcl.base import Step
    >>> Step(epoch=0, batch=3, n_batches=7).progress
    0.5
    """

    epoch: int
    batch: int
    n_batches: int
    rows: int | None = None

    @property
    def progress(self) -> float:
        """How far through the epoch this batch is, from 0 (first) to 1 (last)."""
        return self.batch / (self.n_batches - 1) if self.n_batches > 1 else 1.0
