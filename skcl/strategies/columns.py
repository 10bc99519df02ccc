r"""Column methods: progressive networks and Progress & Compress.

Both train on a :class:`~skcl.nn.ColumnNetwork`: MLP columns of the
estimator's widths, each reading the layer below of every earlier column
through lateral adapters, with a head per task.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import nn
from torch.nn import functional as F

from skcl._guard import float64_copy
from skcl.base import Batch, ContinualClassifier
from skcl.components import QuadraticPenalty, stiffness_limit, sum_terms
from skcl.kernels import fisher_diagonal
from skcl.memory import SampleStore, batch_digest
from skcl.nn import ColumnNetwork
from skcl.strategies._inferring import InfersTasks
from skcl.strategies.importance import TaskSample, network_importance


class _Columns(InfersTasks, ContinualClassifier):
    """Shared by the column methods: per-task units on a column network built from the
    estimator's widths (the layer factory's MLP; a backbone is refused)."""

    _task_specific_units = True
    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        **InfersTasks._parameter_constraints,
    }

    def _column_network(self, **kwargs) -> ColumnNetwork:
        # _make_trunk checks hidden_layer_sizes and refuses a backbone with a clear error.
        sizes = [layer.out_features for layer in self._make_trunk(linear=nn.Linear)[0::2]]
        return ColumnNetwork(self.n_features_in_, sizes, linear=nn.Linear, **kwargs)

    @property
    def parameter_counts_(self) -> dict[str, int]:
        """Parameters of the columns' own layers and heads, and of the lateral adapters."""
        return self.network_.parameter_counts()


class ProgressiveClassifier(_Columns):
    r"""Progressive neural networks (Rusu et al., 2016).

    "Progressive Neural Networks" (arXiv:1606.04671). Each new task gets a
    new column, an MLP of ``hidden_layer_sizes``, whose layer :math:`\ell`
    reads, besides its own layer :math:`\ell - 1`, the layer :math:`\ell - 1`
    of every earlier column through lateral adapters (the paper's eq. 1):

    .. math:: h^{(k)}_\ell = \mathrm{ReLU}\Big(W^{(k)}_\ell h^{(k)}_{\ell-1}
              + \sum_{j<k} U^{(k:j)}_\ell h^{(j)}_{\ell-1}\Big),

    and a head for the task over the columns' last layers. Earlier columns,
    their adapters and heads are frozen when the new column appears: training
    task :math:`k` updates only column :math:`k`, so no earlier task's
    predictions change (BWT is exactly 0 with task ids). Parameters grow
    linearly in the number of tasks for the columns, and quadratically for
    the adapters (:attr:`parameter_counts_`). A task met again after a later
    task trained trains its head alone: its column is frozen, so no other
    task's predictions change.

    With ``task_id`` at predict time, the task's column and head answer
    (task-incremental). Without it (class-incremental), the task is inferred,
    per sample or per call (``task_inference``): every task's head answers,
    and the head whose softmax over its own classes has the lowest entropy
    (the most confident one) gives the prediction.

    Parameters
    ----------
    task_inference : {'sample', 'batch'}, default='sample'
        How the task is inferred when predicting without ``task_id``
        (:mod:`skcl.nn.inference`): ``'sample'``, each row by its own most
        confident head; ``'batch'``, the head of lowest total entropy over the
        call answers for every row. ``'batch'`` assumes that every predict call
        holds one task's samples only (a call is scored in chunks of 8192 rows,
        each chunk picking one task); with rows of several tasks in a call it
        answers most of them with the wrong task's head.
    hidden_layer_sizes, optimizer, learning_rate, momentum, batch_size, max_epochs, \
device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier` (``hidden_layer_sizes``
        are each column's widths).
    backbone : None
        Not supported (columns are built from the MLP layers).

    Attributes
    ----------
    network_ : ColumnNetwork
        The columns, adapters and heads.
    parameter_counts_ : dict
        ``{'columns': ..., 'adapters': ...}``: parameters of the columns' own
        layers and heads, and of the lateral adapters.

    Examples
    --------
    >>> from skcl import ProgressiveClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = ProgressiveClassifier(hidden_layer_sizes=(32,), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> len(clf.network_.columns), clf.score(stream[0].X_test, stream[0].y_test, task_id=0) > 0.9
    (5, True)
    >>> one_task = clf.set_params(task_inference="batch").predict(stream[3].X_test)
    >>> sorted(set(one_task.tolist()))  # every row answered by task 3's head
    [6, 7]
    """

    def __init__(self, task_inference: str = "sample", hidden_layer_sizes=(256, 256),
                 backbone=None, optimizer="sgd", learning_rate=0.05, momentum=0.9,
                 batch_size=32, max_epochs=5, device="auto", random_state=None, verbose=0,
                 distributed="auto"):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, backbone=backbone,
                         optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                         batch_size=batch_size, max_epochs=max_epochs, device=device,
                         random_state=random_state, verbose=verbose, distributed=distributed)
        self.task_inference = task_inference

    def _make_network(self) -> nn.Module:
        return self._column_network(per_task_columns=True)

    def _initialize(self) -> None:
        super()._initialize()
        self._newest_column_ = -1
        self._earlier_, self._earlier_key_ = None, None

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        column = self.network_.task_column[task]
        self._newest_column_ = max(self._newest_column_, column)
        self.network_.own(task, column if self._trains_column() else None)

    def _shared_with_checkpoint(self):
        # A call trains the open task's column (or its head alone): the other columns'
        # layers and the other tasks' heads stay as they are, and so does the cache of
        # activations (replaced, never changed in place).
        network = getattr(self, "network_", None)
        if not isinstance(network, ColumnNetwork):
            return ()
        task = self.current_task_
        columns = () if task is None else (network.task_column[task],)
        cache = () if self._earlier_ is None else (self._earlier_,)
        return [*network.parts_except(task, columns), *cache]

    def _trains_column(self) -> bool:
        """Whether the open task's column learns: only while no later column has (a task
        met again after a later one trains its head alone)."""
        return self.network_.task_column[self.current_task_] == self._newest_column_

    def _observe(self, samples: Batch) -> None:
        # The frozen columns give every epoch of the same data the same activations: they
        # are computed once per distinct call and travel with the samples, after the inputs.
        column = self.network_.task_column[self.current_task_]
        if column == 0 or not self._trains_column() or not self.network_.sizes:
            return super()._observe(samples)
        key = batch_digest(samples)
        if self._earlier_key_ != key:
            self._earlier_ = self.network_.earlier(samples.X, column)
            self._earlier_key_ = key
        super()._observe(samples._replace(X=torch.cat([samples.X, self._earlier_], dim=1)))

    def _forward(self, batch: Batch, step) -> torch.Tensor:
        n_features = self.n_features_in_
        if batch.X.shape[1] > n_features:  # inputs, then the frozen columns' activations
            return self.network_.forward_from(batch.X[:, :n_features], batch.X[:, n_features:],
                                              self.current_task_)
        column = self.network_.task_column[self.current_task_]
        below = column if self._trains_column() else column + 1
        return self.network_(batch.X, batch.task, detach_below=below)

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        self._earlier_, self._earlier_key_ = None, None

    def _trainable_parameters(self):
        if self.current_task_ is None:
            return self.network_.parameters()
        if self._trains_column():
            return self.network_.column_parameters(self.network_.task_column[self.current_task_])
        column = self.network_.columns[self.network_.task_column[self.current_task_]]
        return column.heads[str(self.current_task_)].parameters()


