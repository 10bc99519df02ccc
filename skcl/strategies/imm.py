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


def _merge(solutions: Sequence[Params], weights: Sequence[Params] | None) -> Params:
    """Element-wise weighted mean of the solutions (uniform weights when ``None``).

    A solution may have fewer output units (rows) than a later one: each row is
    averaged over the solutions that have it. Where every weight of an element
    is zero, the uniform mean is taken.
    """
    merged = {}
    for name in solutions[-1]:
        rows = max(s[name].shape[0] for s in solutions if name in s)
        shape = (rows, *solutions[-1][name].shape[1:])
        like = solutions[-1][name]
        total, count = like.new_zeros(shape), like.new_zeros(shape)
        weighted, weight_sum = like.new_zeros(shape), like.new_zeros(shape)
        for k, solution in enumerate(solutions):
            if name not in solution:
                continue
            theta = solution[name]
            n = theta.shape[0]
            total[:n] += theta
            count[:n] += 1
            if weights is not None:
                w = weights[k][name]
                weighted[:n] += w * theta
                weight_sum[:n] += w
        mean = total / count
        if weights is None:
            merged[name] = mean
        else:
            merged[name] = torch.where(weight_sum > 0, weighted / weight_sum, mean)
    return merged


def mean_imm(solutions: Sequence[Params]) -> Params:
    r"""Mean-IMM (Lee et al., NeurIPS 2017, Eq. 3): :math:`\theta_{1:K} = \frac1K \sum_k \theta_k`.

    Parameters
    ----------
    solutions : sequence of dict of str to Tensor
        The parameters :math:`\theta_k` at the end of each task, by name.

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
    return _merge(solutions, None)


def mode_imm(solutions: Sequence[Params], fishers: Sequence[Params]) -> Params:
    r"""Mode-IMM (Lee et al., NeurIPS 2017, Eq. 4-5) with diagonal Fisher information.

    .. math:: \theta_{1:K} = \Big(\sum_k F_k\Big)^{-1} \sum_k F_k \theta_k

    element-wise: the mode of the product of the tasks' Laplace-approximated
    posteriors (uniform mixing ratios :math:`\alpha_k` cancel out). Elements
    no task gives Fisher information take the mean.

    Parameters
    ----------
    solutions : sequence of dict of str to Tensor
        The parameters :math:`\theta_k` at the end of each task, by name.
    fishers : sequence of dict of str to Tensor
        The diagonal Fisher :math:`F_k` of each task, shaped like its solution.

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
    return _merge(solutions, fishers)


class IMMClassifier(ImportancePenalty):
    r"""Incremental moment matching (Lee et al., NeurIPS 2017).

    Each task :math:`k` is learned in turn; its solution :math:`\theta_k` and
    diagonal Fisher :math:`F_k` (exact per-sample empirical Fisher,
    :func:`skcl.kernels.fisher_diagonal`, on up to ``fisher_samples`` samples)
    are kept, and when the task ends the tasks' Gaussian posteriors are merged
    into the network that predicts:

    - ``merge='mean'`` (mean-IMM): :math:`\theta_{1:K} = \frac1K \sum_k \theta_k`;
    - ``merge='mode'`` (mode-IMM): :math:`\theta_{1:K} = (\sum_k F_k)^{-1} \sum_k F_k \theta_k`.

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
    later task are merged over the solutions that have them.

    Parameters
    ----------
    merge : {'mean', 'mode'}, default='mean'
        Mean-IMM or mode-IMM.
    weight_transfer : bool, default=True
        Start each task from the previous solution (else from the initial weights).
    l2_transfer : float, default=0.0
        :math:`\lambda` of L2-transfer; 0 disables it.
    fisher_samples : int, default=500
        Samples of each task its Fisher is computed on (a reservoir sample).
    clip_stiffness : bool, default=True
        Clip the L2-transfer curvature :math:`2\lambda` to :math:`(1 + \mu) / \eta`
        under SGD (see :mod:`skcl.strategies.importance`).
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    solutions_ : list of dict of str to Tensor
        :math:`\theta_k` of every task ended.
    fishers_ : list of dict of str to Tensor
        :math:`F_k` of every task ended.
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
    >>> len(clf.solutions_), clf.score(stream[0].X_test, stream[0].y_test) > 0.5
    (3, True)
    """

    _strength = ("l2_transfer", 2.0)
    _parameter_constraints: dict = {
        **ImportancePenalty._parameter_constraints,
        "merge": [StrOptions({"mean", "mode"})],
        "weight_transfer": ["boolean"],
        "l2_transfer": [Interval(Real, 0, None, closed="left")],
        "fisher_samples": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        merge: str = "mean",
        weight_transfer: bool = True,
        l2_transfer: float = 0.0,
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
    ) -> None:
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, backbone=backbone, optimizer=optimizer,
            learning_rate=learning_rate, momentum=momentum, batch_size=batch_size,
            max_epochs=max_epochs, device=device, random_state=random_state, verbose=verbose,
        )
        self.merge = merge
        self.weight_transfer = weight_transfer
        self.l2_transfer = l2_transfer
        self.fisher_samples = fisher_samples
        self.clip_stiffness = clip_stiffness

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "fisher_samples": 64}

    def _initialize(self) -> None:
        super()._initialize()
        self.solutions_: list[Params] = []
        self.fishers_: list[Params] = []
        self.merged_: Params | None = None
        self._initial_: Params = {}
        self._record_initial()

    def _sample_size(self) -> int:
        return self.fisher_samples

    def _before_task(self, task: int) -> None:
        self._record_initial()
        if not self.weight_transfer and self.solutions_:
            with torch.no_grad():
                for name, p in self.network_.named_parameters():
                    p.copy_(self._initial_[name])
        super()._before_task(task)

    def _observe(self, samples: Batch) -> None:
        self._record_initial()
        super()._observe(samples)

    def _after_task(self, task: int) -> None:
        self.solutions_.append(self._solution())
        self.fishers_.append(self._task_fisher())
        self.merged_ = self._merged(self.solutions_, self.fishers_)
        super()._after_task(task)

    def _task_fisher(self) -> Params:
        """:math:`F_k` of the open task, on its kept samples (zeros without samples)."""
        X, y = self._task_sample_.tensors()
        if X is None:
            return {name: torch.zeros_like(p) for name, p in self.network_.named_parameters()}
        return network_importance(fisher_diagonal, self.network_, X, y)

    def _merged(self, solutions: list[Params], fishers: list[Params]) -> Params:
        if self.merge == "mode":
            return mode_imm(solutions, fishers)
        return mean_imm(solutions)

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
        if self.current_task_ is not None and self.solutions_:
            fishers = [*self.fishers_, self._task_fisher()] if self.merge == "mode" else []
            merged = self._merged([*self.solutions_, self._solution()], fishers)
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
