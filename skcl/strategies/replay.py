"""Replay (rehearsal): a bounded memory of past samples trained on again.

Every method here keeps at most ``memory_size`` samples (inputs, or latent
activations for latent replay) in a buffer of :mod:`skcl.memory` and differs
only in what it trains on (the ``_training_batch`` hook) and how its buffer
is filled; GDumb trains on the buffer alone.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from skcl._guard import float64_copy
from skcl.base import Batch, ContinualClassifier, Step
from skcl.latent_memory import LatentMemory
from skcl.memory import (
    ClassBalancedBuffer,
    EpisodicMemory,
    ReservoirBuffer,
    as_replay,
    concat_batches,
    take,
)
from skcl.nn import LatentSplit, SharedHead


class _Rehearsal(ContinualClassifier):
    """Training on each incoming batch joined by a batch retrieved from a memory.

    Each ``partial_fit`` call runs one epoch in which every batch is joined by
    the samples the subclass's ``_replay(batch)`` retrieves; then the call is
    offered to the memory (once per distinct call).
    """

    def _make_memory(self):
        return ReservoirBuffer(self.memory_size)

    def _initialize(self) -> None:
        super()._initialize()
        self.memory_ = self._make_memory()

    def _observe(self, samples: Batch) -> None:
        self._run_epoch(samples)
        self.memory_.offer(samples, self._rng_)

    def _training_batch(self, batch: Batch, step: Step) -> Batch:
        batch = super()._training_batch(batch, step)
        if len(self.memory_) == 0:
            return batch
        return concat_batches(batch, as_replay(self._share(self._replay(batch))))


class ReplayClassifier(_Rehearsal):
    r"""Experience replay with a tiny episodic memory (Chaudhry et al., 2019).

    "On Tiny Episodic Memories in Continual Learning" (arXiv:1902.10486). A
    buffer :math:`\mathcal M` of at most ``memory_size`` samples is filled as
    data arrives; each SGD step trains on the incoming batch :math:`B` joined
    by a batch :math:`B_{\mathcal M}` drawn uniformly from the buffer:

    .. math:: \theta \leftarrow \theta - \eta \nabla_\theta \frac{1}{|B| + |B_{\mathcal M}|}
              \sum_{(x, y) \in B \cup B_{\mathcal M}} \ell(f_\theta(x), y)

    When the current task's samples enter the buffer is ``admission``. The
    paper's algorithm is online (each sample is seen once) and updates the
    memory after training on each batch (``admission='after_call'``: each
    ``partial_fit`` call is offered after its epoch, once). Under the
    multi-epoch protocol the same arrays come back every epoch, so from the
    second epoch on a growing share of every replay batch is the current
    task's own samples: 38 % of all replayed samples on 5-task split
    streams, 24 % on 10-task permuted ones, which the incoming batch already
    covers, while the old tasks get that much less rehearsal. With
    ``admission='task_end'`` (the default) the task's samples are kept in a
    reservoir of their own (at most ``memory_size``, so memory stays bounded)
    and enter the buffer when the task ends; replay batches hold only earlier
    tasks. The ablation behind both defaults (admission, balance,
    composition of the replay batch, on split-digits, permuted-digits and
    three held-out streams) is ``benchmarks/results/replay_ablation.md``:
    task-end admission was better on both class-incremental split streams
    for every buffer policy (by 0.008-0.052), and with class balancing had
    the best mean ACC over the five streams (0.674, against 0.654 for the
    paper's reservoir with after-call admission); replaying only old samples
    while still admitting after each call helped some buffers and not
    others, as the current task also takes the old tasks' slots. Use
    ``admission='after_call', policy='reservoir'`` for the paper's online ER.

    Parameters
    ----------
    memory_size : int, default=200
        The most samples kept, over all tasks.
    policy : {'class_balanced', 'reservoir', 'experience_balanced'}, default='class_balanced'
        How the buffer is filled: greedy class balancing over (task, label)
        classes (:class:`~skcl.memory.ClassBalancedBuffer`, every class seen
        keeps samples), reservoir sampling (the paper's: a uniform sample of
        what was admitted) or equal shares per task
        (:class:`~skcl.memory.EpisodicMemory`). With ``admission='task_end'``
        a task is admitted as its reservoir sample of at most ``memory_size``
        samples, so ``'reservoir'`` then weighs tasks by those samples rather
        than by their sizes.
    admission : {'task_end', 'after_call'}, default='task_end'
        When the current task's samples enter the buffer: when the task ends
        (:meth:`end_task`, or the first call of another task), or after each
        ``partial_fit`` call's epoch (the paper's online setting).
    replay_batch_size : int, default=None
        Size of :math:`B_{\mathcal M}`; ``None`` uses ``batch_size``.
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    memory_ : ReservoirBuffer or ClassBalancedBuffer
        The buffer, on the estimator's device.

    Examples
    --------
    >>> from skcl import ReplayClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = ReplayClassifier(memory_size=100, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    ...     clf = clf.end_task()
    >>> len(clf.memory_), sorted(set(clf.memory_.class_counts().values()))
    (100, [10])
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "memory_size": [Interval(Integral, 1, None, closed="left")],
        "policy": [StrOptions({"reservoir", "class_balanced", "experience_balanced"})],
        "admission": [StrOptions({"after_call", "task_end"})],
        "replay_batch_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, memory_size: int = 200, policy: str = "class_balanced",
                 admission: str = "task_end",
                 replay_batch_size: int | None = None, hidden_layer_sizes=(256, 256),
                 backbone=None, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                 batch_size=32, max_epochs=5, device="auto", random_state=None, verbose=0,
                 distributed="auto"):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, backbone=backbone,
                         optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                         batch_size=batch_size, max_epochs=max_epochs, device=device,
                         random_state=random_state, verbose=verbose, distributed=distributed)
        self.memory_size = memory_size
        self.policy = policy
        self.admission = admission
        self.replay_batch_size = replay_batch_size

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "memory_size": 40}

    def _make_memory(self):
        if self.policy == "class_balanced":
            return ClassBalancedBuffer(self.memory_size)
        if self.policy == "experience_balanced":
            return EpisodicMemory(self.memory_size)
        return ReservoirBuffer(self.memory_size)

    def _initialize(self) -> None:
        super()._initialize()
        self._pending_ = ReservoirBuffer(self.memory_size)

    def _observe(self, samples: Batch) -> None:
        if self.admission == "after_call":
            super()._observe(samples)
            return
        self._run_epoch(samples)
        self._pending_.offer(samples, self._rng_)

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        if len(self._pending_):
            self.memory_.offer(self._pending_.items(), self._rng_)
        self._pending_ = ReservoirBuffer(self.memory_size)

    def _replay(self, batch: Batch) -> Batch:
        """A uniform draw of ``replay_batch_size`` stored samples."""
        return self.memory_.sample(self.replay_batch_size or self.batch_size, self._rng_)


