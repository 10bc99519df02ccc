r"""Incremental moment matching: merge the per-task posteriors into one network."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from skcl.base import Batch
from skcl.kernels import fisher_diagonal
from skcl.strategies.importance import ImportancePenalty, network_importance

Params = dict[str, torch.Tensor]


class MomentSums:
    r"""Running sums from which IMM merges the task solutions, constant in size.

    Mean-IMM needs :math:`\sum_k w_k \theta_k` and, per row, the total
    weight :math:`\sum_k w_k` of the solutions having it; mode-IMM also
    :math:`\sum_k w_k F_k \theta_k` and :math:`\sum_k w_k F_k`
    (``weighted=True``). The weights are geometric, :math:`w_k =
    \rho^{K-k}` after :math:`K` solutions (``decay`` :math:`\rho`), so the
    merge's mixing ratios are :math:`\alpha_k = w_k / \sum_j w_j`; adding a
    solution multiplies the sums by :math:`\rho` first. :math:`\rho = 1`
    gives equal weights, the plain sums. A solution may have fewer output
    units (rows) than a later one: each row is averaged over the solutions
    that have it, and rows a later solution adds start from zero sums. Adding
    solutions one at a time gives the same bits as summing a list in the same
    order.

    Parameters
    ----------
    weighted : bool
        Keep the Fisher-weighted sums of mode-IMM.
    decay : float, default=1.0
        :math:`\rho \in [0, 1]`, the weight of each earlier solution relative
        to the next.

    Attributes
    ----------
    n_solutions : int
        Solutions added so far.
    theta : dict of str to Tensor
        :math:`\sum_k w_k \theta_k` (zero-padded rows).
    count : dict of str to Tensor
        For each name, the total weight :math:`\sum_k w_k` of the solutions
        having each row (shape ``(rows,)``; their number when :math:`\rho = 1`).
    fisher_theta, fisher : dict of str to Tensor
        :math:`\sum_k w_k F_k \theta_k` and :math:`\sum_k w_k F_k` (empty
        unless ``weighted``).

    Examples
    --------
    >>> import torch
    >>> from skcl.strategies.imm import MomentSums
    >>> sums = MomentSums(weighted=False)
    >>> sums.add({"w": torch.tensor([0.0, 2.0])})
    >>> sums.add({"w": torch.tensor([2.0, 4.0, 6.0])})
    >>> sums.merged()["w"]
    tensor([1., 3., 6.])
    >>> recent = MomentSums(weighted=False, decay=0.5)
    >>> recent.add({"w": torch.tensor([0.0])})
    >>> recent.add({"w": torch.tensor([3.0])})
    >>> recent.merged()["w"]  # alpha = (1/3, 2/3)
    tensor([2.])
    """

    def __init__(self, weighted: bool, decay: float = 1.0):
        self.weighted = weighted
        self.decay = decay
        self.n_solutions = 0
        self.theta: Params = {}
        self.count: Params = {}
        self.fisher_theta: Params = {}
        self.fisher: Params = {}

    def add(self, solution: Params, fisher: Params | None = None) -> None:
        """Add a task's solution :math:`\theta_k` (and, if ``weighted``, its Fisher :math:`F_k`),
        after weighting the earlier ones by ``decay``."""
        if self.weighted and fisher is None:
            raise ValueError("mode-IMM sums need each solution's Fisher")
        if self.decay != 1:
            for sums in (self.theta, self.count, self.fisher_theta, self.fisher):
                for total in sums.values():
                    total.mul_(self.decay)
        for name, theta in solution.items():
            n = theta.shape[0]
            _padded(self.theta, name, theta)[:n] += theta
            count = _padded(self.count, name, theta.new_zeros(n))
            count[:n] += 1
            if self.weighted:
                w = fisher[name]
                _padded(self.fisher_theta, name, theta)[:n] += w * theta
                _padded(self.fisher, name, theta)[:n] += w
        self.n_solutions += 1

    def plus(self, solution: Params, fisher: Params | None = None) -> MomentSums:
        """A copy with one more solution added (this one is unchanged)."""
        out = MomentSums(self.weighted, self.decay)
        out.n_solutions = self.n_solutions
        for name in ("theta", "count", "fisher_theta", "fisher"):
            setattr(out, name, {k: v.clone() for k, v in getattr(self, name).items()})
        out.add(solution, fisher)
        return out

    def merged(self) -> Params | None:
        """The merge: per-row weighted mean, or for mode-IMM the Fisher-weighted mean where
        some solution gives an element Fisher information (the mean elsewhere); ``None``
        before any solution."""
        if not self.n_solutions:
            return None
        out = {}
        for name, total in self.theta.items():
            count = self.count[name].reshape(-1, *([1] * (total.dim() - 1)))
            mean = total / count
            if self.weighted:
                weight = self.fisher[name]
                mean = torch.where(weight > 0, self.fisher_theta[name] / weight, mean)
            out[name] = mean
        return out


def _padded(sums: Params, name: str, like: torch.Tensor) -> torch.Tensor:
    """``sums[name]``, created as zeros like ``like`` or grown with zero rows to its rows."""
    total = sums.get(name)
    if total is None:
        total = sums[name] = torch.zeros_like(like)
    elif total.shape[0] < like.shape[0]:
        pad = total.new_zeros((like.shape[0] - total.shape[0], *total.shape[1:]))
        total = sums[name] = torch.cat([total, pad])
    return total


def _merge(solutions: Sequence[Params], fishers: Sequence[Params] | None,
           decay: float) -> Params:
    sums = MomentSums(weighted=fishers is not None, decay=decay)
    for k, solution in enumerate(solutions):
        sums.add(solution, None if fishers is None else fishers[k])
    return sums.merged()


def mean_imm(solutions: Sequence[Params], decay: float = 1.0) -> Params:
    r"""Mean-IMM (Lee et al., NeurIPS 2017, Eq. 3): :math:`\theta_{1:K} = \sum_k \alpha_k \theta_k`.

    The mixing ratios are geometric, :math:`\alpha_k \propto \rho^{K-k}`
    (``decay`` :math:`\rho`); :math:`\rho = 1` gives the uniform
    :math:`\alpha_k = 1/K`.

    Parameters
    ----------
    solutions : sequence of dict of str to Tensor
        The parameters :math:`\theta_k` at the end of each task, by name.
    decay : float, default=1.0
        :math:`\rho \in [0, 1]`.

    Returns
    -------
    merged : dict of str to Tensor

    Examples
    --------
    >>> import torch
    >>> from skcl.strategies.imm import mean_imm
    >>> mean_imm([{"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([2.0, 4.0])}])["w"]
    tensor([1., 3.])
    """
    return _merge(solutions, None, decay)


def mode_imm(solutions: Sequence[Params], fishers: Sequence[Params],
             decay: float = 1.0) -> Params:
    r"""Mode-IMM (Lee et al., NeurIPS 2017, Eq. 4-5) with diagonal Fisher information.

    .. math:: \theta_{1:K} = \Big(\sum_k \alpha_k F_k\Big)^{-1} \sum_k \alpha_k F_k \theta_k

    element-wise: the mode of the product of the tasks' Laplace-approximated
    posteriors, with mixing ratios :math:`\alpha_k \propto \rho^{K-k}`
    (``decay`` :math:`\rho`; uniform ratios, :math:`\rho = 1`, cancel
    out). Elements no task gives Fisher information take the weighted mean.

    Parameters
    ----------
    solutions : sequence of dict of str to Tensor
        The parameters :math:`\theta_k` at the end of each task, by name.
    fishers : sequence of dict of str to Tensor
        The diagonal Fisher :math:`F_k` of each task, shaped like its solution.
    decay : float, default=1.0
        :math:`\rho \in [0, 1]`.

    Returns
    -------
    merged : dict of str to Tensor

    Examples
    --------
    >>> import torch
    >>> from skcl.strategies.imm import mode_imm
    >>> thetas = [{"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([2.0, 4.0])}]
    >>> fishers = [{"w": torch.tensor([3.0, 0.0])}, {"w": torch.tensor([1.0, 0.0])}]
    >>> mode_imm(thetas, fishers)["w"]
    tensor([0.5000, 3.0000])
    """
    if len(fishers) != len(solutions):
        raise ValueError(f"{len(solutions)} solutions but {len(fishers)} Fishers")
    return _merge(solutions, fishers, decay)


class IMMClassifier(ImportancePenalty):
    r"""Incremental moment matching (Lee et al., NeurIPS 2017).

    Each task :math:`k` is learned in turn; when it ends, its solution
    :math:`\theta_k` (and for mode-IMM its diagonal Fisher :math:`F_k`, the
    exact per-sample empirical Fisher, :func:`skcl.kernels.fisher_diagonal`,
    on up to ``fisher_samples`` samples) is added to running sums
    (:class:`MomentSums`), and the tasks' Gaussian posteriors are merged into
    the network that predicts, with mixing ratios :math:`\alpha_k` (the
    paper's Eq. 3-5, :math:`\sum_k \alpha_k = 1`):

    - ``merge='mean'`` (mean-IMM): :math:`\theta_{1:K} = \sum_k \alpha_k \theta_k`;
    - ``merge='mode'`` (mode-IMM):
      :math:`\theta_{1:K} = (\sum_k \alpha_k F_k)^{-1} \sum_k \alpha_k F_k \theta_k`.

    The paper tunes the :math:`\alpha_k` per experiment (two tasks there, so
    one ratio :math:`\alpha_2`); for a stream of any length skcl takes them
    geometric, :math:`\alpha_k \propto \rho^{K-k}` (``alpha_decay``), so
    the newest solution keeps a share of at least :math:`1 - \rho` however
    many tasks came before it.

    The transfer techniques of the paper shape the solutions so they merge well:
    weight-transfer starts each task from the previous task's solution
    (otherwise every task starts from the initial weights), and L2-transfer
    trains task :math:`k` on
    :math:`\mathcal{L}_k(\theta) + \lambda \lVert \theta - \theta_{k-1} \rVert_2^2`
    (a :class:`~skcl.components.QuadraticPenalty` with unit importance).
    Training continues from each task's own solution; the merged parameters
    are used for prediction, the open task's current solution merged in while
    a task is open (so a stream that never calls ``end_task`` predicts with the
    method's merge, not the network being trained). Output units added by a
    later task are merged over the solutions that have them. Only the sums
    are kept, never the solutions themselves, so the state does not grow with
    the number of tasks.

    Parameters
    ----------
    merge : {'mean', 'mode'}, default='mean'
        Mean-IMM or mode-IMM.
    weight_transfer : bool, default=True
        Start each task from the previous solution (else from the initial weights).
    l2_transfer : float, default=0.1
        :math:`\lambda` of L2-transfer; 0 disables it. The paper tunes it per
        experiment; 0.1 had the best validation ACC (mean-IMM) over whole
        streams of split-digits (task-incremental) and permuted-digits among
        0.001-0.1 (``benchmarks/tune_defaults.py``; no test data), and again
        among 0.01 / 0.1 / 0.3 with ``alpha_decay=0.5``. The penalty is an
        isotropic :math:`\lambda \lVert \theta - \theta_{k-1} \rVert^2`
        whose curvature :math:`2\lambda` does not depend on the data.
    alpha_decay : float, default=0.5
        :math:`\rho \in [0, 1]`: each solution's mixing ratio is
        :math:`\rho` times the next one's, :math:`\alpha_k = \rho^{K-k} /
        \sum_j \rho^{K-j}`. ``1`` is the uniform :math:`\alpha_k = 1/K`
        (skcl's merge before this parameter), ``0`` keeps only the newest
        solution (L2-transfer fine-tuning, no merge); with two tasks,
        :math:`\alpha_2 = 1 / (1 + \rho)`. The uniform merge fell below Naive
        on the held-out split-tabular stream (class-incremental, seed 0:
        mean-IMM 0.128, Naive 0.170): the merged network predicted only the
        newest task's two classes, as every single solution there does, but
        scored 0.64 on them against 0.85 for the newest solution alone, its
        trunk being an average in which that solution weighs 1/5 (taking each
        output unit from the solution that learned its class changed no
        prediction). 0.5 had the best mean validation ACC among 1 / 0.7 / 0.5
        / 0.3 / 0, for mean-IMM (0.550 / 0.627 / **0.636** / 0.627 / 0.580)
        and mode-IMM (0.575 / 0.599 / **0.612** / 0.608 / 0.580), over whole
        streams of split-digits (task- and class-incremental) and
        permuted-digits, seeds 0-1, ``l2_transfer=0.1``, the ``'validation'``
        protocol of :mod:`skcl.model_selection` (no test data;
        ``benchmarks/tune_defaults.py``); it is checked, not chosen, on
        :mod:`skcl.heldout`'s streams.
    fisher_samples : int, default=500
        Samples of each task its Fisher is computed on (a reservoir sample;
        mode-IMM only).
    clip_stiffness : bool, default=True
        Clip the L2-transfer curvature :math:`2\lambda` to :math:`(1 + \mu) / \eta`
        under SGD (see :mod:`skcl.strategies.importance`).
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    moments_ : MomentSums
        The running sums over the tasks ended (``moments_.n_solutions`` of them).
    solutions_ : dict of str to Tensor
        :math:`\sum_k \rho^{K-k} \theta_k` over the tasks ended
        (``moments_.theta``). It used to be the list of every :math:`\theta_k`,
        a state growing with each task.
    fishers_ : dict of str to Tensor
        :math:`\sum_k \rho^{K-k} F_k` over the tasks ended (``moments_.fisher``;
        empty for mean-IMM). It used to be the list of every :math:`F_k`.
    merged_ : dict of str to Tensor or None
        The merged parameters the model predicts with.

    Examples
    --------
    >>> from skcl import IMMClassifier
    >>> from skcl.datasets import load_permuted_digits
    >>> stream = load_permuted_digits(n_experiences=3)
    >>> clf = IMMClassifier(merge="mode", hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> clf.moments_.n_solutions, clf.score(stream[0].X_test, stream[0].y_test) > 0.5
    (3, True)
    """

    _strength = ("l2_transfer", 2.0)
    _parameter_constraints: dict = {
        **ImportancePenalty._parameter_constraints,
        "merge": [StrOptions({"mean", "mode"})],
        "weight_transfer": ["boolean"],
        "l2_transfer": [Interval(Real, 0, None, closed="left")],
        "alpha_decay": [Interval(Real, 0, 1, closed="both")],
        "fisher_samples": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        merge: str = "mean",
        weight_transfer: bool = True,
        l2_transfer: float = 0.1,
        alpha_decay: float = 0.5,
        fisher_samples: int = 500,
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
            hidden_layer_sizes=hidden_layer_sizes, backbone=backbone, optimizer=optimizer,
            learning_rate=learning_rate, momentum=momentum, batch_size=batch_size,
            max_epochs=max_epochs, device=device, random_state=random_state, verbose=verbose,
            distributed=distributed,
        )
        self.merge = merge
        self.weight_transfer = weight_transfer
        self.l2_transfer = l2_transfer
        self.alpha_decay = alpha_decay
        self.fisher_samples = fisher_samples
        self.clip_stiffness = clip_stiffness

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "fisher_samples": 64}

    @property
    def solutions_(self) -> Params:
        return self.moments_.theta

    @property
    def fishers_(self) -> Params:
        return self.moments_.fisher

    def _initialize(self) -> None:
        super()._initialize()
        self.moments_ = MomentSums(weighted=self.merge == "mode", decay=self.alpha_decay)
        self.merged_: Params | None = None
        self._initial_: Params = {}
        self._record_initial()

    def _sample_size(self) -> int:
        return self.fisher_samples if self.merge == "mode" else 0

    def _before_task(self, task: int) -> None:
        self._record_initial()
        if not self.weight_transfer and self.moments_.n_solutions:
            with torch.no_grad():
                for name, p in self.network_.named_parameters():
                    p.copy_(self._initial_[name])
        super()._before_task(task)

    def _observe(self, samples: Batch) -> None:
        self._record_initial()
        super()._observe(samples)

    def _after_task(self, task: int) -> None:
        self.moments_.add(self._solution(), self._fisher())
        self.merged_ = self.moments_.merged()
        super()._after_task(task)

    def _fisher(self) -> Params | None:
        """:math:`F_k` of the open task for mode-IMM (``None`` for mean-IMM)."""
        return self._task_fisher() if self.moments_.weighted else None

    def _task_fisher(self) -> Params:
        """:math:`F_k` of the open task, on its kept samples (zeros without samples)."""
        X, y = self._task_sample_.tensors()
        if X is None:
            return {name: torch.zeros_like(p) for name, p in self.network_.named_parameters()}
        return network_importance(fisher_diagonal, self.network_, X, y)

    def _importance(self, task: int) -> Params | None:
        if self.l2_transfer == 0:
            return None
        return {name: torch.ones_like(p) for name, p in self.network_.named_parameters()
                if p.requires_grad}

    def _consolidate(self, importance: Params) -> None:
        # Only the distance to the latest solution is penalised.
        self.penalty_.consolidate(importance, dict(self.network_.named_parameters()), decay=0.0)

    def _scoring_network(self) -> nn.Module:
        """The merged network. With a task open, the merge includes the open task's
        current solution (and, for mode-IMM, its Fisher so far), computed when a
        prediction asks for it and kept until the estimator trains again."""
        network = super()._scoring_network()
        merged = self.merged_
        if self.current_task_ is not None and self.moments_.n_solutions:
            merged = self.moments_.plus(self._solution(), self._fisher()).merged()
        elif self.current_task_ is not None:
            merged = None
        if merged is not None:
            with torch.no_grad():
                for name, p in network.named_parameters():
                    rows = merged[name].shape[0]
                    p[:rows].copy_(merged[name])
        return network

    def _solution(self) -> Params:
        """Detached clones of the network's parameters, by name."""
        return {n: p.detach().clone() for n, p in self.network_.named_parameters()}

    def _record_initial(self) -> None:
        """Remember the initial values of parameters and of output units added since."""
        for name, p in self.network_.named_parameters():
            start = self._initial_.get(name)
            if start is None:
                self._initial_[name] = p.detach().clone()
            elif start.shape[0] != p.shape[0]:
                self._initial_[name] = torch.cat([start, p.detach()[start.shape[0]:].clone()])
