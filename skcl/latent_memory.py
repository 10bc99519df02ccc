r"""Latent memory: stored activations of an inner layer, replayed above it (latent replay).

Pellegrini et al., "Latent Replay for Real-Time Continual Learning" (IROS
2020). The trunk is cut into lower layers :math:`g` and upper layers
:math:`h` (:class:`~skcl.nn.LatentSplit`); the memory keeps latent
activations :math:`z = g(x)` instead of inputs, and a training step runs the
incoming batch's :math:`g(x)` joined by replayed :math:`z` through :math:`h`
only. Used by :class:`~skcl.LatentReplayClassifier` and by AR1*
(:class:`~skcl.AR1Classifier` with ``latent_replay=True``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from skcl.base import Batch
from skcl.memory import ReservoirBuffer, SampleStore, as_replay, concat_batches
from skcl.nn import LatentSplit

__all__ = ["LatentMemory"]


class LatentMemory(ReservoirBuffer):
    r"""A reservoir of latent activations, filled when a task ends.

    The open task's samples are kept (:meth:`observe`, once per distinct
    call) until :meth:`close_task`; then their latents :math:`g(x)`, computed
    with the split in eval mode and without gradients, are offered to the
    reservoir (:class:`~skcl.memory.ReservoirBuffer`, at most
    ``memory_size`` of them) with their labels and tasks. :meth:`join`
    turns a training batch into its latents joined by replayed ones.

    Parameters
    ----------
    memory_size : int
        The most latents kept.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcl.base import Batch
    >>> from skcl.latent_memory import LatentMemory
    >>> from skcl.nn import LatentSplit, make_mlp
    >>> split = LatentSplit(make_mlp(8, (16, 4)), replay_layer=2)
    >>> memory, rng = LatentMemory(memory_size=10), np.random.default_rng(0)
    >>> batch = Batch(torch.randn(6, 8), torch.zeros(6, dtype=torch.long), None,
    ...               torch.zeros(6, dtype=torch.long))
    >>> memory.observe(batch)
    >>> memory.close_task(split, rng)
    >>> len(memory), memory.items().X.shape
    (6, torch.Size([6, 16]))
    >>> memory.join(batch, split, n_replay=3, rng=rng, grad=False).X.shape
    torch.Size([9, 16])
    """

    def __init__(self, memory_size: int):
        super().__init__(memory_size)
        self.task_data = SampleStore()

    def observe(self, samples: Batch) -> None:
        """Keep the open task's samples (a repeated call is kept once) for :meth:`close_task`."""
        self.task_data.add(samples)

    def join(self, batch: Batch, split: LatentSplit, n_replay: int, rng: np.random.Generator,
             grad: bool, share: Callable[[Batch], Batch] = lambda replay: replay) -> Batch:
        """``batch`` with its inputs replaced by their latents (with an autograd graph through
        the lower layers if ``grad``), joined by ``n_replay`` latents drawn from the memory
        and marked replayed; ``share`` keeps a rank's rows of the draw (data-parallel)."""
        with torch.set_grad_enabled(grad):
            batch = batch._replace(X=split.lower(batch.X))
        if len(self) == 0:
            return batch
        return concat_batches(batch, as_replay(share(self.sample(n_replay, rng))))

    def close_task(self, split: LatentSplit, rng: np.random.Generator) -> None:
        """Offer the task's samples' latents at ``split``'s cut to the reservoir, and forget
        the samples."""
        if len(self.task_data):
            stored = self.task_data.tensors()
            split.eval()
            with torch.no_grad():
                latent = split.lower(stored.X)
            self.offer(stored._replace(X=latent), rng)
        self.task_data = SampleStore()