class ProgressCompressClassifier(_Columns):
    r"""Progress & Compress (Schwarz et al., ICML 2018).

    "Progress & Compress: A scalable framework for continual learning". Two
    columns (:class:`~skcl.nn.ColumnNetwork`): the knowledge base (column 0)
    and the active column (column 1), whose layers read the knowledge base's
    through lateral adapters; each has a head per task. For each task:

    *Progress*: the stream's epochs train the active column (its layers,
    adapters and the task's head) on the task, the knowledge base frozen.

    *Compress*: when the task ends, the knowledge base (its layers and the
    task's head) is distilled from the active column on the task's data,
    ``compress_epochs`` epochs of the side training run
    (:meth:`~skcl.base.ContinualClassifier._train_phase`) on

    .. math:: \mathrm{KL}\big(\pi_{active}(\cdot \mid x) \,\|\,
              \pi_{KB}(\cdot \mid x)\big) + \frac{\lambda}{2} \sum_i F^*_i
              (\theta^{KB}_i - \theta^{KB*}_i)^2 ,

    the softmaxes over the task's classes, under online EWC on the knowledge
    base only (a :class:`~skcl.components.QuadraticPenalty` scoped to column
    0's layers). Then the Fisher :math:`F_t` of the knowledge base is
    computed on up to ``fisher_samples`` samples of the task and folded in,
    :math:`F^* \leftarrow \gamma F^* + F_t`, anchored at the compressed
    knowledge base, and the active column is re-initialised for the next
    task. The task's samples are kept until its compress phase, then dropped.
    The penalty covers the knowledge base's shared layers, not its per-task
    heads: a task's head is trained only in that task's own compress phases,
    so in any other task's its penalty would be a constant, one more per
    task, that changes no gradient but makes each compress step cost more as
    tasks accumulate. (A task met again re-distils its head with no pull
    towards its former value.)

    Predictions read the knowledge base (the task's head with ``task_id``;
    without it, the head of lowest softmax entropy, per sample or per call,
    as in :class:`ProgressiveClassifier`). While a task is open, predictions
    compress a copy (with the seed the task's compression will use), so they
    equal those after :meth:`end_task`; the copy is cached until the next
    training call.

    Phase lengths (the paper leaves them open): progress runs the stream's
    epochs (``max_epochs`` in ``fit``, one per ``partial_fit`` call); compress
    runs ``compress_epochs`` = 5 epochs by default, the protocol's epochs per
    task, so the knowledge base sees the task's data as often as the active
    column did.

    Parameters
    ----------
    ewc_lambda : float, default=100.0
        :math:`\lambda`, strength of online EWC (on the raw Fisher) in the
        compress phase: the value a sweep of online EWC on permuted-digits
        picked (100 / 300 / 1000, ``benchmarks/bench_methods.py``'s notes).
    gamma : float, default=1.0
        :math:`\gamma`, decay of the running Fisher.
    compress_epochs : int, default=5
        Epochs of each compress phase over the task's samples.
    fisher_samples : int, default=500
        Samples of each task the knowledge base's Fisher is computed on.
    clip_stiffness : bool, default=True
        Clip each penalty curvature :math:`\lambda F^*_i` to :math:`(1 + \mu) / \eta`
        under SGD (see :class:`~skcl.components.QuadraticPenalty`).
    task_inference : {'sample', 'batch'}, default='sample'
        How the task is inferred when predicting without ``task_id``
        (:mod:`skcl.nn.inference`): ``'sample'``, each row by its own most
        confident head; ``'batch'``, the head of lowest total entropy over the
        call answers for every row. ``'batch'`` assumes that every predict call
        holds one task's samples only (a call is scored in chunks of 8192 rows,
        each chunk picking one task); with rows of several tasks in a call it
        answers most of them with the wrong task's head.
    hidden_layer_sizes, optimizer, learning_rate, momentum, batch_size, max_epochs, \
device, random_state, verbose
        As in :class:`~skcl.base.ContinualClassifier` (``hidden_layer_sizes``
        are each column's widths; ``backbone`` is not supported).
    backbone : None
        Not supported.

    Attributes
    ----------
    penalty_ : QuadraticPenalty
        Online EWC over the knowledge base's layers: ``importance`` is :math:`F^*`.
    fisher_ : dict of str to Tensor
        :math:`F_t` of the last task compressed (its head's included).
    parameter_counts_ : dict
        Parameters of the two columns' own layers and heads, and of the adapters.

    Examples
    --------
    >>> from skcl import ProgressCompressClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = ProgressCompressClassifier(hidden_layer_sizes=(32,), random_state=0)
    >>> for exp in stream[:3]:
    ...     for _ in range(3):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> clf.score(stream[0].X_test, stream[0].y_test, task_id=0) > 0.9
    True
    """

    KNOWLEDGE_BASE, ACTIVE = 0, 1

    _parameter_constraints: dict = {
        **_Columns._parameter_constraints,
        "ewc_lambda": [Interval(Real, 0, None, closed="left")],
        "gamma": [Interval(Real, 0, 1, closed="both")],
        "compress_epochs": [Interval(Integral, 1, None, closed="left")],
        "fisher_samples": [Interval(Integral, 1, None, closed="left")],
        "clip_stiffness": ["boolean"],
    }

    def __init__(
        self,
        ewc_lambda: float = 100.0,
        gamma: float = 1.0,
        compress_epochs: int = 5,
        fisher_samples: int = 500,
        clip_stiffness: bool = True,
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
        self.ewc_lambda = ewc_lambda
        self.gamma = gamma
        self.compress_epochs = compress_epochs
        self.fisher_samples = fisher_samples
        self.clip_stiffness = clip_stiffness
        self.task_inference = task_inference

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "compress_epochs": 2, "fisher_samples": 64}

    def _make_network(self) -> nn.Module:
        return self._column_network(per_task_columns=False, n_columns=2)

    # ------------------------------------------------------------------ hooks

    def _initialize(self) -> None:
        super()._initialize()
        self.penalty_ = QuadraticPenalty(scope=f"columns.{self.KNOWLEDGE_BASE}.trunk.")
        self._task_data_ = SampleStore()
        self._task_sample_ = TaskSample(0)
        self._compress_seed_ = 0

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self._task_data_ = SampleStore()
        self._task_sample_ = TaskSample(self.fisher_samples)
        self._compress_seed_ = self._next_seed()
        limit = (stiffness_limit(self.optimizer, self.learning_rate, self.momentum)
                 if self.clip_stiffness else math.inf)
        self.penalty_.stiffen(float(self.ewc_lambda), limit)
        self.network_.own(task)
        if str(task) not in self.network_.columns[self.ACTIVE].heads:  # a task met again
            self.network_.add_head(self.ACTIVE, task, self._next_seed())

    def _shared_with_checkpoint(self):
        # A call trains both columns' layers and the open task's heads: the other tasks'
        # heads stay as they are.
        network = getattr(self, "network_", None)
        if not isinstance(network, ColumnNetwork):
            return ()
        return network.parts_except(self.current_task_, (self.KNOWLEDGE_BASE, self.ACTIVE))

    def _observe(self, samples: Batch) -> None:
        self._task_data_.add(samples)
        self._task_sample_.add(samples.X, samples.y, samples.weight)
        super()._observe(samples)

    def _forward(self, batch: Batch, step) -> torch.Tensor:
        # Progress: the active column, the knowledge base frozen beneath its laterals.
        return self.network_(batch.X, batch.task, column=self.ACTIVE, detach_below=self.ACTIVE)

    def _trainable_parameters(self):
        return self.network_.column_parameters(self.ACTIVE)

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        if len(self._task_data_):
            self._compress(self.network_, task)
            self.fisher_ = self._knowledge_base_fisher(task)
            self.penalty_.consolidate(self.fisher_, dict(self.network_.named_parameters()),
                                      decay=self.gamma)
        self.network_.reset_column(self.ACTIVE, self._next_seed())
        self._parameters_changed()
        self._task_data_ = SampleStore()
        self._task_sample_ = TaskSample(0)

    def _parameters_changed(self) -> None:
        self.penalty_.parameters_changed()
        super()._parameters_changed()

    def _scoring_key(self) -> tuple:
        return (super()._scoring_key(), self.current_task_, len(self._task_data_))

    def _scoring_network(self) -> nn.Module:
        if self.current_task_ is not None and len(self._task_data_):
            network = copy.deepcopy(self.network_)
            self._compress(network, self.current_task_)
            return self._inferring(float64_copy(network))
        return super()._scoring_network()

    # ------------------------------------------------------------------ compress

    def _compress(self, network: ColumnNetwork, task: int) -> None:
        """Distil ``network``'s active column into its knowledge base on the open task's
        samples, under the online-EWC penalty (changes only ``network``)."""
        kb, active = self.KNOWLEDGE_BASE, self.ACTIVE
        penalty = self.penalty_

        def forward(batch: Batch, step) -> torch.Tensor:
            return network.column_logits(batch.X, task, column=kb, detach_below=kb)

        def loss(student: torch.Tensor, batch: Batch) -> torch.Tensor:
            with torch.no_grad():
                teacher = F.log_softmax(network.column_logits(batch.X, task, column=active), 1)
            kl = (teacher.exp() * (teacher - F.log_softmax(student, dim=1))).sum(dim=1)
            kl = kl.mean() if batch.weight is None else (kl * batch.weight).mean()
            return sum_terms(kl, penalty.term(network))

        column = network.columns[kb]
        parameters = [*column.trunk.parameters(), *column.heads[str(task)].parameters()]
        self._train_phase(self._task_data_.tensors(), self.compress_epochs,
                          parameters=parameters, loss=loss, forward=forward, network=network,
                          rng=np.random.default_rng(self._compress_seed_))

    def _knowledge_base_fisher(self, task: int) -> dict[str, torch.Tensor]:
        """The knowledge base's diagonal Fisher (with the task's head) on the task's sample,
        by the network's parameter names."""
        X, units = self._task_sample_.tensors()
        if X is None:
            return {}
        prefix = f"columns.{self.KNOWLEDGE_BASE}."
        column = self.network_.columns[self.KNOWLEDGE_BASE]
        task_units = torch.nonzero(self.network_.unit_task == task).flatten()
        local = torch.searchsorted(task_units, units)
        view = nn.Sequential(column.trunk, column.heads[str(task)])  # x -> the task's logits
        fisher = network_importance(fisher_diagonal, view, X, local)
        names = {"0.": f"{prefix}trunk.", "1.": f"{prefix}heads.{task}."}
        return {next(names[p] + n[len(p):] for p in names if n.startswith(p)): f
                for n, f in fisher.items()}
