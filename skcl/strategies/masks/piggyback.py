"""Piggyback: a fixed backbone and a learned binary weight mask per task."""

from __future__ import annotations

import functools
from collections.abc import Callable
from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from skcl.nn import ScoreMaskLinear, TaskHeads
from skcl.strategies.masks._common import MaskedTaskClassifier, layer_factory


class PiggybackClassifier(MaskedTaskClassifier):
    r"""Piggyback (Mallya, Davis & Lazebnik, ECCV 2018): binary masks over a fixed backbone.

    The paper masks a network pretrained on ImageNet; tabular data has no such
    network, so the first task trains the backbone (every weight and bias of
    the trunk, :class:`~skcl.nn.ScoreMaskLinear` layers, and its head) and
    the backbone is then frozen for good. Every later task :math:`t` learns,
    for each weight :math:`W`, a real-valued mask weight :math:`m_t`, started
    at ``mask_init`` (above the threshold: the mask starts full) and
    thresholded in the forward pass,

    .. math:: M_t = [m_t > \tau], \qquad y = x (W \odot M_t)^\top + b ,

    with the gradient passed straight through the threshold to :math:`m_t`;
    its own output head is trained with it. When the task ends its mask
    weights become its binary mask (a task trained again resumes from it, its
    mask weights at :math:`\pm` ``mask_init``). The backbone's tensors are bit-identical
    after every task, and so are predictions of any task given its
    ``task_id``.

    Predictions without ``task_id`` (class-incremental): each task's head
    scores the sample under that task's mask, and the task whose softmax has
    the lowest entropy answers, per sample or, with ``task_inference='batch'``,
    for all the rows of the call (entropy-based task inference,
    :meth:`infer_task`); classes outside that task score ``-inf``.

    Parameters
    ----------
    threshold : float, default=5e-3
        :math:`\tau`, the paper's.
    mask_init : float, default=1e-2
        Initial value of every real-valued mask weight, the paper's.
    task_inference : {'sample', 'batch'}, default='sample'
        Granularity of the entropy task inference without ``task_id``
        (:mod:`skcl.nn.inference`): ``'sample'`` infers each row's task on
        its own; ``'batch'`` infers one task for all the rows of a predict
        call (its chunks of at most 8192 rows), the task of the lowest entropy
        summed over the rows. ``'batch'`` assumes that the rows of one call
        are one task's (a test set scored task by task); on rows of mixed
        tasks every row gets the same task.
    hidden_layer_sizes, optimizer, learning_rate, momentum, batch_size, max_epochs, \
device, random_state, verbose
        As in :class:`~skcl.base.ContinualClassifier`. A ``backbone`` cannot be
        used (the trunk is built from masked layers). SGD with or without
        momentum and Adam are supported: after the first task the optimizer
        holds only the open task's mask weights and head, so nothing frozen
        can move.

    Attributes
    ----------
    backbone_task_ : int
        The task that trained the backbone.

    Examples
    --------
    >>> from skcl import PiggybackClassifier
    >>> from skcl.datasets import load_permuted_digits
    >>> stream = load_permuted_digits(n_experiences=3)
    >>> clf = PiggybackClassifier(hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> [sorted(layer.mask_tasks) for layer in clf.masked_layers()]
    [[1, 2]]
    """

    _parameter_constraints: dict = {
        **MaskedTaskClassifier._parameter_constraints,
        "threshold": [Interval(Real, None, None, closed="neither")],
        "mask_init": [Interval(Real, None, None, closed="neither")],
    }

    def __init__(
        self,
        threshold: float = 5e-3,
        mask_init: float = 1e-2,
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
        self.threshold = threshold
        self.mask_init = mask_init

    def _make_network(self) -> nn.Module:
        factory = layer_factory(ScoreMaskLinear, threshold=self.threshold)
        return TaskHeads(functools.partial(self._masked_trunk, factory), self.n_features_in_)

    def _initialize(self) -> None:
        super()._initialize()
        self.backbone_task_: int | None = None

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        if self.backbone_task_ is None:
            self.backbone_task_ = task
        elif task != self.backbone_task_:
            for layer in self.masked_layers():
                if str(task) not in layer.scores:
                    # a task seen before resumes from its binary mask
                    mask = layer.stored_mask(task)
                    full = torch.ones_like(layer.weight, dtype=torch.bool)
                    layer.add_scores(task, torch.where(full if mask is None else mask,
                                                       self.mask_init, -self.mask_init))

    def _trainable_parameters(self):
        task = self.current_task_
        yield from self.network_.heads[str(task)].parameters()
        trains_backbone = task == self.backbone_task_ and len(self.tasks_seen_) == 1
        for layer in self.masked_layers():
            if trains_backbone:
                yield from (p for p in (layer.weight, layer.bias) if p is not None)
            elif str(task) in layer.scores:
                yield layer.scores[str(task)]

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        for layer in self.masked_layers():
            layer.freeze_scores(task)
        self._parameters_changed()
