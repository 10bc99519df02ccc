"""One stream, many processes: the collective seam of data-parallel training.

Launch one process per device with ``torchrun``, initialise the default
process group (gloo on CPU, NCCL on GPUs), and let every rank call
``partial_fit`` with its shard of each call, in the same order. An estimator
whose ``distributed`` parameter is ``'auto'`` (the default) finds the group
and keeps every rank's state identical:

- the labels of a call are agreed before output units grow, and ranks that
  pass different task ids in the same call get a clear error;
- every step trains on the *global* mini-batch: all ranks draw the same
  permutation of the call's samples (generators seeded alike), each keeps the
  rows it holds, and the gradients are summed over ranks and divided by the
  global batch size between ``backward`` and ``_after_backward``; the result
  equals single-process training with the same global batch up to
  floating-point summation order;
- memories are replicated: each call's samples are gathered, in rank order,
  and offered to the memory with the same generator on every rank, so every
  rank makes the same admission decisions. Replicating costs memory on every
  rank, but it lets every rank draw replay batches locally, without a
  collective per step; a memory is small beside the stream. A replay batch is
  drawn alike on all ranks and split between them, so the ranks' draws
  differ and together are the single process's draw;
- importances (Fisher, MAS), GEM's per-task memory gradients and A-GEM's
  reference gradient are computed on each rank's share of the samples, as
  sums, and all-reduced with their counts;
- retraining on a memory (GDumb, Joint) runs data-parallel over the
  replicated samples.

The group is never stored: ``clone``, ``get_params`` and pickling keep working,
and a model trained on N ranks unpickles and predicts in one plain process.

Examples
--------
>>> from skcl.distributed import collective
>>> comm = collective("auto")      # no process group here: the local no-op
>>> comm.rank, comm.world_size
(0, 1)
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

__all__ = ["Collective", "Local", "TorchDistributed", "collective", "local_only", "share"]

_LOCAL_ONLY = contextvars.ContextVar("skcl_local_only", default=False)


class Collective(Protocol):
    """What an estimator asks of the processes it trains with."""

    rank: int
    world_size: int

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place; returns it."""

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's ``tensor`` (any number of rows), concatenated in rank order."""

    def all_gather_object(self, obj: Any) -> list:
        """Every rank's picklable ``obj``, in rank order."""


class Local:
    """One process: every collective is the identity."""

    rank = 0
    world_size = 1

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather_object(self, obj: Any) -> list:
        return [obj]


class TorchDistributed:
    """The default process group of ``torch.distributed`` (gloo, NCCL)."""

    def __init__(self):
        import torch.distributed as dist

        self._dist = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        self._dist.all_reduce(tensor)
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        sizes = [int(n) for n in self.all_gather_object(int(tensor.shape[0]))]
        width = max(sizes)
        padded = tensor.new_zeros((width, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        self._dist.all_gather(parts, padded.contiguous())
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    def all_gather_object(self, obj: Any) -> list:
        out: list = [None] * self.world_size
        self._dist.all_gather_object(out, obj)
        return out


def collective(mode: str = "auto") -> Collective:
    """The collective an estimator uses: ``'auto'`` takes the default process group when
    one is initialised (and has more than one rank), ``'off'`` never does; inside
    :func:`local_only`, neither does."""
    if mode == "off" or _LOCAL_ONLY.get():
        return Local()
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return TorchDistributed()
    return Local()


@contextmanager
def local_only() -> Iterator[None]:
    """Run the block without collectives: predictions are local, whatever ranks do.

    A prediction that trains (GDumb retraining lazily) then trains in this
    process alone, on the replicated memory, and every rank gets the same
    result without waiting for the others.
    """
    token = _LOCAL_ONLY.set(True)
    try:
        yield
    finally:
        _LOCAL_ONLY.reset(token)


def share(comm: Collective, n: int, device: torch.device | None = None) -> torch.Tensor:
    """The rows this rank takes of ``n`` rows that every rank holds alike: ``rank::world``.

    Together the ranks' shares are all ``n`` rows, each once.

    Examples
    --------
    >>> from skcl.distributed import Local, share
    >>> share(Local(), 3).tolist()
    [0, 1, 2]
    """
    return torch.arange(comm.rank, n, comm.world_size, device=device)
