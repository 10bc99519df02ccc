"""What PackNet, Piggyback and SupSup share: per-task heads, predictions from binary
masks, and task inference when predictions come without a task id; and what every method
of the masks-and-gates family shares: the ``task_inference`` parameter."""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
from torch import nn

from skcl._call import inferred_tasks
from skcl._guard import float64_copy
from skcl._validation import check_task_ids
from skcl.base import ContinualClassifier
from skcl.nn import (
    ScoreMaskLinear,
    Superposition,
    TaskHeads,
    TaskMaskLinear,
    check_task_inference,
    least,
    softmax_entropy,
)
from skcl.strategies._inferring import InfersTasks


def layer_factory(cls: type, **kwargs) -> functools.partial:
    """``cls`` with ``kwargs`` bound, as the layer factory of a trunk: picklable (networks
    keep their trunk factory) and named after ``cls`` in error messages."""
    factory = functools.partial(cls, **kwargs)
    factory.__name__ = cls.__name__
    return factory


class EntropyTaskInference(nn.Module):
    """A per-task network that, given no task, infers each sample's task by confidence.

    With a task (one id, or one per sample), the network's own logits. Without
    one, every task's head scores the sample under that task's masks, and the
    task whose softmax has the lowest entropy answers: the logits are that
    task's (``-inf`` on other tasks' units).

    Parameters
    ----------
    network : torch.nn.Module
        Follows :mod:`skcl.nn`'s contract and has a ``unit_task`` buffer (the
        task of each unit).
    per : {'sample', 'batch'}, default='sample'
        Infer a task per row, or one for all the rows of a call
        (:func:`~skcl.nn.least`).
    """

    def __init__(self, network: nn.Module, per: str = "sample"):
        super().__init__()
        self.network = network
        self.per = check_task_inference(per)

    def tasks(self) -> torch.Tensor:
        """The tasks the network has units for, sorted."""
        return torch.unique(self.network.unit_task)

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """The task of each row of ``x``."""
        tasks = self.tasks()
        scores = torch.stack([softmax_entropy(self.network(x, int(t))) for t in tasks])
        return tasks[least(scores, self.per)]

    def forward(self, x: torch.Tensor, task=None) -> torch.Tensor:
        return self.network(x, self.infer(x) if task is None else task)


class OneShotTaskInference(EntropyTaskInference):
    r"""Task inference by SupSup's "One-Shot" rule (Wortsman et al., NeurIPS 2020).

    Every sample runs once through the superposition of all tasks' masks with
    weights :math:`\alpha_i = 1/k`; its task is
    :math:`\arg\max_i \left(-\partial \mathcal{H}(p(\alpha)) / \partial \alpha_i\right)`,
    with :math:`\mathcal{H}` the entropy of the output. One row of
    :math:`\alpha` per sample (:class:`~skcl.nn.Superposition`) keeps each
    sample's gradient its own. Per batch (``per='batch'``), as in the paper,
    one :math:`\alpha` is shared by the rows and :math:`\mathcal{H}` is
    summed over them; its gradient is the sum of the rows' gradients (every
    row's :math:`\alpha` is :math:`1/k`), so the task is that of the lowest
    summed gradient (:func:`~skcl.nn.least`). The gradient is taken inside
    ``forward`` with autograd enabled locally, with respect to :math:`\alpha`
    only: the network's tensors stay untouched.
    """

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        tasks = self.tasks()
        with torch.enable_grad():
            alpha = x.new_full((x.shape[0], len(tasks)), 1.0 / len(tasks)).requires_grad_()
            logits = self.network(x, Superposition(alpha, tuple(tasks.tolist())))
            (grad,) = torch.autograd.grad(softmax_entropy(logits).sum(), alpha)
        return tasks[least(grad.T, self.per)]


class MaskedTaskClassifier(InfersTasks, ContinualClassifier):
    """Base of the mask methods: a mask and a head per task, and task inference.

    Predictions read a float64 copy of the network in which every task's
    scores are already its binary mask (thresholded in the training dtype,
    so a task still open predicts as it will once closed).
    """

    _task_specific_units = True
    _parameter_constraints: dict = {**ContinualClassifier._parameter_constraints,
                                    **InfersTasks._parameter_constraints}

    def _inference(self) -> type[EntropyTaskInference]:
        """The :class:`EntropyTaskInference` (or subclass) the method predicts through."""
        return EntropyTaskInference

    def _scoring_network(self) -> nn.Module:
        with torch.no_grad():
            network = copy.deepcopy(self.network_)
        for layer in network.modules():
            if isinstance(layer, ScoreMaskLinear):
                layer.freeze_scores()
        return self._inference()(float64_copy(network), self.task_inference)

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        if isinstance(self.network_, TaskHeads):
            self.network_.own(task)

    def _shared_with_checkpoint(self):
        # A call trains the open task's head (and the trunk's weights or the open task's
        # scores); the other tasks' heads stay as they are, and a stored mask is replaced
        # (set_mask), never changed in place.
        network = getattr(self, "network_", None)
        if network is None:
            return ()
        heads = (network.parts_except(self.current_task_) if isinstance(network, TaskHeads)
                 else [])
        return [*heads, *(part for layer in self.masked_layers()
                          for part in layer.shared_with_checkpoint())]

    def _masked_trunk(self, factory) -> nn.Module:
        """The MLP trunk built with ``factory``'s layers (picklable, as ``self._make_trunk``)."""
        return self._make_trunk(linear=factory)

    def masked_layers(self) -> list[TaskMaskLinear]:
        """The network's masked layers, input first (in the trunks of a
        :class:`~skcl.nn.TaskHeads`: its per-task heads are not walked)."""
        network = self.network_
        root = network.trunks if isinstance(network, TaskHeads) else network
        return [m for m in root.modules() if isinstance(m, TaskMaskLinear)]

    def infer_task(self, X) -> np.ndarray:
        """The task the method infers for each sample when predicting without ``task_id``.

        With ``task_inference='batch'`` every row of a chunk of at most 8192
        rows gets the same task.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        task_ids : ndarray of shape (n_samples,)
        """
        return inferred_tasks(self, X)

    def task_inference_score(self, X, task_id) -> float:
        """Fraction of samples whose inferred task (:meth:`infer_task`) is ``task_id``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        task_id : int or array-like of shape (n_samples,)
            The true task of the samples.

        Returns
        -------
        accuracy : float
        """
        inferred = self.infer_task(X)
        return float(np.mean(inferred == check_task_ids(task_id, inferred.shape[0])))
