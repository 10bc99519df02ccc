r"""Methods that gate or mask one network per task: HAT and CPG.

HAT (:class:`HATClassifier`) learns, per task, a near-binary gate on every
hidden unit and stops the gradient of the weights old tasks' gates use; CPG
(:class:`CPGClassifier`) prunes each task's weights, picks old weights with a
learned mask and widens the network when a task needs more room.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from skcl._call import SharedExcept
from skcl.base import Batch, ContinualClassifier, Step
from skcl.components import sum_terms
from skcl.memory import SampleStore
from skcl.nn import GateContext, GatedHeads, GatedLinear, make_trunk
from skcl.nn.picking import PickHeads, PickLinear
from skcl.strategies._inferring import InfersTasks


class HATClassifier(InfersTasks, ContinualClassifier):
    r"""Hard attention to the task (Serra et al., ICML 2018, "Overcoming catastrophic
    forgetting with hard attention to the task").

    Every hidden unit :math:`i` of layer :math:`l` is multiplied by a task gate
    :math:`a^{t}_{l,i} = \sigma(s\, e^{t}_{l,i})`, with :math:`e^t` a learned
    embedding of task :math:`t` (:class:`~skcl.nn.GatedLinear`). Within every
    epoch the slope grows from :math:`1/s_{max}` to :math:`s_{max}` over the
    :math:`B` mini-batches,

    .. math:: s = \frac{1}{s_{max}} + \left(s_{max} - \frac{1}{s_{max}}\right)
              \frac{b - 1}{B - 1},

    and predictions use :math:`s_{max}`, where the gates are binary in practice.
    When a task ends its gates :math:`a^t = \sigma(s_{max} e^t)` are stored; on
    a later task, with :math:`a^{<t}` the element-wise maximum of the other
    tasks' gates, the gradient of weight :math:`w_{l,ij}` (unit :math:`i` of
    layer :math:`l`, input :math:`j`) is multiplied by

    .. math:: 1 - \min\left(a^{<t}_{l,i},\ a^{<t}_{l-1,j}\right)

    (the input gate of the first layer is 1; a bias takes its unit's factor), so
    weights between units old tasks use do not move. The loss adds the
    attention-sparsity regulariser

    .. math:: c \, \frac{\sum_{l,i} a^t_{l,i} (1 - a^{<t}_{l,i})}{\sum_{l,i} (1 - a^{<t}_{l,i})},

    which makes the task take few units that old tasks do not use. The
    embeddings' gradient is compensated for the annealing, multiplied by
    :math:`\frac{s_{max}}{s} \frac{\cosh(\mathrm{clamp}(s e, \pm\theta_{cosh})) + 1}
    {\cosh(e) + 1}`, the gradient norm is clipped at ``clipgrad`` and the
    embeddings are clamped to :math:`\pm` ``thres_emb`` after each step, as in
    the reference code (github.com/joansj/hat). Each task has its own output
    head.

    Optimizers: the reference trains with plain SGD (lr 0.05) for up to 200
    epochs with a learning-rate schedule; skcl keeps the protocol's SGD with
    momentum 0.9 by default, because with 5 epochs per task plain SGD reaches
    only 0.65 task-incremental ACC on 3 tasks of permuted-digits against 0.94
    with momentum (protocol MLP, seed 0). Momentum does not break the masking:
    the optimizer is created afresh for every task and the masks are fixed
    within a task, so the momentum of a masked gradient is the masked momentum,
    and a weight whose gradient is masked to exactly 0 (every weight between
    units old tasks use: their gates are 1.0 in float32) never moves. Adam keeps
    the exact zeros too but not partial masks: it divides the step by the
    gradient's own magnitude, so a weight with a small nonzero factor
    :math:`1 - a` moves at full speed. No weight decay is applied.

    Class-incremental predictions (no ``task_id``): every task's gates and head
    answer, and each sample (or, with ``task_inference='batch'``, the whole
    call) takes the answer of the head whose softmax has the lowest entropy
    (:func:`~skcl.nn.min_entropy_heads`).

    Parameters
    ----------
    s_max : float, default=400.0
        :math:`s_{max}`, the largest slope (the paper's value).
    c : float, default=0.75
        Weight of the sparsity regulariser (the paper's value).
    thres_cosh : float, default=50.0
        :math:`\theta_{cosh}`, clamp of :math:`s e` in the compensation (the
        reference code's).
    thres_emb : float, default=6.0
        Clamp of the embeddings after each step (the reference code's).
    clipgrad : float, default=10000.0
        Largest gradient norm (the reference code's).
    task_inference : {'sample', 'batch'}, default='sample'
        Granularity of the min-entropy head without ``task_id``
        (:mod:`skcl.nn.inference`): ``'sample'`` picks a head per row;
        ``'batch'`` one head for all the rows of a predict call (its chunks of
        at most 8192 rows), that of the lowest entropy summed over the rows.
        ``'batch'`` assumes that the rows of one call are one task's (a test
        set scored task by task); on rows of mixed tasks every row gets the
        same head.
    hidden_layer_sizes, optimizer, learning_rate, batch_size, max_epochs, device, \
random_state, verbose
        As in :class:`~skcl.base.ContinualClassifier`; ``backbone`` is not
        supported (the trunk is built from gated layers).
    momentum : float, default=0.9
        Momentum of SGD (see above; the reference uses 0).
    backbone : None
        Must be ``None``.

    Attributes
    ----------
    task_gates_ : dict of int to list of Tensor
        Each ended task's gates :math:`\sigma(s_{max} e^t)`, one per gated layer.
    old_gates_ : list of Tensor or None
        :math:`a^{<t}` of the open task: the maximum of the other tasks' gates.

    Examples
    --------
    >>> from skcl import HATClassifier
    >>> from skcl.datasets import load_permuted_digits
    >>> stream = load_permuted_digits(n_experiences=3)
    >>> clf = HATClassifier(hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(3):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> clf.score(stream[0].X_test, stream[0].y_test, task_id=0) > 0.8
    True
    """

    _task_specific_units = True
    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        **InfersTasks._parameter_constraints,
        "s_max": [Interval(Real, 1, None, closed="left")],
        "c": [Interval(Real, 0, None, closed="left")],
        "thres_cosh": [Interval(Real, 0, None, closed="neither")],
        "thres_emb": [Interval(Real, 0, None, closed="neither")],
        "clipgrad": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        s_max: float = 400.0,
        c: float = 0.75,
        thres_cosh: float = 50.0,
        thres_emb: float = 6.0,
        clipgrad: float = 10000.0,
        task_inference: str = "sample",
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
            hidden_layer_sizes=hidden_layer_sizes, backbone=backbone, optimizer=optimizer,
            learning_rate=learning_rate, momentum=momentum, batch_size=batch_size,
            max_epochs=max_epochs, device=device, random_state=random_state, verbose=verbose,
            distributed=distributed,
        )
        self.task_inference = task_inference
        self.s_max = s_max
        self.c = c
        self.thres_cosh = thres_cosh
        self.thres_emb = thres_emb
        self.clipgrad = clipgrad

    def _make_network(self) -> nn.Module:
        trunk = partial(make_trunk, self.n_features_in_, self.hidden_layer_sizes, self.backbone,
                        GatedLinear, owner=type(self).__name__)
        return GatedHeads(trunk, self.n_features_in_, self.s_max)

    def _initialize(self) -> None:
        super()._initialize()
        self.task_gates_: dict[int, list[torch.Tensor]] = {}
        self.old_gates_: list[torch.Tensor] | None = None
        self._slope_ = float(self.s_max)

    def _slope(self, step: Step) -> float:
        return 1.0 / self.s_max + (self.s_max - 1.0 / self.s_max) * step.progress

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self.network_.own(task)
        others = [gates for t, gates in self.task_gates_.items() if t != task]
        self.old_gates_ = None if not others else [
            torch.stack(layer).amax(dim=0) for layer in zip(*others, strict=True)]

    def _trainable_parameters(self):
        # The trunk (embeddings included) and the open task's head: the other heads get no
        # gradient, and an optimizer holding them would make a checkpoint copy them all.
        network = self.network_
        yield from network.trunks["shared"].parameters()
        for part in network.task_parts(self.current_task_):
            yield from part.parameters()

    def _shared_with_checkpoint(self):
        # A call trains the trunk (embeddings included) and the open task's head: the
        # other tasks' heads stay as they are, and so do the tasks' stored gates (a task's
        # are replaced when it ends, never changed in place).
        network = getattr(self, "network_", None)
        if not isinstance(network, GatedHeads):
            return ()
        return [*network.parts_except(self.current_task_), SharedExcept(self.task_gates_, ())]

    def _forward(self, batch: Batch, step: Step) -> torch.Tensor:
        self._slope_ = self._slope(step)
        return self.network_(batch.X, GateContext(batch.task, self._slope_))

    def _penalty(self) -> torch.Tensor | None:
        gates = [layer.gate(self.current_task_, self._slope_)
                 for layer in self.network_.gated_layers]
        if not gates:
            return super()._penalty()
        free = ([torch.ones_like(g) for g in gates] if self.old_gates_ is None
                else [1 - old for old in self.old_gates_])
        used = sum((g * f).sum() for g, f in zip(gates, free, strict=True))
        count = sum(f.sum() for f in free)
        return sum_terms(super()._penalty(), self.c * used / count.clamp_min(1e-12))

    def _after_backward(self, batch: Batch, step: Step) -> None:
        super()._after_backward(batch, step)
        layers = self.network_.gated_layers
        with torch.no_grad():
            if self.old_gates_ is not None:
                below = None
                for layer, old in zip(layers, self.old_gates_, strict=True):
                    used = old.unsqueeze(1) if below is None else torch.minimum(
                        old.unsqueeze(1), below.unsqueeze(0))
                    _scale_grad(layer.weight, 1 - used)
                    _scale_grad(layer.bias, 1 - old)
                    below = old
            s = self._slope(step)
            for layer in layers:
                e = layer.embedding
                num = torch.cosh(torch.clamp(s * e, -self.thres_cosh, self.thres_cosh)) + 1
                _scale_grad(e, self.s_max / s * num / (torch.cosh(e) + 1))
        nn.utils.clip_grad_norm_(list(self._trainable_parameters()), self.clipgrad)

    def _after_step(self, batch: Batch, step: Step) -> None:
        super()._after_step(batch, step)
        with torch.no_grad():
            for layer in self.network_.gated_layers:
                layer.embedding.clamp_(-self.thres_emb, self.thres_emb)

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        with torch.no_grad():
            self.task_gates_[task] = [layer.gate(task, self.s_max).detach().clone()
                                      for layer in self.network_.gated_layers]


def _scale_grad(parameter: torch.Tensor, factor: torch.Tensor) -> None:
    if parameter.grad is not None:
        parameter.grad.mul_(factor)


class CPGClassifier(InfersTasks, ContinualClassifier):
    r"""Compacting, picking and growing (Hung et al., NeurIPS 2019, "Compacting, Picking and
    Growing for Unforgetting Continual Learning").

    One MLP whose weights each belong to the training episode that trained them
    (:class:`~skcl.nn.PickLinear`). Task :math:`k`:

    - **Train and pick.** It takes every free weight and trains them, its own
      bias per layer and its own head, together with real-valued scores
      :math:`s_k` over the weights of earlier tasks, which stay frozen:
      :math:`\mathrm{pick}_k = [s_k > \tau]` chooses which of them the task
      uses (straight-through gradient, Piggyback's :math:`\tau = 5 \cdot 10^{-3}`,
      scores starting at ``pick_init`` = :math:`10^{-2}`, every old weight
      picked).
    - **Grow.** When the task ends, if its accuracy on a validation split of its
      own training data is below ``accuracy_goal``, every hidden layer gets
      ``grow_units`` more units (owned by the task; the network's function is
      unchanged: the new units feed the next layer through zero weights), the
      task is retrained for ``max_epochs`` epochs (:meth:`_train_phase`), and
      this repeats at most ``max_grow`` times.
    - **Compact.** Gradual magnitude pruning (Zhu & Gupta, 2017) of the task's
      own weights in ``prune_steps`` steps towards ``prune_ratio`` of them, the
      :math:`j`-th step at :math:`r (1 - (1 - j/J)^3)`, each followed by
      ``retrain_epochs`` epochs of retraining; the most pruned network whose
      validation accuracy stays within ``compact_tolerance`` of the
      accuracy before pruning is kept. Pruned weights are zeroed and released
      for later tasks.
    - **Freeze.** The task's mask (its own weights and its picks), its bias
      and head are stored and never change again, and it keeps the layer
      widths it had: its predictions are bit-identical after every later task.

    The validation split: a sample is held out when a hash of its feature
    bytes (keyed by ``random_state``) falls in the lowest
    ``validation_fraction`` of the hash range, so the same sample lands on the
    same side in every ``partial_fit`` call and epoch, and duplicates stay
    together; held-out samples are never trained on. With the default 0.1 that
    is about 126 of split-digits' or permuted-digits' 1257 training samples per
    task. A task's distinct samples are kept until it ends (the retraining of
    growing and compacting needs them) and dropped then; a task with no
    held-out sample measures its goal on its training samples.

    The paper sets each task's goal from independently trained models; skcl
    takes an absolute validation accuracy, ``accuracy_goal``. Each hidden
    layer's biases are per task, as the paper's per-task batch-norm layers.

    Optimizers: SGD with or without momentum and Adam are all exact here. A
    frozen weight enters the network detached, so its gradient is exactly
    zero; the optimizer is created afresh for every task and every retraining
    phase, so it never holds momentum or moments of a frozen weight either.

    Class-incremental predictions (no ``task_id``): every task answers with its
    own masks, biases and head, and each sample (or, with
    ``task_inference='batch'``, the whole call) takes the answer of the head
    whose softmax has the lowest entropy (:func:`~skcl.nn.min_entropy_heads`).

    Parameters
    ----------
    accuracy_goal : float, default=0.9
        Validation accuracy below which the network grows (skcl's default).
    validation_fraction : float, default=0.1
        Fraction of a task's training samples held out to measure the goal.
    prune_ratio : float, default=0.5
        Fraction of a task's own weights the compaction aims to release.
    prune_steps : int, default=3
        Steps of the gradual pruning.
    retrain_epochs : int, default=1
        Retraining epochs after each pruning step.
    compact_tolerance : float, default=0.01
        Validation accuracy a pruning step may lose before it is undone.
    grow_units : int, default=32
        Units added to every hidden layer per growth step.
    max_grow : int, default=3
        Growth steps per task at most.
    pick_init : float, default=0.01
        Initial pick score (Piggyback's initial mask score).
    task_inference : {'sample', 'batch'}, default='sample'
        Granularity of the min-entropy head without ``task_id``
        (:mod:`skcl.nn.inference`): ``'sample'`` picks a head per row;
        ``'batch'`` one head for all the rows of a predict call (its chunks of
        at most 8192 rows), that of the lowest entropy summed over the rows.
        ``'batch'`` assumes that the rows of one call are one task's (a test
        set scored task by task); on rows of mixed tasks every row gets the
        same head.
    hidden_layer_sizes, optimizer, learning_rate, momentum, batch_size, max_epochs, \
device, random_state, verbose
        As in :class:`~skcl.base.ContinualClassifier`.
    backbone : None
        Must be ``None`` (the trunk is built from :class:`~skcl.nn.PickLinear`).

    Attributes
    ----------
    n_parameters_ : dict of int to int
        Parameters of the network (weights, biases, heads) when each task ended.
    growth_ : dict of int to int
        Growth steps each task took.
    validation_accuracy_ : dict of int to float
        Each task's validation accuracy when it was frozen.
    sparsity_ : dict of int to float
        Fraction of its own weights each task released by pruning.

    Examples
    --------
    >>> from skcl import CPGClassifier
    >>> from skcl.datasets import load_permuted_digits
    >>> stream = load_permuted_digits(n_experiences=3)
    >>> clf = CPGClassifier(hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(3):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> clf.score(stream[0].X_test, stream[0].y_test, task_id=0) > 0.8
    True
    >>> sorted(clf.n_parameters_) == [0, 1, 2]
    True
    """

    _task_specific_units = True
    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        **InfersTasks._parameter_constraints,
        "accuracy_goal": [Interval(Real, 0, 1, closed="both")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "prune_ratio": [Interval(Real, 0, 1, closed="left")],
        "prune_steps": [Interval(Integral, 1, None, closed="left")],
        "retrain_epochs": [Interval(Integral, 1, None, closed="left")],
        "compact_tolerance": [Interval(Real, 0, 1, closed="both")],
        "grow_units": [Interval(Integral, 1, None, closed="left")],
        "max_grow": [Interval(Integral, 0, None, closed="left")],
        "pick_init": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        accuracy_goal: float = 0.9,
        validation_fraction: float = 0.1,
        prune_ratio: float = 0.5,
        prune_steps: int = 3,
        retrain_epochs: int = 1,
        compact_tolerance: float = 0.01,
        grow_units: int = 32,
        max_grow: int = 3,
        pick_init: float = 0.01,
        task_inference: str = "sample",
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
            hidden_layer_sizes=hidden_layer_sizes, backbone=backbone, optimizer=optimizer,
            learning_rate=learning_rate, momentum=momentum, batch_size=batch_size,
            max_epochs=max_epochs, device=device, random_state=random_state, verbose=verbose,
            distributed=distributed,
        )
        self.task_inference = task_inference
        self.accuracy_goal = accuracy_goal
        self.validation_fraction = validation_fraction
        self.prune_ratio = prune_ratio
        self.prune_steps = prune_steps
        self.retrain_epochs = retrain_epochs
        self.compact_tolerance = compact_tolerance
        self.grow_units = grow_units
        self.max_grow = max_grow
        self.pick_init = pick_init

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "prune_steps": 2, "max_grow": 1,
                "grow_units": 8}

    def _make_network(self) -> nn.Module:
        trunk = partial(make_trunk, self.n_features_in_, self.hidden_layer_sizes, self.backbone,
                        PickLinear, owner=type(self).__name__)
        return PickHeads(trunk, self.n_features_in_)

    def _initialize(self) -> None:
        super()._initialize()
        self.n_parameters_: dict[int, int] = {}
        self.growth_: dict[int, int] = {}
        self.validation_accuracy_: dict[int, float] = {}
        self.sparsity_: dict[int, float] = {}
        self._episodes_ = 0
        self._hash_key_ = self._rng_.integers(1, 2**63, size=2, dtype=np.uint64) | np.uint64(1)
        self._train_store_ = SampleStore()
        self._validation_store_ = SampleStore()

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self.network_.open_task(task, self._episodes_, self.pick_init)
        self._episodes_ += 1
        self._train_store_, self._validation_store_ = SampleStore(), SampleStore()
        self._parameters_changed()

    def _observe(self, samples: Batch) -> None:
        held_out = torch.from_numpy(self._held_out(samples.X)).to(samples.X.device)
        train = samples.take(torch.nonzero(~held_out).flatten())
        if held_out.any():
            self._validation_store_.add(samples.take(torch.nonzero(held_out).flatten()))
        if train.n:
            self._train_store_.add(train)
            super()._observe(train)

    def _held_out(self, X: torch.Tensor) -> np.ndarray:
        """Which rows belong to the validation split (a keyed hash of their bytes)."""
        bits = np.ascontiguousarray(X.detach().cpu().numpy(), dtype=np.float32)
        words = bits.view(np.uint32).astype(np.uint64)
        a, b = self._hash_key_
        with np.errstate(over="ignore"):
            h = (words * a + b).sum(axis=1, dtype=np.uint64)
            h ^= h >> np.uint64(31)
            h *= np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(29)
        return (h >> np.uint64(11)).astype(np.float64) / 2.0**53 < self.validation_fraction

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        train = self._train_store_.tensors() if len(self._train_store_) else None
        if train is not None:
            check = (self._validation_store_.tensors() if len(self._validation_store_)
                     else train)
            accuracy = self._accuracy(task, check)
            grown = 0
            while accuracy < self.accuracy_goal and grown < self.max_grow:
                self.network_.grow(self.grow_units, self._next_seed(), task)
                self._parameters_changed()
                self._train_phase(train, self.max_epochs)
                accuracy = self._accuracy(task, check)
                grown += 1
            self.growth_[task] = self.growth_.get(task, 0) + grown
            accuracy = self._compact(task, train, check, accuracy)
            self.validation_accuracy_[task] = accuracy
        for layer in self.network_.pick_layers:
            layer.freeze(task)
        self._parameters_changed()
        self.n_parameters_[task] = sum(p.numel() for p in self.network_.parameters())
        self._train_store_, self._validation_store_ = SampleStore(), SampleStore()

    def _compact(self, task: int, train: Batch, check: Batch, accuracy: float) -> float:
        """Gradual magnitude pruning of the task's own weights with retraining; returns the
        validation accuracy of the network kept."""
        layers = self.network_.pick_layers
        owned = [int(layer.owned().sum()) for layer in layers]
        floor = accuracy - self.compact_tolerance
        kept, kept_sparsity = copy.deepcopy(self.network_), 0.0
        for j in range(1, self.prune_steps + 1):
            sparsity = self.prune_ratio * (1 - (1 - j / self.prune_steps) ** 3)
            for layer, n in zip(self.network_.pick_layers, owned, strict=True):
                released = n - int(layer.owned().sum())
                layer.prune(round(sparsity * n) - released)
            self._train_phase(train, self.retrain_epochs)
            pruned_accuracy = self._accuracy(task, check)
            if pruned_accuracy < floor:
                self._replace_network(kept)
                break
            kept, kept_sparsity, accuracy = (copy.deepcopy(self.network_), sparsity,
                                             pruned_accuracy)
        self.sparsity_[task] = kept_sparsity
        return accuracy

    def _accuracy(self, task: int, batch: Batch) -> float:
        """Accuracy of the network on encoded samples of ``task``."""
        self.network_.eval()
        with torch.no_grad():
            logits = self.network_(batch.X, task)
        return float((logits.argmax(dim=1) == batch.y).float().mean())