class MIRClassifier(_Rehearsal):
    r"""Maximally interfered retrieval (Aljundi et al., NeurIPS 2019).

    "Online Continual Learning with Maximally Interfered Retrieval". Like
    experience replay with a reservoir buffer, but the replayed samples are
    those the coming update would hurt most. For the incoming batch :math:`B`
    a virtual SGD step

    .. math:: \theta^v = \theta - \eta \nabla_\theta \mathcal L(f_\theta, B)

    is taken (plain SGD, learning rate :math:`\eta` = ``learning_rate``,
    without momentum), ``n_candidates`` samples are drawn from the buffer, and
    the ``k`` with the largest loss increase

    .. math:: s(x, y) = \ell(f_{\theta^v}(x), y) - \ell(f_\theta(x), y)

    join :math:`B` for the real step.

    Parameters
    ----------
    memory_size : int, default=200
        The most samples kept (reservoir sampling).
    n_candidates : int, default=100
        Samples drawn from the buffer and scored at each step.
    k : int, default=32
        Samples replayed at each step: the top-``k`` candidates by :math:`s`.
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    memory_ : ReservoirBuffer
        The buffer, on the estimator's device.

    Examples
    --------
    >>> from skcl import MIRClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = MIRClassifier(n_candidates=40, k=10, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> len(clf.memory_), clf.memory_.n_seen
    (200, 1257)
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "memory_size": [Interval(Integral, 1, None, closed="left")],
        "n_candidates": [Interval(Integral, 1, None, closed="left")],
        "k": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, memory_size: int = 200, n_candidates: int = 100, k: int = 32,
                 hidden_layer_sizes=(256, 256), backbone=None, optimizer="sgd",
                 learning_rate=0.05, momentum=0.9, batch_size=32, max_epochs=5, device="auto",
                 random_state=None, verbose=0, distributed="auto"):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, backbone=backbone,
                         optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                         batch_size=batch_size, max_epochs=max_epochs, device=device,
                         random_state=random_state, verbose=verbose, distributed=distributed)
        self.memory_size = memory_size
        self.n_candidates = n_candidates
        self.k = k

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "memory_size": 40, "n_candidates": 20, "k": 8}

    def _replay(self, batch: Batch) -> Batch:
        """The ``k`` of ``n_candidates`` drawn samples whose loss the virtual step raises most."""
        candidates = self.memory_.sample(self.n_candidates, self._rng_)
        if candidates.y.shape[0] <= self.k:
            return candidates
        increase = self._interference(batch, candidates)
        return take(candidates, torch.topk(increase, self.k).indices)

    def _interference(self, batch: Batch, candidates: Batch) -> torch.Tensor:
        """Loss increase :math:`s` of each candidate under the virtual step on ``batch``."""
        network = self.network_
        trainable = {id(p) for p in self._trainable_parameters() if p.requires_grad}
        names = [n for n, p in network.named_parameters() if id(p) in trainable]
        params = dict(network.named_parameters())
        grads = self._batch_gradient(batch, [params[n] for n in names])
        virtual = {n: params[n].detach() - self.learning_rate * g
                   for n, g in zip(names, grads, strict=True) if g is not None}
        with torch.no_grad():
            before = F.cross_entropy(network(candidates.X, candidates.task), candidates.y,
                                     reduction="none")
            logits = functional_call(network, virtual, (candidates.X, candidates.task),
                                     strict=False)
            after = F.cross_entropy(logits, candidates.y, reduction="none")
        return after - before

    def _batch_gradient(self, batch: Batch, params: list) -> list:
        """Gradient of the mean loss on the (global) incoming batch: in data-parallel
        training, the ranks' summed gradients over their rows, divided by the rows."""
        comm = self._collective()
        if comm.world_size == 1:
            loss = self._loss(self.network_(batch.X, batch.task), batch)
            return list(torch.autograd.grad(loss, params, allow_unused=True))
        grads = [torch.zeros_like(p) for p in params]
        if batch.n:
            loss = self._loss(self.network_(batch.X, batch.task), batch) * batch.n
            grads = torch.autograd.grad(loss, params, materialize_grads=True)
        flat = comm.all_reduce(torch.cat([g.reshape(-1) for g in grads]
                                         + [grads[0].new_tensor([float(batch.n)])]))
        out, start = [], 0
        for p in params:
            out.append((flat[start:start + p.numel()] / flat[-1].clamp(min=1)).view_as(p))
            start += p.numel()
        return out


