"""Memories of past samples: what replay-style methods keep between tasks.

A memory stores samples already encoded for the training loop (float32
inputs or latent activations, unit indices, per-sample task ids, optional
weights) as tensors on the estimator's device, so they pickle with it.
"""

from __future__ import annotations

import hashlib

import torch


class SampleStore:
    """Keeps every sample it is given, once: the memory of cumulative and joint training.

    Streams feed the same arrays once per epoch; a call whose inputs, labels
    and tasks equal an earlier call's (same bytes) is stored only the first
    time, so five epochs of a task do not store it five times.

    Examples
    --------
    >>> import torch
    >>> from skcl.memory import SampleStore
    >>> store = SampleStore()
    >>> X, y, t = torch.ones(4, 2), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    >>> store.add(X, y, None, t)
    True
    >>> store.add(X, y, None, t)
    False
    >>> len(store)
    4
    """

    def __init__(self):
        self._parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        self._digests: set[str] = set()
        self._cache = None

    def __len__(self) -> int:
        return sum(part[0].shape[0] for part in self._parts)

    def add(self, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
            task: torch.Tensor) -> bool:
        """Store a call's samples unless the very same call was stored before.

        Returns
        -------
        stored : bool
        """
        digest = hashlib.blake2b(digest_size=16)
        for tensor in (X, y, task) if weight is None else (X, y, task, weight):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        key = digest.hexdigest()
        if key in self._digests:
            return False
        self._digests.add(key)
        self._parts.append((X, y, weight, task))
        self._cache = None
        return True

    def tensors(self):
        """``(X, y, weight, task)`` of every stored sample; ``weight`` is ``None`` if none had any."""
        if self._cache is None:
            X = torch.cat([p[0] for p in self._parts])
            y = torch.cat([p[1] for p in self._parts])
            task = torch.cat([p[3] for p in self._parts])
            weight = None
            if any(p[2] is not None for p in self._parts):
                weight = torch.cat([
                    torch.ones_like(p[1], dtype=X.dtype) if p[2] is None else p[2]
                    for p in self._parts
                ])
            self._cache = (X, y, weight, task)
        return self._cache
