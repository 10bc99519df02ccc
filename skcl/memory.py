"""Memories of past samples: what replay-style methods keep between tasks.

A memory stores samples already encoded for the training loop (float32
inputs or latent activations, unit indices, per-sample task ids, optional
weights) as tensors on the estimator's device, so they pickle with it.

- :class:`SampleStore` keeps everything (joint and cumulative training).
- :class:`ReservoirBuffer`, :class:`ClassBalancedBuffer` and
  :class:`EpisodicMemory` are bounded: they never hold more than
  ``memory_size`` samples, chosen by reservoir sampling, greedy class
  balancing (GDumb) or per task (GEM, the most recent tasks when there are
  more tasks than ``memory_size``).
- :class:`skcl.exemplars.ExemplarSets` (its own module) holds iCaRL's
  herding-chosen exemplars, a fixed total shrinking per class.

Bounded memories are offered each call of ``partial_fit`` once: a call
repeating an earlier call of the same task byte for byte (another epoch) is
not offered again. Only the fingerprints of the current task's calls are kept
(:class:`SeenCalls`), so they do not grow with the length of the stream; a
task revisited after another one is offered anew.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from numbers import Integral

import numpy as np
import torch

from skcl._batch import REPLAY, Batch


class SeenCalls:
    """Fingerprints of the calls seen during the current task, to skip repeated epochs.

    :meth:`first_time` is true for a call unless an earlier call of the same
    task(s) had the same bytes. A call of other tasks forgets the fingerprints
    kept, so they never outnumber one task's distinct calls.

    Examples
    --------
    >>> import torch
    >>> from skcl.memory import SeenCalls
    >>> seen = SeenCalls()
    >>> X, y = torch.ones(2, 1), torch.zeros(2, dtype=torch.long)
    >>> a = Batch(X, y, None, torch.zeros(2, dtype=torch.long))
    >>> b = a._replace(task=torch.ones(2, dtype=torch.long))
    >>> seen.first_time(a), seen.first_time(a), seen.first_time(b), len(seen)
    (True, False, True, 1)
    """

    def __init__(self):
        self.tasks: tuple[int, ...] | None = None
        self.digests: set[str] = set()

    def __len__(self) -> int:
        return len(self.digests)

    def first_time(self, batch: Batch) -> bool:
        """Remember ``batch``; whether no call of its task(s) had its bytes before."""
        tasks = tuple(torch.unique(batch.task).tolist())
        if tasks != self.tasks:
            self.tasks, self.digests = tasks, set()
        key = batch_digest(batch)
        if key in self.digests:
            return False
        self.digests.add(key)
        return True


class SampleStore:
    """Keeps every sample it is given, once: the memory of cumulative and joint training.

    Streams feed the same arrays once per epoch; a call whose inputs, labels
    and tasks equal an earlier call's of the same task (same bytes) is stored
    only the first time, so five epochs of a task do not store it five times
    (:class:`SeenCalls`).

    Examples
    --------
    >>> import torch
    >>> from skcl.memory import SampleStore
    >>> store = SampleStore()
    >>> X, y = torch.ones(4, 2), torch.zeros(4, dtype=torch.long)
    >>> t = torch.zeros(4, dtype=torch.long)
    >>> store.add(Batch(X, y, None, t))
    True
    >>> store.add(Batch(X, y, None, t))
    False
    >>> len(store)
    4
    """

    def __init__(self):
        self._parts: list[Batch] = []
        self.seen = SeenCalls()
        self._cache = None

    def __len__(self) -> int:
        return sum(part[0].shape[0] for part in self._parts)

    def add(self, batch: Batch) -> bool:
        """Store a call's samples unless the very same call of its task was stored before.

        Returns
        -------
        stored : bool
        """
        if not self.seen.first_time(batch):
            return False
        self._parts.append(batch)
        self._cache = None
        return True

    def tensors(self) -> Batch:
        """Every stored sample as one batch (``weight`` ``None`` if none had any)."""
        if self._cache is None:
            self._cache = concat_batches(*self._parts)
        return self._cache


def batch_digest(batch: Batch) -> str:
    """A fingerprint of a batch's bytes: the same call repeated (another epoch) shares it."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in batch:
        if tensor is not None:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def concat_batches(*batches: Batch) -> Batch:
    """Join batches row-wise, field by field. ``weight`` is ``None`` unless a batch has
    weights (the others count 1), ``origin`` unless a batch has one (the others are stream)."""
    fills = {"weight": lambda b: torch.ones_like(b.y, dtype=b.X.dtype),
             "origin": lambda b: b.origins()}
    fields = []
    for name in Batch._fields:
        parts = [getattr(b, name) for b in batches]
        if all(p is None for p in parts):
            fields.append(None)
            continue
        fields.append(torch.cat([fills[name](b) if p is None else p
                                 for b, p in zip(batches, parts, strict=True)]))
    return Batch(*fields)


