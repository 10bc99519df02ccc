r"""Task-conditioned hypernetworks: one network of weights per task, generated, not stored."""

from __future__ import annotations

import copy
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from skcl._guard import float64_copy
from skcl.base import Batch, ContinualClassifier, Step
from skcl.nn import (
    GeneratedNetworks,
    HyperMLP,
    HyperNetwork,
    check_task_inference,
)
from skcl.strategies._inferring import InfersTasks


class HyperNetworkClassifier(InfersTasks, ContinualClassifier):
    r"""Continual learning with hypernetworks (von Oswald, Henning, Grewe & Sacramento,
    ICLR 2020).

    A hypernetwork :math:`h` maps a learned embedding :math:`e_t` of each task
    (with learned chunk embeddings when ``chunk_size`` is set) to the weights
    of the target network, an MLP of ``hidden_layer_sizes``
    (:class:`~skcl.nn.HyperMLP`); the target network's forward pass takes
    those generated weights (``_forward``). While task :math:`T` trains, the
    hypernetwork, :math:`e_T` and task :math:`T`'s head learn

    .. math:: \mathcal L_{task}(\theta, e_T) + \frac{\beta}{|\mathcal K|}
              \sum_{k \in \mathcal K} \lVert h(e_k, \theta) - h^*_k \rVert^2 ,

    :math:`h^*_k = h(e_k, \theta^*)` the weights generated for each earlier
    task :math:`k` when the last task ended and :math:`\mathcal K` the
    earlier tasks; their embeddings are not trained any more. The targets are
    not stored: a frozen copy :math:`\theta^*` of the hypernetwork, taken when
    a task ends (:attr:`previous_hnet_`), regenerates them from the old
    embeddings for each training epoch and drops them after it, so the state
    grows by an embedding and a head per task, not by a set of target weights. The mean over
    :math:`\mathcal K` follows the authors' code (hypnettorch's
    ``calc_fix_target_reg``); their look-ahead variant is not used.

    Output layer: each task has an ordinary linear head that only that task's
    samples train (the units of :attr:`output_units_` are per task, growing
    as the task's classes arrive). Generating the head too would need a
    hypernetwork output that grows with the classes, and the rows added for a
    new class would have no target for earlier tasks; a head per task keeps
    growth the library's usual append of units, costs a few parameters, and
    never forgets.

    Prediction with a task id runs that task's network. Without one
    (class-incremental), the task is inferred by predictive entropy, the
    paper's HNET+ENT: every task's network scores the input and the one with
    the lowest entropy of its head's softmax answers
    (:class:`~skcl.nn.GeneratedNetworks`, :mod:`skcl.nn.inference`; the
    weights are generated once per trained state, not per prediction). By
    default each sample picks its task; ``task_inference='batch'`` takes the
    rows of one predict call to be one task's and lets the lowest total
    entropy pick it for all of them, as the authors evaluate a task's test
    set (use it only where every call holds a single task's samples).

    Parameters
    ----------
    task_inference : {'sample', 'batch'}, default='sample'
        Task inference without a task id: per sample, or one task per predict
        call (:mod:`skcl.nn.inference`).
    beta : float, default=0.01
        :math:`\beta`, the output regulariser's strength: 0.01, the value of
        the authors' split and permuted MNIST experiments.
    embedding_dim : int, default=32
        Width of a task embedding (the authors use 32 for permuted MNIST).
    hyper_hidden_sizes : tuple of int, default=(50, 50)
        Hidden widths of the hypernetwork (ReLU). Its cost per generated set
        of weights is the last width times the target network's weights.
    chunk_size : int or None, default=4096
        Weights generated per chunk (a chunked hypernetwork, as the authors'
        for permuted MNIST); ``None`` generates the whole set at once.
    chunk_embedding_dim : int, default=16
        Width of a chunk embedding.
    reg_tasks : int or None, default=None
        Earlier tasks the regulariser visits per step: ``None`` all of
        :math:`\mathcal K` (the paper's objective), else that many drawn at random
        without replacement each step, their mean an unbiased estimate of the
        mean over :math:`\mathcal K` (the authors' code offers the same,
        ``batch_size`` of ``calc_fix_target_reg``). It bounds a step's cost,
        which otherwise grows with the number of tasks: the regulariser
        generates every earlier task's weights twice per step.
    hidden_layer_sizes : tuple of int, default=(256, 256)
        Widths of the target network, whose weights are generated.
    backbone : None
        Not supported: the trunk's weights are generated (a backbone raises ``ValueError``).
    optimizer : {'sgd', 'adam'}, default='adam'
        Adam, as the authors train. SGD with the protocol's momentum 0.9 and
        step 0.05 diverges on the second task of permuted-digits (measured):
        a step moves every generated weight at once.
    learning_rate : float, default=0.005
        Adam's step size. The authors' 0.001 runs many more steps per task than
        five epochs of a small stream; here it leaves each task's generated
        network under-trained (mean validation accuracy on a task right after
        learning it 0.84, against 0.93 at 0.005), which caps task-incremental
        ACC: forgetting is not what limits it. Chosen on validation data only
        (:func:`~skcl.model_selection.make_validation_stream`: 20 % of each
        experience's training data held out, the whole stream) of
        permuted-digits, task-incremental, PROTOCOL.md's network, seeds 0-2,
        mean validation ACC (BWT): 0.0003 0.72 (seed 0), 0.001 0.82 (-0.021),
        0.003 0.91 (-0.007), 0.005 0.92 (-0.004), 0.01 0.92 (-0.002, seeds 0-1);
        0.005 is the smallest step within seed noise of the best. A wider
        hypernetwork (100-100) at 0.001 gave 0.88 (seed 0) at 1.5x the time.
    momentum, batch_size, max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    network_ : HyperMLP
        Hypernetwork, task embeddings and per-task heads.
    previous_hnet_ : HyperNetwork or None
        :math:`h(\cdot, \theta^*)`, a frozen copy of the hypernetwork as the last
        task ended (``None`` before): it generates the regulariser's targets.

    Examples
    --------
    >>> from skcl import HyperNetworkClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = HyperNetworkClassifier(hidden_layer_sizes=(32,), random_state=0)
    >>> for exp in stream[:3]:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.regularized_tasks_
    [0, 1]
    >>> clf.predict(stream[0].X_test[:4], task_id=0).shape
    (4,)
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        **InfersTasks._parameter_constraints,
        "beta": [Interval(Real, 0, None, closed="left")],
        "embedding_dim": [Interval(Integral, 1, None, closed="left")],
        "hyper_hidden_sizes": ["array-like"],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
        "chunk_embedding_dim": [Interval(Integral, 1, None, closed="left")],
        "reg_tasks": [Interval(Integral, 1, None, closed="left"), None],
    }
    _task_specific_units = True

    def __init__(
        self,
        task_inference: str = "sample",
        beta: float = 0.01,
        embedding_dim: int = 32,
        hyper_hidden_sizes: tuple[int, ...] = (50, 50),
        chunk_size: int | None = 4096,
        chunk_embedding_dim: int = 16,
        reg_tasks: int | None = None,
        hidden_layer_sizes: tuple[int, ...] = (256, 256),
        backbone: Callable[[int], nn.Module] | None = None,
        optimizer: str = "adam",
        learning_rate: float = 0.005,
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
        self.beta = beta
        self.embedding_dim = embedding_dim
        self.hyper_hidden_sizes = hyper_hidden_sizes
        self.chunk_size = chunk_size
        self.chunk_embedding_dim = chunk_embedding_dim
        self.reg_tasks = reg_tasks

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "embedding_dim": 8, "hyper_hidden_sizes": (16,),
                "chunk_size": 512, "chunk_embedding_dim": 4}

    def _make_network(self) -> nn.Module:
        if self.backbone is not None:
            raise ValueError(
                "HyperNetworkClassifier generates its trunk's weights, so it cannot take a "
                "backbone; set hidden_layer_sizes instead"
            )
        sizes = np.asarray(self.hidden_layer_sizes).ravel()
        if sizes.size and (sizes.dtype.kind not in "iu" or sizes.min() < 1):
            raise ValueError("hidden_layer_sizes must be a tuple of positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        return HyperMLP(self.n_features_in_, [int(s) for s in sizes], self.embedding_dim,
                        [int(s) for s in np.asarray(self.hyper_hidden_sizes).ravel()],
                        self.chunk_size, self.chunk_embedding_dim)

    def _initialize(self) -> None:
        super()._initialize()
        self.previous_hnet_: HyperNetwork | None = None
        self.regularized_tasks_: list[int] = []
        self._old_tasks_: list[int] = []
        self._targets_: torch.Tensor | None = None

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self._old_tasks_ = [t for t in self.regularized_tasks_ if t != task]

    def _trainable_parameters(self):
        """The hypernetwork, the open task's embedding and its head."""
        net, key = self.network_, str(self.current_task_)
        params = list(net.hnet.parameters())
        if key in net.embeddings:
            params += [net.embeddings[key], *net.heads[key].parameters()]
        return params

    def _forward(self, batch: Batch, step: Step) -> torch.Tensor:
        """The hypernetwork generates the batch's tasks' weights; the target network runs
        with them."""
        tasks = torch.unique(batch.task).tolist()
        generated = dict(zip(tasks, self.network_.generate(tasks), strict=True))
        return self.network_(batch.X, batch.task, generated=generated)

    def _observe(self, samples: Batch) -> None:
        """One epoch, the regulariser's targets generated once for it by the frozen copy and
        dropped after it (they are the same at every step: nothing here trains
        :math:`\theta^*` or an earlier task's embedding)."""
        if self._old_tasks_ and self.beta != 0:
            with torch.no_grad():
                self._targets_ = self.network_.generate(self._old_tasks_,
                                                        hnet=self.previous_hnet_)
        try:
            super()._observe(samples)
        finally:
            self._targets_ = None

    def _penalty(self) -> torch.Tensor | None:
        penalty = super()._penalty()
        if self._targets_ is None:
            return penalty
        tasks, targets = self._old_tasks_, self._targets_
        if self.reg_tasks is not None and len(tasks) > self.reg_tasks:
            picked = sorted(self._rng_.choice(len(tasks), size=self.reg_tasks, replace=False))
            tasks, targets = [tasks[i] for i in picked], targets[picked]
        drift = (self.network_.generate(tasks) - targets).square().sum(dim=1).mean()
        return self.beta * drift if penalty is None else penalty + self.beta * drift

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        self.previous_hnet_ = copy.deepcopy(self.network_.hnet).requires_grad_(False)
        self.regularized_tasks_ = self.network_.tasks

    def _shared_with_checkpoint(self):
        """The frozen hypernetwork: a call replaces it, never changes it."""
        return () if getattr(self, "previous_hnet_", None) is None else (self.previous_hnet_,)

    def _scoring_network(self) -> nn.Module:
        return GeneratedNetworks(float64_copy(self.network_),
                                 check_task_inference(self.task_inference))
