r"""Consolidated heads: CWR* and AR1 / AR1*.

Both train on a :class:`~skcl.nn.consolidated.ConsolidatedNetwork`, whose
bias-free output layer keeps temporary weights (trained) and consolidated
weights (predicted with). AR1 is CWR* plus SI on the layers below the head
(:class:`~skcl.components.PathIntegral` and
:class:`~skcl.components.QuadraticPenalty` scoped to the trunk), and AR1*
adds latent replay (:class:`~skcl.nn.LatentSplit` and a
:class:`~skcl.latent_memory.LatentMemory` of latent activations).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from skcl.base import Batch, ContinualClassifier, Step
from skcl.components import PathIntegral, QuadraticPenalty, stiffness_limit, sum_terms
from skcl.latent_memory import LatentMemory
from skcl.memory import batch_digest
from skcl.nn import ConsolidatedNetwork, LatentSplit


class CWRStarClassifier(ContinualClassifier):
    r"""CWR* (Lomonaco & Maltoni, CoRL 2017; Maltoni & Lomonaco, Neural Networks 2019).

    "CORe50: a New Dataset and Benchmark for Continuous Object Recognition"
    (CWR) and "Continuous Learning in Single-Incremental-Task Scenarios"
    (CWR*, Algorithm 1 there). The output layer has no bias and two sets of
    weights (:class:`~skcl.nn.consolidated.ConsolidatedHead`): consolidated
    weights :math:`cw` (zero at first) and temporary weights :math:`tw`.
    When a task starts :math:`tw` is zeroed; the classes present in the task's
    data get their :math:`cw` loaded into :math:`tw`, and training runs on them
    only (the softmax covers the present classes). When the task ends, each
    present class :math:`j`, with :math:`cur_j` samples in the task,

    .. math:: cw_j \leftarrow \frac{cw_j \sqrt{past_j / cur_j} + (tw_j - \overline{tw})}
              {\sqrt{past_j / cur_j} + 1}, \qquad past_j \leftarrow past_j + cur_j ,

    :math:`\overline{tw}` the mean of the present classes' :math:`tw` (the
    mean shift): the consolidated weights of classes absent from a task never
    change. Predictions read :math:`cw`; while a task is open, the
    :math:`cw` its end would give (computed, not stored), so ending a task
    changes no prediction.

    The layers below the head learn on the first task; after it they are
    frozen (``lower_lr_factor=0``, the paper's CWR*) or learn
    ``lower_lr_factor`` times slower (their gradients scaled: under SGD a
    lower learning rate). Frozen layers keep what the first task taught, so
    on streams whose later tasks need other features (permuted inputs) CWR*
    learns little after it; the default slows them instead.

    Parameters
    ----------
    lower_lr_factor : float, default=0.1
        Learning-rate factor of the layers below the head after the first task
        (0: the paper's frozen layers). The default was chosen on validation
        data only: of 0, 0.03, 0.1, 0.3 and 1, the best mean validation ACC
        (0.383, against 0.267 for 0) over split-digits class-incremental and
        permuted-digits domain-incremental, seeds 0-1, PROTOCOL.md settings,
        :func:`skcl.model_selection.select_params` with ``protocol='validation'``
        (``benchmarks/results/family_columns/sweep_defaults.md``).
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    network_ : ConsolidatedNetwork
        Trunk and consolidated head: ``network_.head.cw`` is :math:`cw`,
        ``network_.head.past`` :math:`past`.

    Examples
    --------
    >>> from skcl import CWRStarClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = CWRStarClassifier(hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> n_samples = [float((stream[0].y_train == c).sum()) for c in (0, 1)]
    >>> clf.network_.head.past.tolist()[:2] == n_samples
    True
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "lower_lr_factor": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(self, lower_lr_factor: float = 0.1, hidden_layer_sizes=(256, 256),
                 backbone=None, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                 batch_size=32, max_epochs=5, device="auto", random_state=None, verbose=0,
                 distributed="auto"):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, backbone=backbone,
                         optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                         batch_size=batch_size, max_epochs=max_epochs, device=device,
                         random_state=random_state, verbose=verbose, distributed=distributed)
        self.lower_lr_factor = lower_lr_factor

    def _make_network(self) -> nn.Module:
        return ConsolidatedNetwork(self._make_trunk, self.n_features_in_)

    def _slowed(self) -> nn.Module:
        """The layers ``lower_lr_factor`` slows after the first task."""
        return self.network_.trunk

    def _lower_factor(self) -> float:
        """The learning-rate factor of the slowed layers after the first task."""
        return self.lower_lr_factor

    def _frozen(self) -> bool:
        return self._lower_frozen_ and self._lower_factor() == 0

    # ------------------------------------------------------------------ hooks

    def _initialize(self) -> None:
        super()._initialize()
        self._lower_frozen_ = False
        self._counts_ = torch.zeros(0, device=self.device_)
        self._digests_: set[str] = set()

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self._counts_ = torch.zeros(self.network_.n_units, device=self.device_)
        self._digests_ = set()
        self.network_.head.load(self._counts_.nonzero().flatten(), zero=True)  # tw <- 0

    def _observe(self, samples: Batch) -> None:
        digest = batch_digest(samples)
        if digest not in self._digests_:
            self._digests_.add(digest)
            self._count(samples.y)
        super()._observe(samples)

    def _count(self, units: torch.Tensor) -> None:
        """Add samples of ``units`` to the task's :math:`cur` (a sample of zero weight
        counts: its class is present); classes present for the first time in the task get
        their :math:`cw` loaded."""
        n = self.network_.n_units
        counts = torch.cat([self._counts_, self._counts_.new_zeros(n - self._counts_.numel())])
        new = torch.bincount(units, minlength=n).to(counts.dtype)
        self.network_.head.load(((counts == 0) & (new > 0)).nonzero().flatten())
        self._counts_ = counts + new

    def _present(self, n_units: int) -> torch.Tensor:
        present = self._counts_ > 0
        return torch.cat([present, present.new_zeros(n_units - present.numel())])

    def _forward(self, batch: Batch, step: Step) -> torch.Tensor:
        if not self._frozen():
            return super()._forward(batch, step)
        with torch.no_grad():
            features = self.network_.features(batch.X, batch.task)
        return self.network_.head(features)

    def _loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        # Training covers the classes present in the task only.
        absent = ~self._present(logits.shape[1])
        return super()._loss(logits.masked_fill(absent, float("-inf")), batch)

    def _trainable_parameters(self):
        if not self._frozen():
            return self.network_.parameters()
        slowed = {id(p) for p in self._slowed().parameters()}
        return [p for p in self.network_.parameters() if id(p) not in slowed]

    def _after_backward(self, batch: Batch, step: Step) -> None:
        super()._after_backward(batch, step)
        factor = self._lower_factor()
        if self._lower_frozen_ and 0 < factor < 1:
            for p in self._slowed().parameters():
                if p.grad is not None:
                    p.grad.mul_(factor)

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        head = self.network_.head
        cw, past = self._consolidated()
        with torch.no_grad():
            head.cw.copy_(cw)
            head.past.copy_(past)
        self._counts_ = torch.zeros_like(self._counts_)
        self._lower_frozen_ = True

    def _consolidated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`(cw, past)` with the open task's present classes folded in."""
        units = self._counts_.nonzero().flatten()
        return self.network_.head.consolidated(units, self._counts_[units],
                                               self._replaced(units))

    def _replaced(self, units: torch.Tensor) -> torch.Tensor | None:
        """Which of the present ``units`` take their trained weights as :math:`cw` instead
        of averaging them in (``None``: none; see :class:`AR1Classifier`)."""
        return None

    def _scoring_key(self) -> tuple:
        return (super()._scoring_key(), tuple(self._counts_.tolist()))

    def _scoring_network(self) -> nn.Module:
        network = super()._scoring_network()
        with torch.no_grad():
            network.head.weight.copy_(self._consolidated()[0])
        return network


class AR1Classifier(CWRStarClassifier):
    r"""AR1 (Maltoni & Lomonaco, Neural Networks 2019) and AR1* with latent replay
    (Pellegrini et al., IROS 2020).

    "Continuous Learning in Single-Incremental-Task Scenarios" and "Latent
    Replay for Real-Time Continual Learning". The output layer is CWR*'s
    (:class:`CWRStarClassifier`: consolidated weights, loaded and mean-shifted
    per task), and the layers below it keep learning on every task under
    synaptic intelligence (Zenke et al., 2017): their path integral
    :math:`\omega` (:class:`~skcl.components.PathIntegral`) gives, when a task
    ends, :math:`\Omega \mathrel{+}= \omega / (\Delta^2 + \xi)`, and later
    tasks add :math:`c \sum_i \Omega_i (\theta_i - \theta^*_i)^2` over those
    layers only (:class:`~skcl.components.QuadraticPenalty` scoped to the
    trunk, its curvature clipped under SGD as in
    :class:`~skcl.strategies.regularization.SIClassifier`).

    With ``latent_replay=True`` (AR1*), the trunk is cut at ``replay_layer``
    (:class:`~skcl.nn.LatentSplit`): when a task ends its
    samples' activations there are offered to a reservoir of
    ``memory_size`` latents, and each step joins the incoming batch's
    latents with ``replay_batch_size`` replayed ones, which run through the
    layers above the cut only. The layers below the cut learn
    ``lower_lr_factor`` times slower after the first task (0 freezes them and
    keeps the stored latents exact). The replayed classes count as present
    in the task for CWR*: their :math:`cw` are loaded, trained, and
    consolidated with their number of stored latents in :math:`cur_j`. A
    class trained on replayed latents alone (none of its samples in the task)
    takes its trained weights, mean-shifted, as :math:`cw_j \leftarrow tw_j -
    \overline{tw}` (:math:`w_j = 0` in CWR*'s rule) instead of averaging them
    with its old :math:`cw_j`: the latents stand for that class's past, and the
    layers above the cut moved during the task, so the old :math:`cw_j` no
    longer fits what they compute. Chosen on validation data only
    (``benchmarks/results/family_columns/ar1star_consolidation.md``,
    'validation' protocol, PROTOCOL.md settings): validation ACC on split-digits
    class-incremental 0.874 / 0.874 (seeds 0 / 1) against 0.839 / 0.815
    averaging with the stored counts and 0.859 / 0.854 counting the latents
    as the class's whole past (:math:`w_j = 1`); LatentReplay's 0.874 /
    0.878. On permuted-digits every class has samples of its own in every
    task, so the rule does not apply there.

    With ``si_c=0`` and no latent replay, AR1 trains exactly as CWR* with the
    same ``lower_lr_factor``.

    Parameters
    ----------
    si_c : float, default=1.0
        :math:`c`, SI's strength (PROTOCOL.md's SI setting).
    xi : float, default=0.1
        :math:`\xi`, damping of SI's denominator.
    latent_replay : bool, default=False
        AR1* (latent replay) instead of AR1.
    replay_layer : int, default=2
        Trunk modules below the latent layer (2: the first hidden layer's
        activations with the default MLP); used with ``latent_replay``.
    memory_size : int, default=200
        Latents kept (PROTOCOL.md's replay memory); used with ``latent_replay``.
    replay_batch_size : int, default=None
        Latents replayed per step; ``None`` uses ``batch_size``.
    lower_lr_factor : float or None, default=None
        Learning-rate factor after the first task of the layers below the head
        (AR1: they keep learning under SI) or, with ``latent_replay``, of the
        layers below the latent layer. ``None``: 0.3 for AR1 and 0 (frozen,
        the stored latents stay exact) for AR1*, each chosen on validation
        data only, as CWR*'s default: AR1 over a grid of
        ``lower_lr_factor`` 0.1 / 0.3 / 1 by ``si_c`` 0.1 / 1 / 10 (best mean
        validation ACC 0.477 at 0.3 and ``si_c=1``; 0.431 at the former
        default 1), AR1* over 0 / 0.1 by ``si_c`` 0.01 / 0.1 / 1 (0.82 at 0
        for every ``si_c``, at most 0.61 at 0.1).
    clip_stiffness : bool, default=True
        Clip each SI curvature :math:`2 c \Omega_i` to :math:`(1 + \mu) / \eta` under SGD.
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    penalty_ : QuadraticPenalty
        SI's penalty over the trunk.
    memory_ : LatentMemory
        Stored latents (AR1* only; :class:`~skcl.latent_memory.LatentMemory`).

    Examples
    --------
    >>> from skcl import AR1Classifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = AR1Classifier(latent_replay=True, hidden_layer_sizes=(64, 32), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> clf.memory_.items().X.shape
    torch.Size([200, 64])
    """

    _parameter_constraints: dict = {
        **CWRStarClassifier._parameter_constraints,
        "si_c": [Interval(Real, 0, None, closed="left")],
        "xi": [Interval(Real, 0, None, closed="neither")],
        "latent_replay": ["boolean"],
        "replay_layer": [Interval(Integral, 0, None, closed="left")],
        "memory_size": [Interval(Integral, 1, None, closed="left")],
        "replay_batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "clip_stiffness": ["boolean"],
        "lower_lr_factor": [Interval(Real, 0, 1, closed="both"), None],
    }

    def __init__(
        self,
        si_c: float = 1.0,
        xi: float = 0.1,
        latent_replay: bool = False,
        replay_layer: int = 2,
        memory_size: int = 200,
        replay_batch_size: int | None = None,
        lower_lr_factor: float | None = None,
        clip_stiffness: bool = True,
        hidden_layer_sizes: tuple[int, ...] = (256, 256),
        backbone: Callable[[int], nn.Module] | None = None,
        optimizer: str = "sgd",
        learning_rate: float = 0.05,
        momentum: float = 0.9,
        batch_size: int = 32,
        max_epochs: int = 5,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        distributed: str = "auto",
    ) -> None:
        super().__init__(
            lower_lr_factor=lower_lr_factor, hidden_layer_sizes=hidden_layer_sizes,
            backbone=backbone, optimizer=optimizer, learning_rate=learning_rate,
            momentum=momentum, batch_size=batch_size, max_epochs=max_epochs, device=device,
            random_state=random_state, verbose=verbose, distributed=distributed,
        )
        self.si_c = si_c
        self.xi = xi
        self.latent_replay = latent_replay
        self.replay_layer = replay_layer
        self.memory_size = memory_size
        self.replay_batch_size = replay_batch_size
        self.clip_stiffness = clip_stiffness

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "memory_size": 40}

    def _make_network(self) -> nn.Module:
        if not self.latent_replay:
            return super()._make_network()
        return ConsolidatedNetwork(lambda: LatentSplit(self._make_trunk(), self.replay_layer),
                                   self.n_features_in_)

    def _slowed(self) -> nn.Module:
        return self.network_.trunk.lower if self.latent_replay else super()._slowed()

    def _lower_factor(self) -> float:
        if self.lower_lr_factor is None:
            return 0.0 if self.latent_replay else 0.3
        return self.lower_lr_factor

    # ------------------------------------------------------------------ hooks

    def _initialize(self) -> None:
        super()._initialize()
        self.penalty_ = QuadraticPenalty(scope="trunk.")
        self._path_ = PathIntegral(scope="trunk.")
        self.memory_ = LatentMemory(self.memory_size) if self.latent_replay else None
        self._replayed_ = torch.zeros(0, device=self.device_)

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        limit = (stiffness_limit(self.optimizer, self.learning_rate, self.momentum)
                 if self.clip_stiffness else math.inf)
        self.penalty_.stiffen(2.0 * float(self.si_c), limit)
        if self.memory_ is not None and len(self.memory_):
            self._count(self.memory_.items().y)
        self._replayed_ = self._counts_.clone()  # the task's counts so far: replayed latents

    def _observe(self, samples: Batch) -> None:
        if self.memory_ is not None:
            self.memory_.observe(samples)
        super()._observe(samples)

    def _replaced(self, units: torch.Tensor) -> torch.Tensor | None:
        if self.memory_ is None:
            return None
        replayed = self._replayed_
        replayed = torch.cat([replayed, replayed.new_zeros(self._counts_.numel() - len(replayed))])
        return replayed[units] == self._counts_[units]  # no sample of their own in the task

    def _training_batch(self, batch: Batch, step: Step) -> Batch:
        batch = super()._training_batch(batch, step)
        if self.memory_ is None:
            return batch
        return self.memory_.join(batch, self.network_.trunk,
                                 self.replay_batch_size or self.batch_size, self._rng_,
                                 grad=not self._frozen(), share=self._share)

    def _forward(self, batch: Batch, step: Step) -> torch.Tensor:
        if self.memory_ is None:
            return super()._forward(batch, step)
        # The training batch holds latents (see _training_batch): only the upper part runs.
        return self.network_.head(self.network_.trunk.upper(batch.X))

    def _penalty(self) -> torch.Tensor | None:
        return sum_terms(super()._penalty(), self.penalty_.value(self.network_))

    def _after_backward(self, batch: Batch, step: Step) -> None:
        super()._after_backward(batch, step)
        self.penalty_.add_gradient(self.network_)
        self._path_.after_backward(self.network_)

    def _after_step(self, batch: Batch, step: Step) -> None:
        super()._after_step(batch, step)
        self._path_.after_step(self.penalty_)

    def _parameters_changed(self) -> None:
        self.penalty_.parameters_changed()
        self._path_.parameters_changed()
        super()._parameters_changed()

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        importance = self._path_.close(self.network_, self.xi)
        if importance:
            self.penalty_.consolidate(importance, dict(self.network_.named_parameters()))
        if self.memory_ is not None:
            self.memory_.close_task(self.network_.trunk, self._rng_)
