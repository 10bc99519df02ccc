"""Architectural methods: parameters set apart per task."""

from __future__ import annotations

from skcl.base import ContinualClassifier
from skcl.nn import TaskHeads


class _PerTaskParts(ContinualClassifier):
    """A :class:`~skcl.nn.TaskHeads` network whose task trains only its own parts.

    The optimizer holds the shared trunk (if any) and the open task's head
    (and trunk); a call's checkpoint shares every other task's parts instead
    of copying them, and a task that opens again gets copies of its parts
    before training them (:meth:`~skcl.nn.TaskHeads.own`). A task's training
    thus costs the same however many tasks came before it.
    """

    _task_specific_units = True

    def _trainable_parameters(self):
        network = self.network_
        if network.shared_trunk:
            yield from network.trunks["shared"].parameters()
        for part in network.task_parts(self.current_task_):
            yield from part.parameters()

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self.network_.own(task)

    def _shared_with_checkpoint(self):
        network = getattr(self, "network_", None)
        if not isinstance(network, TaskHeads):
            return ()
        return network.parts_except(self.current_task_)


class MultiHeadClassifier(_PerTaskParts):
    """A shared trunk with one output head per task (multi-head).

    Training on task ``t`` updates the trunk and head ``t`` only, with a
    cross-entropy over that head's classes. With ``task_id`` at predict time
    only that task's head answers (task-incremental). Without it
    (class-incremental) the heads' logits are joined and the label with the
    highest logit over all heads wins ("union of heads"); heads are trained
    separately, so their logits are not calibrated against each other and this
    is a weak class-incremental predictor by design.

    Parameters are those of :class:`~skcl.base.ContinualClassifier`.

    Examples
    --------
    >>> from skcl import MultiHeadClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = MultiHeadClassifier(hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> sorted(int(k) for k in clf.network_.heads)
    [0, 1, 2, 3, 4]
    """

    def _make_network(self):
        return TaskHeads(self._make_trunk, self.n_features_in_, shared_trunk=True)
