"""The scikit-learn face of every skcl method and its one training loop.

:class:`ContinualClassifier` is an sklearn classifier whose ``partial_fit``
learns the next piece of a stream. A continual-learning method is a subclass
that overrides a few named hooks of the loop below and holds the components
it needs (:mod:`skcl.components`); it never copies the loop::

    partial_fit(X, y, task_id)
      check every input; checkpoint the state (a failing call restores it)
      new task id?  end_task() -> _after_task(old)
      register the task's classes (new output units -> _parameters_changed())
      new task id?  _before_task(new); a fresh optimizer
      _observe(samples)                   one epoch of:
        for each mini-batch (step = Step(epoch, batch, n_batches)):
          batch  = _training_batch(batch, step)   replay mixes in here
          logits = _forward(batch, step)          the network call
          loss   = _loss(logits, batch) + _penalty()
          loss.backward()
          _after_backward(batch, step)            gradient projection, masking
          optimizer.step()
          _after_step(batch, step)                path integrals, re-masking
      a non-finite loss anywhere: restore the checkpoint and raise
    _train_phase(samples, epochs, ...)    a side run with its own optimizer
    predict(X, task_id)  ->  a frozen float64 view from _scoring_network()

Notification hooks (``_initialize``, ``_before_task``, ``_after_backward``,
``_after_step``, ``_after_task``, ``_parameters_changed``) cooperate: an
override calls ``super()``. Value hooks (``_training_batch``, ``_forward``,
``_loss``, ``_penalty``, ``_observe``, ``_scoring_network``) return what the
loop uses; an override may extend ``super()``'s value or replace it.

The output layer grows when an unseen class arrives (class-incremental)
unless ``classes`` fixed the class set on the first call. This departs from
``SGDClassifier.partial_fit``, which needs ``classes`` on the first call.
Predictions are read-only and thread-safe (:mod:`skcl._guard`).
"""

from __future__ import annotations

import copy
import itertools
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.metrics import accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.nn import functional as F

from skcl._batch import Batch, Step
from skcl._call import (
    Checkpoint,
    Group,
    View,
    carry_state,
    check_call,
    class_scores,
    log_softmax,
    new_optimizer,
    parameter_names,
    softmax,
)
from skcl._guard import float64_copy, scoring_view, tensor_versions, training
from skcl._loop import run_epoch
from skcl._units import OutputUnits
from skcl._validation import check_task_ids, resolve_device
from skcl.distributed import Collective, collective, local_only, share
from skcl.nn import SharedHead, make_trunk, seeded

__all__ = ["Batch", "ContinualClassifier", "Step"]


