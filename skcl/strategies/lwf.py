r"""Learning without forgetting: distillation of the previous model's outputs on new data."""

from __future__ import annotations

from collections.abc import Callable
from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import nn
from torch.nn import functional as F

from skcl.base import Batch, ContinualClassifier
from skcl.components import FrozenSnapshot


class LwFClassifier(ContinualClassifier):
    r"""Learning without forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017).

    When a task ends, a frozen copy of the network is kept
    (:class:`~skcl.components.FrozenSnapshot`). While the next
    tasks train, the copy's outputs on the *new* data are the soft targets of
    the units that existed then (the old classes' outputs, all classes seen so
    far when the classes are shared across tasks):

    .. math:: \mathcal{L} = \mathcal{L}_{CE}(y, \hat y)
              + \alpha \, \mathcal{L}_{old}, \qquad
              \mathcal{L}_{old} = -\sum_{j \in \text{old}} y'_{o,j} \log \hat y'_{o,j},

    with :math:`y'_o = \mathrm{softmax}(z_{prev} / T)` and
    :math:`\hat y'_o = \mathrm{softmax}(z / T)` over the old units, :math:`z`
    and :math:`z_{prev}` the current and the frozen network's logits. No sample
    of an old task is kept: only the previous model. The paper's warm-up step
    (training the new units alone before the whole network) is not done; the
    new units simply train with the rest.

    Parameters
    ----------
    alpha : float, default=2.0
        :math:`\alpha` (the paper's :math:`\lambda_o`), weight of the
        distillation loss. The paper uses 1; 2 had the best validation ACC
        over whole streams of split-digits (task-incremental) and
        permuted-digits among 0.25-4 (``benchmarks/tune_defaults.py``; no test
        data), and is checked on held-out streams (:mod:`skcl.heldout`). The
        loss is a cross-entropy of softmax outputs whatever the data, so
        :math:`\alpha` already means the same on any data set.
    T : float, default=2.0
        Temperature :math:`T` of the soft targets (the paper's).
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    previous_network_ : torch.nn.Module or None
        A frozen copy of the network as the last task ended, with the units it
        had trained (``None`` before the first task ends).
    n_old_units_ : int
        Its number of output units, the units distilled.

    Examples
    --------
    >>> from skcl import LwFClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = LwFClassifier(alpha=1.0, T=2.0, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.n_old_units_
    8
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "alpha": [Interval(Real, 0, None, closed="left")],
        "T": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        alpha: float = 2.0,
        T: float = 2.0,
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
        self.alpha = alpha
        self.T = T

    @property
    def previous_network_(self) -> nn.Module | None:
        return self._previous_.network

    @property
    def n_old_units_(self) -> int:
        return self._previous_.n_units

    def _initialize(self) -> None:
        super()._initialize()
        self._previous_ = FrozenSnapshot()

    def _loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        loss = super()._loss(logits, batch)
        n = self._previous_.n_units
        if n == 0:
            return loss
        targets = F.softmax(self._previous_(batch.X, batch.task) / self.T, dim=1)
        log_probs = F.log_softmax(logits[:, :n] / self.T, dim=1)
        distill = -(targets * log_probs).sum(dim=1)
        if batch.weight is not None:
            distill = distill * batch.weight
        return loss + self.alpha * distill.mean()

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        self._previous_.refresh(self.network_)
