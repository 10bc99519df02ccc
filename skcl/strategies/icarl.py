"""iCaRL: exemplars chosen by herding, distillation, nearest-mean-of-exemplars prediction."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import nn
from torch.nn import functional as F

from skcl._guard import float64_copy
from skcl.base import Batch, ContinualClassifier
from skcl.components import FrozenSnapshot
from skcl.exemplars import ExemplarSets
from skcl.memory import SampleStore, as_replay, concat_batches, take


class ICaRLClassifier(ContinualClassifier):
    r"""Incremental classifier and representation learning (Rebuffi et al., CVPR 2017).

    "iCaRL: Incremental Classifier and Representation Learning".

    *Training* (Algorithm 3). A task trains on its samples joined by all
    exemplars, with sigmoid outputs and a binary cross-entropy in which the
    current task's classes take their labels and every other class the output
    :math:`q^y(x)` of the network as it was when the previous task ended
    (distillation):

    .. math:: \ell(x, y_i) = -\sum_{y \in C_t} \big[\delta_{y = y_i} \log
              \sigma(g^y(x)) + \delta_{y \neq y_i} \log(1 - \sigma(g^y(x)))\big]
              - \sum_{y \notin C_t} \big[q^y(x) \log \sigma(g^y(x))
              + (1 - q^y(x)) \log(1 - \sigma(g^y(x)))\big]

    summed over output units and averaged over the batch.

    *Exemplars* (Algorithms 4 and 5, :class:`~skcl.exemplars.ExemplarSets`). At
    the end of a task, with :math:`K` = ``memory_size`` and :math:`t` classes
    seen, every set is cut to its first :math:`m = \lfloor K / t \rfloor`
    exemplars and each class of the task gets :math:`m` exemplars chosen by
    herding (:func:`skcl.kernels.herding`) on the L2-normalised features
    :math:`\varphi(x)` of the trunk. A class that comes back in a later task
    is chosen again from its new samples and old exemplars.

    *Prediction* (Algorithm 1): nearest mean of exemplars,

    .. math:: y^* = \arg\min_y \lVert \varphi(x) - \mu_y \rVert, \qquad
              \mu_y = \frac{\frac1{|P_y|} \sum_{p \in P_y} \varphi(p)}
              {\lVert \frac1{|P_y|} \sum_{p \in P_y} \varphi(p) \rVert},

    the decision scores being :math:`-\lVert \varphi(x) - \mu_y \rVert`. A
    class of the open task, which has no exemplars yet, takes its mean over
    the task's samples seen so far; a class whose set emptied (``memory_size``
    below the number of classes) is never predicted. Before any class has a
    mean, the network's outputs answer.

    Parameters
    ----------
    memory_size : int, default=200
        :math:`K`, the most exemplars kept over all classes.
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    exemplars_ : ExemplarSets
        The exemplar sets, one per class, on the estimator's device.

    Examples
    --------
    >>> from skcl import ICaRLClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = ICaRLClassifier(memory_size=100, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> sorted(set(clf.exemplars_.counts().values()))
    [10]
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "memory_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, memory_size: int = 200, hidden_layer_sizes=(256, 256), backbone=None,
                 optimizer="sgd", learning_rate=0.05, momentum=0.9, batch_size=32,
                 max_epochs=5, device="auto", random_state=None, verbose=0, distributed="auto"):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, backbone=backbone,
                         optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                         batch_size=batch_size, max_epochs=max_epochs, device=device,
                         random_state=random_state, verbose=verbose, distributed=distributed)
        self.memory_size = memory_size

    # ------------------------------------------------------------------ training

    def _initialize(self) -> None:
        super()._initialize()
        self.exemplars_ = ExemplarSets(self.memory_size)
        self._task_data_ = SampleStore()
        self._old_network_ = FrozenSnapshot()
        self._distilled_units_ = torch.empty(0, dtype=torch.long, device=self.device_)

    def _observe(self, samples: Batch) -> None:
        self._task_data_.add(samples)
        if self._old_network_.n_units:
            current = {self.output_units_.of(label)
                       for label in self.task_classes_[self.current_task_]}
            old = [u for u in range(self._old_network_.n_units) if u not in current]
            self._distilled_units_ = torch.tensor(old, dtype=torch.long, device=self.device_)
        if len(self.exemplars_):
            samples = concat_batches(samples, as_replay(self.exemplars_.items()))
        super()._observe(samples)

    def _loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        targets = F.one_hot(batch.y, logits.shape[1]).to(logits.dtype)
        if self._distilled_units_.numel():
            q = torch.sigmoid(self._old_network_(batch.X, batch.task))
            units = self._distilled_units_
            targets[:, units] = q[:, units]
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1)
        if batch.weight is not None:
            loss = loss * batch.weight
        return loss.mean()

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        if len(self._task_data_):
            data = self._task_data_.tensors()
            counts = self.exemplars_.counts()
            candidates = {}
            for unit in torch.unique(data.y).tolist():
                rows = take(data, torch.nonzero(data.y == unit).flatten())
                if counts.get(unit):
                    rows = concat_batches(rows, self.exemplars_.exemplars(unit))
                candidates[unit] = (rows, self._features(rows.X))
            self.exemplars_.update(candidates)
        self._task_data_ = SampleStore()
        self._old_network_.refresh(self.network_)

    # ------------------------------------------------------------------ prediction

    def _features(self, X: torch.Tensor, network: nn.Module | None = None) -> torch.Tensor:
        r""":math:`\varphi(x)`: L2-normalised features of ``network`` (``network_`` in eval
        mode by default; a scoring copy reads them in its own float64 precision)."""
        if network is None:
            network = self.network_
            was_training = network.training
            network.eval()
            with torch.no_grad():
                features = network.features(X)
            network.train(was_training)
        else:
            dtype = next(network.parameters()).dtype
            with torch.no_grad():
                features = network.features(X.to(dtype))
        return F.normalize(features, dim=1)

    def class_means(self, network: nn.Module | None = None) -> tuple[np.ndarray, torch.Tensor]:
        r"""Output units that have a mean, and the means :math:`\mu_y` (one row each).

        Exemplar means, plus for classes of the open task that have no
        exemplars yet, the mean over the task's samples seen so far.

        Parameters
        ----------
        network : torch.nn.Module, default=None
            The network whose features are averaged; ``None``: a float64 copy of
            ``network_`` (as predictions use).

        Returns
        -------
        units : ndarray of shape (n_means,)
        means : torch.Tensor of shape (n_means, n_features)
        """
        network = float64_copy(self.network_) if network is None else network
        groups = {unit: self.exemplars_.exemplars(unit).X
                  for unit, count in self.exemplars_.counts().items() if count}
        if len(self._task_data_):
            data = self._task_data_.tensors()
            for unit in torch.unique(data.y).tolist():
                groups.setdefault(unit, data.X[data.y == unit])
        units = np.array(sorted(groups), dtype=np.int64)
        if not units.size:
            return units, torch.empty(0, 0, device=self.device_)
        means = [self._features(groups[u], network).mean(0) for u in units.tolist()]
        return units, F.normalize(torch.stack(means), dim=1)

    def _scoring_key(self) -> tuple:
        return (super()._scoring_key(), self.exemplars_.state_key(), len(self._task_data_))

    def _scoring_network(self) -> nn.Module:
        network = super()._scoring_network()
        units, means = self.class_means(network)
        if not units.size:
            return network
        return NearestMeanOfExemplars(network, torch.from_numpy(units).to(self.device_), means)

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "memory_size": 200}


class NearestMeanOfExemplars(nn.Module):
    r"""iCaRL's classifier: the negative distance of :math:`\varphi(x)` to each class mean.

    Units without a mean score :math:`-\infty`.

    Parameters
    ----------
    network : torch.nn.Module
        Gives the features (``network.features``) and the number of units.
    units : torch.Tensor of shape (n_means,)
        The units that have a mean.
    means : torch.Tensor of shape (n_means, n_features)
        L2-normalised class means :math:`\mu_y`.
    """

    def __init__(self, network: nn.Module, units: torch.Tensor, means: torch.Tensor):
        super().__init__()
        self.network = network
        self.register_buffer("units", units)
        self.register_buffer("means", means)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        distance = torch.cdist(F.normalize(self.network.features(x), dim=1), self.means)
        scores = distance.new_full((x.shape[0], self.network.n_units), float("-inf"))
        scores[:, self.units] = -distance
        return scores