class ContinualClassifier(ClassifierMixin, BaseEstimator):
    """Neural classifier trained on a stream of tasks by mini-batch SGD.

    On its own it is plain fine-tuning; every continual-learning method of
    skcl subclasses it and overrides hooks of its training loop.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(256, 256)
        Widths of the default MLP trunk (``Linear -> ReLU`` per layer).
    backbone : callable, default=None
        ``backbone(n_features_in) -> torch.nn.Module`` mapping inputs to
        features, used instead of the MLP trunk; skcl puts its growing output
        layer on top.
    optimizer : {'sgd', 'adam'}, default='sgd'
        Optimizer, created anew at the start of every task.
    learning_rate : float, default=0.05
        Step size.
    momentum : float, default=0.9
        Momentum of SGD (ignored by Adam).
    batch_size : int, default=32
        Mini-batch size.
    max_epochs : int, default=5
        Epochs per task in :meth:`fit` (``partial_fit`` is always one epoch).
    device : {'auto', 'cpu', 'cuda'} or 'cuda:N', default='auto'
        Where the network lives; 'auto' takes a CUDA device when one exists.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation and shuffling. Same seed, same predictions (on CPU).
    verbose : int, default=0
        Show tqdm progress bars when > 0.
    distributed : {'auto', 'off'}, default='auto'
        'auto': when a ``torch.distributed`` process group is initialised, train
        data-parallel with the other ranks (:mod:`skcl.distributed`); 'off':
        always train alone.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Every class seen so far, sorted.
    n_features_in_ : int
        Number of input features.
    tasks_seen_ : list of int
        Task ids in order of first appearance.
    task_classes_ : dict of int to ndarray
        The classes each task has shown.
    current_task_ : int or None
        The open task, or ``None`` after :meth:`end_task`.
    network_ : torch.nn.Module
        The trained network.
    output_units_ : OutputUnits
        Which output unit each (task, class) is.

    Notes
    -----
    A call that fails, in its input checks or during training (a diverging
    loss included), leaves the estimator as it was before the call.
    Predictions never change the estimator and may run from several threads
    at once; see :mod:`skcl._guard` for the contract with training.

    Examples
    --------
    >>> from skcl import NaiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = NaiveClassifier(hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.predict(stream[0].X_test[:3], task_id=0).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like"],
        "backbone": [callable, None],
        "optimizer": [StrOptions({"sgd", "adam"})],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "distributed": [StrOptions({"auto", "off"})],
    }
    # Per-task output units (multi-head, ensembles) instead of one shared head.
    _task_specific_units = False

    # task_id is requested wherever it is accepted, so Pipeline and GridSearchCV route it
    # under sklearn's metadata routing. In a grid search that makes scoring
    # task-incremental; set_score_request(task_id=False) scores class-incrementally.
    __metadata_request__fit = {"task_id": True}
    __metadata_request__partial_fit = {"task_id": True}
    __metadata_request__predict = {"task_id": True}
    __metadata_request__predict_proba = {"task_id": True}
    __metadata_request__predict_log_proba = {"task_id": True}
    __metadata_request__decision_function = {"task_id": True}
    __metadata_request__score = {"task_id": True}

    def __init__(
        self,
        hidden_layer_sizes=(256, 256),
        backbone=None,
        optimizer="sgd",
        learning_rate=0.05,
        momentum=0.9,
        batch_size=32,
        max_epochs=5,
        device="auto",
        random_state=None,
        verbose=0,
        distributed="auto",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.backbone = backbone
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.distributed = distributed

    # ------------------------------------------------------------------ public API

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, task_id=0, classes=None, sample_weight=None):
        """Learn one epoch of mini-batch SGD over ``X, y`` as part of task ``task_id``.

        A task id other than the open task's first closes that task (its
        end-of-task work runs on the network as that task left it), then the new
        task's classes are added and the task opens. A call that fails, in its
        input checks or during training, raises and changes nothing.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels (ints, strings, ...). Unseen labels grow the output layer
            unless ``classes`` fixed the class set.
        task_id : int or array-like of shape (n_samples,), default=0
            The task these samples belong to, or one id per sample (then the
            samples are learned task by task, in order of first appearance).
        classes : array-like, default=None
            The full class set; given once, it is fixed and labels outside it
            raise ``ValueError``.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-sample weights multiplying the per-sample loss.

        Returns
        -------
        self
        """
        with training(self), self._all_or_nothing():
            call = check_call(self, X, y, task_id, classes, sample_weight,
                                    reset=not self.__sklearn_is_fitted__())
            for i, group in enumerate(call.groups):
                units = self._enter(group, call.classes if i == 0 else None)
                self._observe(call.data.select(group.rows, units))
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, task_id=None, sample_weight=None):
        """Reset, then learn the tasks in order of first appearance, ``max_epochs`` each.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        task_id : int or array-like of shape (n_samples,), default=None
            Task of every sample; ``None`` is a single task 0.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        if task_id is None:
            task_id = 0
        with training(self), self._all_or_nothing():
            call = check_call(self, X, y, task_id, None, sample_weight, reset=True)
            for group in call.groups:
                samples = call.data.select(group.rows, self._enter(group, None))
                for _ in range(self.max_epochs):
                    self._observe(samples)
                self.end_task()
        return self

    def end_task(self):
        """Close the open task: run the method's end-of-task work now.

        Happens by itself when ``partial_fit`` meets a new task id; call it
        after the last task of a stream, or before evaluating. Closing when no
        task is open does nothing.

        Returns
        -------
        self
        """
        check_is_fitted(self)
        with training(self), self._all_or_nothing():
            if self.current_task_ is not None:
                task, self.current_task_ = self.current_task_, None
                self._optimizer_ = None
                self._after_task(task)
        return self

    def decision_function(self, X, task_id=None):
        """Class scores; with ``task_id``, classes outside that task score ``-inf``.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            Columns follow ``classes_``; for two classes, the score of ``classes_[1]``
            minus that of ``classes_[0]``.
        """
        scores = self._scores(X, task_id)
        if scores.shape[1] == 2:
            return scores[:, 1] - scores[:, 0]
        return scores

    def predict_proba(self, X, task_id=None):
        """Class probabilities (softmax of the scores), columns following ``classes_``."""
        return softmax(self._scores(X, task_id))

    def predict_log_proba(self, X, task_id=None):
        """Logarithm of :meth:`predict_proba`."""
        return log_softmax(self._scores(X, task_id))

    def predict(self, X, task_id=None):
        """Predict labels: among all classes seen (class-incremental), or only among
        task ``task_id``'s classes (task-incremental)."""
        scores, classes = self._scores(X, task_id, with_classes=True)
        return classes[np.argmax(scores, axis=1)]

    def score(self, X, y, task_id=None, sample_weight=None):
        """Accuracy of :meth:`predict` (with ``task_id`` when given)."""
        return accuracy_score(y, self.predict(X, task_id=task_id), sample_weight=sample_weight)

    @property
    def classes_(self) -> np.ndarray:
        return self.output_units_.classes

    @property
    def tasks_seen_(self) -> list[int]:
        return self.output_units_.tasks

    @property
    def task_classes_(self) -> dict[int, np.ndarray]:
        return self.output_units_.task_classes

    @classmethod
    def _unit_test_params(cls) -> dict:
        """Small settings under which the test suite (sklearn's checks included) runs fast."""
        return dict(hidden_layer_sizes=(32,), max_epochs=10, batch_size=16, device="cpu",
                    random_state=0)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_label = False
        return tags

    # ------------------------------------------------------------------ hooks

    def _initialize(self) -> None:
        """Create the method's own state; called once the network exists after a reset."""

    def _before_task(self, task: int) -> None:
        """Work at the start of a task, before its optimizer is made."""

    def _observe(self, samples: Batch) -> None:
        """What ``partial_fit`` does with a task's data: one training epoch over it."""
        self._run_epoch(samples)

    def _training_batch(self, batch: Batch, step: Step) -> Batch:
        """The batch the step trains on; replay methods mix stored samples in here."""
        return batch

    def _forward(self, batch: Batch, step: Step) -> torch.Tensor:
        """Logits of the training batch (where slopes, task contexts, generated weights enter)."""
        return self.network_(batch.X, batch.task)

    def _loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Training criterion: (weighted) cross-entropy over the units."""
        if batch.weight is None:
            return F.cross_entropy(logits, batch.y)
        return (F.cross_entropy(logits, batch.y, reduction="none") * batch.weight).mean()

    def _penalty(self) -> torch.Tensor | None:
        """Regularization term added to the loss (``None`` for none)."""
        return None

    def _after_backward(self, batch: Batch, step: Step) -> None:
        """Change gradients before the optimizer step (projection, masking)."""

    def _after_step(self, batch: Batch, step: Step) -> None:
        """Work after each optimizer step (path integrals, re-applying masks)."""

    def _after_task(self, task: int) -> None:
        """End-of-task work: importances, exemplars, masks, pruning."""

    def _parameters_changed(self) -> None:
        """Parameters were added, replaced or re-scoped: rebuild the optimizer, keeping the
        state of every parameter that survives (rows added to a parameter start from zero
        state). An override drops its cached parameter lists, then calls ``super()``."""
        if self._optimizer_ is not None:
            self._optimizer_ = self._make_optimizer(carry_from=self._optimizer_)

    def _collective(self) -> Collective:
        """The ranks this estimator trains with (:func:`skcl.distributed.collective`)."""
        return collective(getattr(self, "distributed", "auto"))

    def _share(self, batch: Batch) -> Batch:
        """This rank's rows of a batch every rank drew alike (a replay draw)."""
        comm = self._collective()
        return batch if comm.world_size == 1 else batch.take(share(comm, batch.n, batch.X.device))

    def _replace_network(self, network: nn.Module) -> None:
        """Swap in another network; an open task's optimizer starts afresh over it."""
        had_optimizer = self._optimizer_ is not None
        self.network_, self._optimizer_ = network, None
        self._parameters_changed()
        if had_optimizer:
            self._optimizer_ = self._make_optimizer()

    def _scoring_network(self) -> nn.Module:
        """The module predictions read, ``(x, task)`` to unit scores: a float64 copy of what
        the method predicts with, sharing nothing mutable with the estimator."""
        return float64_copy(self.network_)

    def _scoring_key(self) -> tuple:
        """A fingerprint of what ``_scoring_network`` reads (the view is rebuilt when it
        changes); extend it with any state the scoring network reads besides ``network_``."""
        return tensor_versions(self.network_)

    def _make_network(self) -> nn.Module:
        """The network; it follows the contract of :mod:`skcl.nn`."""
        return SharedHead(self._make_trunk, self.n_features_in_)

    def _trainable_parameters(self):
        """Parameters the optimizer updates."""
        return self.network_.parameters()

    def _named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name in network_ or "", parameter)`` for ``_trainable_parameters()``, in order
        (optimizers carry state by name); what the checkpoint shares is not searched."""
        names = parameter_names(self.network_, skip=self._shared_with_checkpoint())
        return [(names.get(id(p), ""), p) for p in self._trainable_parameters()]

    # ------------------------------------------------------------------ the training loop

    def _run_epoch(self, samples: Batch) -> None:
        """One epoch of the task's training over the given (already encoded) samples."""
        run_epoch(self, samples, self.network_, self._optimizer_, self._rng_, self._forward, None,
                    hooks=True, epoch=self._epochs_in_task_)
        self._epochs_in_task_ += 1

    def _train_phase(self, samples: Batch, epochs: int, parameters=None, loss=None,
                     forward=None, hooks: bool = False, network: nn.Module | None = None,
                     rng: np.random.Generator | None = None,
                     learning_rate: float | None = None) -> None:
        """A side training run with its own temporary optimizer (the task's is untouched).

        Retraining, compression or a generator's steps: mini-batches of
        ``batch_size`` over ``samples`` (a :class:`Batch`), reshuffled each of ``epochs``.

        Parameters
        ----------
        parameters : iterable of Parameter, default=None
            What the run updates; ``None``: ``network``'s parameters if given,
            else ``_trainable_parameters()``.
        loss : callable, default=None
            ``loss(logits, batch) -> Tensor``; ``None``: ``_loss`` plus ``_penalty()``.
        forward : callable, default=None
            ``forward(batch, step) -> logits``; ``None``: ``network(batch.X, batch.task)``
            if ``network`` is given, else ``_forward``.
        hooks : bool, default=False
            Whether ``_training_batch``, ``_after_backward`` and ``_after_step`` run.
        network : torch.nn.Module, default=None
            Train this module instead of ``network_`` (it is put in training mode).
        rng : numpy.random.Generator, default=None
            Shuffle with it instead of the estimator's generator.
        learning_rate : float, default=None
            Instead of ``learning_rate``.
        """
        own = network is None
        network = self.network_ if own else network
        if forward is None:
            forward = self._forward if own else lambda batch, step: network(batch.X, batch.task)
        if parameters is None:
            parameters = self._trainable_parameters() if own else network.parameters()
        optimizer = self._new_optimizer(list(parameters), learning_rate)
        for epoch in range(epochs):
            run_epoch(self, samples, network, optimizer, self._rng_ if rng is None else rng,
                      forward, loss, hooks, epoch)

    # ------------------------------------------------------------------ internals

    def _all_or_nothing(self):
        """A context that restores the estimator's state if the block raises."""
        return Checkpoint(self, self._shared_with_checkpoint)

    def _shared_with_checkpoint(self):
        """Objects of the state a call neither trains nor copies to its checkpoint (default
        none): a method whose state grows with the tasks lists the parts a call leaves alone,
        so a call costs the same however many tasks came before. Copy one to change it."""
        return ()

    def _make_trunk(self, linear: type[nn.Module] | None = None) -> nn.Module:
        """The trunk: the user's ``backbone``, or the MLP built with ``linear`` layers
        (:func:`skcl.nn.make_trunk`)."""
        return make_trunk(self.n_features_in_, self.hidden_layer_sizes, self.backbone, linear,
                          owner=type(self).__name__)

    def _next_seed(self) -> int:
        """A seed for torch from the estimator's generator (reproducible per random_state)."""
        return int(self._rng_.integers(2**62))

    def _reset(self) -> None:
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, name)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        self._rng_ = np.random.default_rng(seed)
        self.device_ = resolve_device(self.device)
        self.output_units_ = OutputUnits(self._task_specific_units, self.device_)
        self.current_task_: int | None = None
        self._optimizer_ = None
        self._optimizer_names_: list[str] = []
        self._epochs_in_task_ = 0

    def _build(self) -> None:
        self.network_ = self._fresh_network()
        self._initialize()

    def _fresh_network(self, rng: np.random.Generator | None = None) -> nn.Module:
        """A newly initialised network with the output units registered so far, seeded
        from ``rng`` (the estimator's generator by default)."""
        rng = self._rng_ if rng is None else rng
        with seeded(int(rng.integers(2**62))):
            network = self._make_network().to(self.device_)
        units = self.output_units_
        keys = sorted(units.unit, key=units.unit.get)
        for key, run in itertools.groupby(k for k, _ in keys):
            network.add_units(task=key, n_new=len(list(run)), seed=int(rng.integers(2**62)))
        return network

    def _enter(self, group: Group, classes: np.ndarray | None,
               open_task: bool = True) -> torch.Tensor:
        """Make ``group.task`` the open task, registering its classes and output units.

        An open task with another id is closed first, so its end-of-task work
        sees the network as that task trained it; then the task's classes and
        units are added; then, if the task is new, ``_before_task`` runs and a
        fresh optimizer is made. ``open_task=False`` registers without opening.

        Returns the unit index of each of the group's samples, on the device.
        """
        if self.current_task_ is not None and self.current_task_ != group.task:
            self.end_task()
        key, n_new = self.output_units_.add_task(group.task, group.labels, classes)
        if n_new:
            self.network_.add_units(task=key, n_new=n_new, seed=self._next_seed())
            self._parameters_changed()
        if open_task and self.current_task_ != group.task:
            self._open_task(group.task)
        units = self.output_units_.encode(group.task, group.labels, group.inverse)
        return torch.from_numpy(units).to(self.device_)

    def _register(self, X, y, task_id=0, classes=None):
        """Register the classes and task of ``X, y`` and build the network, without training.

        The untrained model this leaves scores the baseline ``b_j`` of forward
        transfer. As in ``partial_fit``, an open task with another id is closed
        first; no task is opened.
        """
        with training(self), self._all_or_nothing():
            call = check_call(self, X, y, task_id, classes, None,
                                    reset=not self.__sklearn_is_fitted__())
            for i, group in enumerate(call.groups):
                self._enter(group, call.classes if i == 0 else None, open_task=False)
        return self

    def _new_optimizer(self, params: list, learning_rate: float | None = None):
        lr = self.learning_rate if learning_rate is None else learning_rate
        return new_optimizer(self.optimizer, params, lr, self.momentum)

    def _make_optimizer(self, carry_from: torch.optim.Optimizer | None = None):
        """The task's optimizer over ``_trainable_parameters()``; with ``carry_from``, each
        parameter keeps its state there, found by name (grown rows start from zero)."""
        named = [(n, p) for n, p in self._named_trainable_parameters() if p.requires_grad]
        optimizer = self._new_optimizer([p for _, p in named])
        self._optimizer_names_ = carry_state(optimizer, named, carry_from, self._optimizer_names_)
        return optimizer

    def _open_task(self, task: int) -> None:
        """Close an open task with another id, then open ``task``: ``_before_task``, a fresh
        optimizer. Its classes must be registered already (see :meth:`_enter`)."""
        if self.current_task_ == task:
            return
        self.end_task()  # closes the open task, if any
        self.current_task_ = task
        self._epochs_in_task_ = 0
        self._before_task(task)
        self._optimizer_ = self._make_optimizer()

    def _scoring_view(self) -> View:
        return View(self._scoring_network(), copy.deepcopy(self.output_units_))

    def _scores(self, X, task_id, with_classes: bool = False):
        """Class scores of ``X`` from the scoring view (:func:`skcl._call.class_scores`)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        with local_only():
            view = scoring_view(self, self._scoring_view, self._scoring_key)
        scores = class_scores(view, X, check_task_ids(task_id, X.shape[0], allow_none=True),
                              self.device_)
        return (scores, view.units.classes) if with_classes else scores