def take(batch: Batch, index: torch.Tensor | np.ndarray) -> Batch:
    """The rows ``index`` of a batch."""
    if isinstance(index, np.ndarray):
        index = torch.from_numpy(index).to(batch.X.device)
    return batch.take(index)


def as_replay(batch: Batch) -> Batch:
    """``batch`` with every sample marked as replayed (``origin`` = REPLAY)."""
    return batch._replace(origin=torch.full((batch.n,), REPLAY, dtype=torch.int8,
                                            device=batch.X.device))


def reservoir_slots(n: int, size: int, capacity: int, n_seen: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Reservoir sampling (Vitter 1985) of ``n`` new samples into ``capacity`` slots, of
    which ``size`` are filled, after ``n_seen`` samples were offered.

    The ``i``-th sample offered (1-based) takes a free slot while there is one,
    else a uniformly drawn slot with probability ``capacity / i``. Returns the
    slots written and the rows of the new samples written to them.
    """
    slots = np.full(n, -1, dtype=np.int64)
    free = min(capacity - size, n)
    slots[:free] = size + np.arange(free)
    if n > free and capacity > 0:
        position = n_seen + np.arange(free, n) + 1
        draw = rng.integers(0, position)
        slots[free:] = np.where(draw < capacity, draw, -1)
    rows = _last_wins(slots)
    return slots[rows], rows


def _last_wins(slots: np.ndarray) -> np.ndarray:
    """Rows that end up stored when rows are written in order into ``slots`` (-1 = dropped)."""
    rows = np.flatnonzero(slots >= 0)[::-1]
    _, first = np.unique(slots[rows], return_index=True)
    return np.sort(rows[first])


class _Rows:
    """At most ``capacity`` rows of ``(X, y, weight, task)`` tensors, allocated on first write.

    Rows ``[0, size)`` are filled. A write names its slots: an occupied slot is
    overwritten (an eviction), a slot at ``size`` or after appends.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 0
        self.weighted = False
        self.X: torch.Tensor | None = None
        self.y = self.weight = self.task = None

    def _allocate(self, like: torch.Tensor, capacity: int) -> None:
        self.X = like.new_empty((capacity, *like.shape[1:]))
        self.y = torch.empty(capacity, dtype=torch.long, device=like.device)
        self.task = torch.empty(capacity, dtype=torch.long, device=like.device)
        self.weight = torch.ones(capacity, dtype=like.dtype, device=like.device)

    def write(self, slots: np.ndarray, batch: Batch, rows: np.ndarray) -> None:
        """Store ``batch``'s rows ``rows`` in ``slots`` (distinct, below ``capacity``)."""
        if slots.size == 0:
            return
        if self.X is None:
            self._allocate(batch.X, self.capacity)
        elif self.X.shape[1:] != batch.X.shape[1:]:
            raise ValueError(
                f"stored items have shape {tuple(self.X.shape[1:])}, new ones "
                f"{tuple(batch.X.shape[1:])}"
            )
        dst = torch.from_numpy(slots).to(self.X.device)
        src = torch.from_numpy(rows).to(self.X.device)
        self.X[dst] = batch.X[src].detach()
        self.y[dst] = batch.y[src]
        self.task[dst] = batch.task[src]
        self.weight[dst] = 1.0 if batch.weight is None else batch.weight[src]
        self.weighted = self.weighted or batch.weight is not None
        self.size = max(self.size, int(slots.max()) + 1)

    def keep(self, rows: np.ndarray, capacity: int) -> None:
        """Keep rows ``rows`` (in that order) in storage of the new ``capacity``."""
        kept = None if self.X is None else take(self.batch(weighted=True), rows)
        self.capacity, self.size = capacity, 0
        if kept is not None:
            self._allocate(kept.X, capacity)
            self.write(np.arange(len(rows)), kept, np.arange(len(rows)))

    def move(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Keep rows ``src`` only, moved to slots ``dst`` of fresh storage."""
        if self.X is None:
            return
        old = (self.X, self.y, self.weight, self.task)
        self._allocate(self.X, self.capacity)
        src_t, dst_t = (torch.from_numpy(i).to(self.X.device) for i in (src, dst))
        for new, field in zip((self.X, self.y, self.weight, self.task), old, strict=True):
            new[dst_t] = field[src_t]

    def gather(self, index: np.ndarray, weighted: bool) -> Batch:
        """Rows ``index`` (copies); ``weight`` only if ``weighted``."""
        if self.X is None:
            raise ValueError("the memory is empty")
        idx = torch.from_numpy(index).to(self.X.device)
        return Batch(self.X[idx], self.y[idx], self.weight[idx] if weighted else None,
                     self.task[idx])

    def batch(self, weighted: bool | None = None) -> Batch:
        """The filled rows (views); ``weight`` is ``None`` unless a stored sample had one."""
        n = self.size
        if self.X is None:
            raise ValueError("the memory is empty")
        weighted = self.weighted if weighted is None else weighted
        return Batch(self.X[:n], self.y[:n], self.weight[:n] if weighted else None,
                     self.task[:n])


class _Buffer(ABC):
    """A memory bounded by ``memory_size`` that samples are offered to, each call once."""

    def __init__(self, memory_size: int):
        if isinstance(memory_size, bool) or not isinstance(memory_size, Integral) \
                or memory_size < 0:
            raise ValueError(f"memory_size must be a non-negative integer, got {memory_size!r}")
        self.memory_size = int(memory_size)
        self.version = 0
        self.seen = SeenCalls()

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples stored."""

    def offer(self, batch: Batch, rng: np.random.Generator) -> bool:
        """Offer a call's samples to the policy, unless the very same call of its task was
        offered before.

        Streams feed the same arrays once per epoch; counting them again would
        bias the sampling toward repeated data, so a call with the same bytes
        as an earlier call of the same task is ignored (:class:`SeenCalls`).

        Returns
        -------
        offered : bool
        """
        if not self.seen.first_time(batch):
            return False
        if batch.y.numel():
            self._insert(batch, rng)
            self.version += 1
        return True

    @abstractmethod
    def _insert(self, batch: Batch, rng: np.random.Generator) -> None:
        """Apply the sampling policy to a batch offered for the first time."""

    @abstractmethod
    def items(self) -> Batch:
        """Every stored sample as one batch."""

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        """``min(n, len(self))`` stored samples drawn uniformly without replacement."""
        items = self.items()
        index = rng.choice(items.y.shape[0], size=min(n, items.y.shape[0]), replace=False)
        return take(items, index)


class ReservoirBuffer(_Buffer):
    """Reservoir sampling (Vitter 1985): a uniform sample of everything offered so far.

    The ``i``-th sample offered (1-based) is appended while the buffer has
    room; afterwards it replaces a uniformly chosen slot with probability
    ``memory_size / i``. Every sample offered so far is stored with the same
    probability, whatever the task it came from.

    Parameters
    ----------
    memory_size : int
        The most samples kept.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcl.base import Batch
    >>> from skcl.memory import ReservoirBuffer
    >>> buffer = ReservoirBuffer(memory_size=10)
    >>> rng = np.random.default_rng(0)
    >>> for t in range(3):
    ...     batch = Batch(torch.randn(50, 4), torch.zeros(50, dtype=torch.long), None,
    ...                   torch.full((50,), t))
    ...     _ = buffer.offer(batch, rng)
    >>> len(buffer), buffer.n_seen
    (10, 150)
    """

    def __init__(self, memory_size: int):
        super().__init__(memory_size)
        self.n_seen = 0
        self._rows = _Rows(self.memory_size)

    def __len__(self) -> int:
        return self._rows.size

    def _insert(self, batch: Batch, rng: np.random.Generator) -> None:
        slots, rows = reservoir_slots(batch.n, self._rows.size, self.memory_size, self.n_seen,
                                      rng)
        self.n_seen += batch.n
        self._rows.write(slots, batch, rows)

    def resize(self, memory_size: int, rng: np.random.Generator) -> None:
        """Change the capacity; when shrinking, keep a uniform random subset of the samples."""
        size = self._rows.size
        rows = np.arange(size)
        if memory_size < size:
            rows = np.sort(rng.choice(size, size=memory_size, replace=False))
        self.memory_size = int(memory_size)
        self._rows.keep(rows, self.memory_size)
        self.version += 1

    def items(self) -> Batch:
        return self._rows.batch()


class ClassBalancedBuffer(_Buffer):
    r"""Greedy class-balanced sampling, GDumb's sampler (Prabhu et al., ECCV 2020, Sec. 3).

    A class is a (task, label) pair. A sample is stored while there is room;
    once the buffer is full, a sample of class :math:`y` is stored only if
    :math:`|M_y| < \max_c |M_c|`, evicting a random sample of a largest class
    (ties broken at random). Every class seen keeps samples as long as
    ``memory_size`` is at least the number of classes, and counts never differ
    by more than one once they are full. In domain-incremental streams, where
    every task brings the same labels, the (task, label) classes keep the
    tasks balanced too.

    Parameters
    ----------
    memory_size : int
        The most samples kept.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcl.base import Batch
    >>> from skcl.memory import ClassBalancedBuffer
    >>> buffer = ClassBalancedBuffer(memory_size=8)
    >>> rng = np.random.default_rng(0)
    >>> y = torch.tensor([0] * 20 + [1] * 20 + [2] * 2)
    >>> _ = buffer.offer(Batch(torch.randn(42, 4), y, None, torch.zeros(42, dtype=torch.long)), rng)
    >>> buffer.class_counts()
    {(0, 0): 3, (0, 1): 3, (0, 2): 2}
    """

    def __init__(self, memory_size: int):
        super().__init__(memory_size)
        self._rows = _Rows(self.memory_size)
        self._members: dict[tuple[int, int], list[int]] = {}

    def __len__(self) -> int:
        return self._rows.size

    def class_counts(self) -> dict[tuple[int, int], int]:
        """Number of stored samples of each (task, label unit) class."""
        return {key: len(slots) for key, slots in sorted(self._members.items()) if slots}

    def _insert(self, batch: Batch, rng: np.random.Generator) -> None:
        keys = list(zip(batch.task.tolist(), batch.y.tolist(), strict=True))
        slots = np.full(len(keys), -1, dtype=np.int64)
        used = self._rows.size
        for i, key in enumerate(keys):
            if used < self.memory_size:
                slot, used = used, used + 1
            else:
                counts = {k: len(v) for k, v in self._members.items()}
                largest = max(counts.values(), default=0)
                if counts.get(key, 0) >= largest:
                    continue
                victims = [k for k, c in counts.items() if c == largest]
                evicted = victims[rng.integers(len(victims))]
                victim = self._members[evicted]
                slot = victim.pop(int(rng.integers(len(victim))))
                if not victim:  # a class with no sample left is forgotten: the table
                    del self._members[evicted]  # stays within memory_size classes
            self._members.setdefault(key, []).append(slot)
            slots[i] = slot
        rows = _last_wins(slots)
        self._rows.write(slots[rows], batch, rows)

    def items(self) -> Batch:
        return self._rows.batch()


class EpisodicMemory(_Buffer):
    """Per-task episodic memory of GEM (Lopez-Paz & Ranzato, NeurIPS 2017).

    Each task has its own slots, filled by reservoir sampling over that task's
    samples. ``memory_size`` is the total: with :math:`T` tasks each keeps
    ``memory_size // T`` samples (the first ``memory_size % T`` tasks one
    more), so a new task shrinks the older ones, each to a uniform random
    subset of what it held. Once there are more tasks than ``memory_size``,
    each task keeps one sample and the oldest tasks (in order of arrival) are
    forgotten whole: the memory holds the ``memory_size`` most recent tasks,
    so a new task always has samples and GEM's constraints never outnumber
    ``memory_size``. The samples of all tasks live in one block of storage, task
    after task, so copying the memory (a call's checkpoint) copies a fixed
    number of tensors however many tasks it remembers.

    Parameters
    ----------
    memory_size : int
        The most samples kept over all tasks.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skcl.base import Batch
    >>> from skcl.memory import EpisodicMemory
    >>> memory = EpisodicMemory(memory_size=10)
    >>> rng = np.random.default_rng(0)
    >>> for t in range(3):
    ...     batch = Batch(torch.randn(20, 4), torch.zeros(20, dtype=torch.long), None,
    ...                   torch.full((20,), t))
    ...     _ = memory.offer(batch, rng)
    >>> memory.segments()
    [(0, 0, 4), (1, 4, 7), (2, 7, 10)]
    >>> for t in range(3, 12):
    ...     batch = Batch(torch.randn(20, 4), torch.zeros(20, dtype=torch.long), None,
    ...                   torch.full((20,), t))
    ...     _ = memory.offer(batch, rng)
    >>> memory.tasks, len(memory)
    ([2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 10)
    """

    # Columns of ``_slots``, one row per remembered task in order of arrival.
    _CAPACITY, _SIZE, _SEEN, _WEIGHTED = range(4)

    def __init__(self, memory_size: int):
        super().__init__(memory_size)
        self._rows = _Rows(self.memory_size)
        self._tasks: list[int] = []
        self._slots = np.zeros((0, 4), dtype=np.int64)
        self._cache: dict[tuple[int, ...], Batch] = {}

    def __len__(self) -> int:
        return int(self._slots[:, self._SIZE].sum())

    @property
    def tasks(self) -> list[int]:
        """Task ids with a memory, in order of arrival."""
        return list(self._tasks)

    def _starts(self) -> np.ndarray:
        capacity = self._slots[:, self._CAPACITY]
        return np.cumsum(capacity) - capacity

    def _insert(self, batch: Batch, rng: np.random.Generator) -> None:
        task_ids = batch.task.cpu().numpy()
        for task in dict.fromkeys(task_ids.tolist()):
            if task not in self._tasks:
                self._share(task, rng)
            if task in self._tasks:
                k = self._tasks.index(task)
                part = take(batch, np.flatnonzero(task_ids == task))
                capacity, size, seen, _ = self._slots[k].tolist()
                slots, rows = reservoir_slots(part.n, size, capacity, seen, rng)
                self._rows.write(self._starts()[k] + slots, part, rows)
                row = self._slots[k]
                row[self._SEEN] += part.n
                if rows.size:
                    row[self._SIZE] = max(size, int(slots.max()) + 1)
                    row[self._WEIGHTED] |= part.weight is not None
        self._cache.clear()

    def _share(self, task: int, rng: np.random.Generator) -> None:
        """Add ``task``, forget the oldest tasks beyond ``memory_size`` tasks, then share the
        slots: each task keeps a uniform random subset of its samples, task after task in
        one block of storage (so a copy of the memory copies four tensors)."""
        starts = np.append(self._starts(), 0)
        self._tasks.append(task)
        slots = np.vstack([self._slots, np.zeros((1, 4), dtype=np.int64)])
        drop = max(len(self._tasks) - self.memory_size, 0)
        self._tasks, self._slots, starts = self._tasks[drop:], slots[drop:], starts[drop:]
        if not self._tasks:
            return
        base, extra = divmod(self.memory_size, len(self._tasks))
        src, dst, start = [], [], 0
        for k, row in enumerate(self._slots):
            capacity, size = base + int(k < extra), int(row[self._SIZE])
            kept = np.arange(size)
            if capacity < size:
                kept = np.sort(rng.choice(size, size=capacity, replace=False))
            src.append(starts[k] + kept)
            dst.append(start + np.arange(kept.size))
            # Moved rows carry explicit weights of one, as each task's own buffer did.
            row[self._WEIGHTED] |= kept.size > 0
            row[self._CAPACITY], row[self._SIZE], start = capacity, kept.size, start + capacity
        self._rows.move(np.concatenate(src), np.concatenate(dst))

    def _chosen(self, tasks) -> list[int]:
        """Rows in ``_slots`` of ``tasks`` (default: all) that hold samples, in that order."""
        chosen = self._tasks if tasks is None else tasks
        where = {task: k for k, task in enumerate(self._tasks)}
        return [where[t] for t in chosen if t in where and self._slots[where[t], self._SIZE]]

    def segments(self, tasks=None) -> list[tuple[int, int, int]]:
        """``(task, start, stop)`` of each task's rows in :meth:`items` with the same ``tasks``."""
        out, start = [], 0
        for k in self._chosen(tasks):
            stop = start + int(self._slots[k, self._SIZE])
            out.append((self._tasks[k], start, stop))
            start = stop
        return out

    def items(self, tasks=None) -> Batch:
        """The samples of ``tasks`` (default: all), task after task."""
        chosen = self._chosen(tasks)
        key = tuple(self._tasks[k] for k in chosen)
        if key not in self._cache:
            starts = self._starts()
            index = np.concatenate([starts[k] + np.arange(self._slots[k, self._SIZE])
                                    for k in chosen] or [np.zeros(0, dtype=np.int64)])
            weighted = bool(self._slots[chosen, self._WEIGHTED].any())
            self._cache[key] = self._rows.gather(index, weighted)
        return self._cache[key]

    def sample(self, n: int, rng: np.random.Generator, tasks=None) -> Batch:
        """``min(n, size)`` samples of ``tasks`` drawn uniformly without replacement."""
        items = self.items(tasks)
        index = rng.choice(items.y.shape[0], size=min(n, items.y.shape[0]), replace=False)
        return take(items, index)