class GDumbClassifier(ContinualClassifier):
    r"""GDumb: greedy sampler and dumb learner (Prabhu et al., ECCV 2020).

    "GDumb: A Simple Approach that Questions Our Progress in Continual
    Learning". ``partial_fit`` only stores: a greedy class-balanced sampler
    (:class:`~skcl.memory.ClassBalancedBuffer`) keeps at most ``memory_size``
    samples, and a class :math:`y` enters a full memory only while
    :math:`|M_y| < \max_c |M_c|`, evicting a random sample of a largest class.
    The network is never trained on the stream: before a prediction, if the
    memory changed, a freshly initialised network is trained from scratch on
    the memory alone,

    .. math:: \theta = \arg\min_\theta \frac{1}{|M|} \sum_{(x, y) \in M} \ell(f_\theta(x), y)

    by ``gdumb_epochs`` epochs of mini-batch SGD. The retraining draws its
    initialisation and shuffling from a seed fixed when the estimator is
    reset, and visits the memory in a canonical order, so predictions depend
    only on the memory's content (and the classes seen).

    Training is lazy: it runs only when the memory changed since the last
    one, at the first of the task's end (:meth:`end_task`, so timings of a
    stream count it as training) or a prediction (which then changes the
    fitted network: a prediction in the middle of a task trains).

    Parameters
    ----------
    memory_size : int, default=200
        The most samples kept.
    gdumb_epochs : int, default=30
        Epochs of each retraining on the memory (``max_epochs`` is unused).
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    memory_ : ClassBalancedBuffer
        The memory, on the estimator's device.

    Examples
    --------
    >>> from skcl import GDumbClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = GDumbClassifier(memory_size=100, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> sorted(set(clf.memory_.class_counts().values()))
    [10]
    >>> clf.score(stream[0].X_test, stream[0].y_test) > 0.8
    True
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "memory_size": [Interval(Integral, 1, None, closed="left")],
        "gdumb_epochs": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, memory_size: int = 200, gdumb_epochs: int = 30,
                 hidden_layer_sizes=(256, 256), backbone=None, optimizer="sgd",
                 learning_rate=0.05, momentum=0.9, batch_size=32, max_epochs=5, device="auto",
                 random_state=None, verbose=0, distributed="auto"):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, backbone=backbone,
                         optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                         batch_size=batch_size, max_epochs=max_epochs, device=device,
                         random_state=random_state, verbose=verbose, distributed=distributed)
        self.memory_size = memory_size
        self.gdumb_epochs = gdumb_epochs

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "memory_size": 100, "gdumb_epochs": 20}

    def _initialize(self) -> None:
        super()._initialize()
        self.memory_ = ClassBalancedBuffer(self.memory_size)
        self._trained_version_ = self.memory_.version
        self._retrain_seed_ = self._next_seed()

    def _observe(self, samples: Batch) -> None:
        self.memory_.offer(samples, self._rng_)

    def _scoring_key(self) -> tuple:
        return (super()._scoring_key(), id(self.memory_), self.memory_.version,
                self._trained_version_)

    def _scoring_network(self) -> nn.Module:
        if self._trained_version_ != self.memory_.version:
            return float64_copy(self._retrained())
        return super()._scoring_network()

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        if self._trained_version_ != self.memory_.version:
            self._replace_network(self._retrained())
            self._trained_version_ = self.memory_.version

    def _retrained(self) -> nn.Module:
        """A fresh network trained on the memory alone, from the fixed retraining seed.

        Changes nothing in the estimator: predictions with a task open score with it.
        """
        rng = np.random.default_rng(self._retrain_seed_)
        network = self._fresh_network(rng)
        items = self.memory_.items()
        items = take(items, _canonical_order(items))
        self._train_phase(items, self.gdumb_epochs, network=network, rng=rng)
        return network


def _canonical_order(batch: Batch) -> np.ndarray:
    """An order of the rows that depends only on their values (lexicographic)."""
    columns = [batch.X.reshape(batch.X.shape[0], -1), batch.y[:, None], batch.task[:, None]]
    if batch.weight is not None:
        columns.append(batch.weight[:, None])
    keys = torch.cat([c.double() for c in columns], dim=1).cpu().numpy()
    return np.lexsort(keys.T[::-1])


class LatentReplayClassifier(ContinualClassifier):
    r"""Latent replay (Pellegrini et al., IROS 2020).

    "Latent Replay for Real-Time Continual Learning". The trunk is cut at
    ``replay_layer`` into lower layers :math:`g` and upper layers :math:`h`
    (:class:`~skcl.nn.LatentSplit`). The memory stores latent activations
    :math:`z = g(x)`, not inputs, at most ``memory_size`` of them (reservoir
    sampling): at the end of each task its samples are offered as
    :math:`(g(x), y)`. A step trains :math:`h` and the head on the incoming
    batch's latents joined by replayed ones,

    .. math:: \frac{1}{|B| + |B_{\mathcal M}|} \Big( \sum_{(x, y) \in B}
              \ell(h(g(x)), y) + \sum_{(z, y) \in B_{\mathcal M}} \ell(h(z), y) \Big),

    and replayed latents never pass through :math:`g`. After the first task
    :math:`g` learns ``lower_lr_factor`` times slower: 0 (the default) freezes
    it, so stored latents stay exact and the incoming batch's :math:`g(x)` is
    computed without gradients. A factor in (0, 1] scales :math:`g`'s
    gradients, which under SGD is a learning rate ``lower_lr_factor *
    learning_rate`` (Adam normalises gradient scale away, so with Adam only 0
    changes anything); stored latents then drift from what :math:`g` now
    computes, the trade-off the paper accepts for a slowly learning :math:`g`.

    Parameters
    ----------
    memory_size : int, default=200
        The most latent activations kept.
    replay_layer : int, default=2
        Number of trunk modules below the latent layer; for the default MLP
        (``Linear, ReLU`` per hidden layer) 2 replays the first hidden layer's
        activations. The backbone must be a ``torch.nn.Sequential``.
    lower_lr_factor : float, default=0.0
        Learning-rate factor of the layers below ``replay_layer`` after the
        first task (0 freezes them).
    replay_batch_size : int, default=None
        Latents replayed per step; ``None`` uses ``batch_size``.
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    memory_ : LatentMemory
        Stored latent activations, on the estimator's device
        (:class:`~skcl.latent_memory.LatentMemory`, a reservoir).

    Examples
    --------
    >>> from skcl import LatentReplayClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = LatentReplayClassifier(hidden_layer_sizes=(64, 32), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> clf.memory_.items().X.shape
    torch.Size([200, 64])
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "memory_size": [Interval(Integral, 1, None, closed="left")],
        "replay_layer": [Interval(Integral, 0, None, closed="left")],
        "lower_lr_factor": [Interval(Real, 0, 1, closed="both")],
        "replay_batch_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, memory_size: int = 200, replay_layer: int = 2,
                 lower_lr_factor: float = 0.0, replay_batch_size: int | None = None,
                 hidden_layer_sizes=(256, 256), backbone=None, optimizer="sgd",
                 learning_rate=0.05, momentum=0.9, batch_size=32, max_epochs=5, device="auto",
                 random_state=None, verbose=0, distributed="auto"):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, backbone=backbone,
                         optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                         batch_size=batch_size, max_epochs=max_epochs, device=device,
                         random_state=random_state, verbose=verbose, distributed=distributed)
        self.memory_size = memory_size
        self.replay_layer = replay_layer
        self.lower_lr_factor = lower_lr_factor
        self.replay_batch_size = replay_batch_size

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "memory_size": 40}

    def _make_network(self) -> nn.Module:
        return SharedHead(lambda: LatentSplit(self._make_trunk(), self.replay_layer),
                          self.n_features_in_)

    def _initialize(self) -> None:
        super()._initialize()
        self.memory_ = LatentMemory(self.memory_size)
        self._lower_frozen_ = False

    @property
    def _split(self) -> LatentSplit:
        return self.network_.trunk

    def _frozen(self) -> bool:
        return self._lower_frozen_ and self.lower_lr_factor == 0

    def _trainable_parameters(self):
        if not self._frozen():
            return self.network_.parameters()
        lower = {id(p) for p in self._split.lower.parameters()}
        return [p for p in self.network_.parameters() if id(p) not in lower]

    def _observe(self, samples: Batch) -> None:
        self.memory_.observe(samples)
        super()._observe(samples)

    def _training_batch(self, batch: Batch, step: Step) -> Batch:
        return self.memory_.join(super()._training_batch(batch, step), self._split,
                                 self.replay_batch_size or self.batch_size, self._rng_,
                                 grad=not self._frozen(), share=self._share)

    def _forward(self, batch: Batch, step: Step) -> torch.Tensor:
        # The training batch holds latents (see _training_batch): only the upper part runs.
        return self.network_.head(self._split.upper(batch.X))

    def _after_backward(self, batch: Batch, step: Step) -> None:
        super()._after_backward(batch, step)
        if self._lower_frozen_ and 0 < self.lower_lr_factor < 1:
            for p in self._split.lower.parameters():
                if p.grad is not None:
                    p.grad.mul_(self.lower_lr_factor)

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        self.memory_.close_task(self._split, self._rng_)
        self._lower_frozen_ = True
