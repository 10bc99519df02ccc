"""The ``task_inference`` parameter of estimators that infer the task when predicting
without task ids (masks, gates, columns, hypernetworks)."""

from __future__ import annotations

from sklearn.utils._param_validation import StrOptions
from torch import nn

from skcl.nn.inference import TASK_INFERENCE, check_task_inference


class InfersTasks:
    """Mixin of the estimators that infer a task per sample or per call
    (:mod:`skcl.nn.inference`): the ``task_inference`` parameter.

    It is checked when the network is built (the first ``fit`` or
    ``partial_fit``) and at every prediction, and it is part of the scoring
    view's key, so ``set_params(task_inference=...)`` on a fitted estimator
    takes effect at the next prediction. By default the scoring network is
    the base class's with its ``task_inference`` attribute set
    (:meth:`_inferring`; :class:`~skcl.nn.GatedHeads`, :class:`~skcl.nn.PickHeads`
    and :class:`~skcl.nn.ColumnNetwork` read it).
    """

    _parameter_constraints: dict = {"task_inference": [StrOptions(set(TASK_INFERENCE))]}

    def _initialize(self) -> None:
        check_task_inference(self.task_inference)
        super()._initialize()

    def _scoring_key(self) -> tuple:
        return (super()._scoring_key(), check_task_inference(self.task_inference))

    def _scoring_network(self) -> nn.Module:
        return self._inferring(super()._scoring_network())

    def _inferring(self, network: nn.Module) -> nn.Module:
        """``network`` (a copy that predicts) set to infer tasks at ``task_inference``."""
        network.task_inference = check_task_inference(self.task_inference)
        return network
