"""Output units of a ContinualClassifier: how labels and tasks map to output neurons.

A *unit* is one output neuron. Units are only appended: a shared head has one
unit per class (key ``-1``); per-task heads have one unit per (task, class)
pair (key = task id). ``classes_`` stays sorted for sklearn, so scores are
gathered from units into ``classes_`` order, a class scoring the max of its
units.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from skcl._validation import check_same_kind

SHARED = -1


class OutputUnits:
    """The classes seen, the tasks that showed them, and the output unit of each label.

    An estimator holds one (``output_units_``) and asks it which units a
    task's labels need, which unit a label is, and how unit scores become
    class scores. It never touches the network: the estimator adds the units
    it is told to.

    Parameters
    ----------
    per_task : bool
        One unit per (task, class) pair (per-task heads) instead of one per class.
    device : torch.device, default=cpu
        Where the unit/class maps live (the network's device).

    Examples
    --------
    >>> import numpy as np
    >>> from skcl._units import OutputUnits
    >>> units = OutputUnits(per_task=False)
    >>> units.check(np.array([3, 1]), None)
    >>> units.add_task(0, np.array([1, 3]), None)
    (-1, 2)
    >>> units.encode(0, np.array([1, 3]), np.array([1, 0, 1])).tolist()
    [1, 0, 1]
    >>> units.classes.tolist()
    [1, 3]
    """

    def __init__(self, per_task: bool, device: torch.device | None = None):
        self.per_task = per_task
        self.device = torch.device("cpu") if device is None else device
        self.classes: np.ndarray | None = None
        self.fixed = False
        self.task_classes: dict[int, np.ndarray] = {}
        self.tasks: list[int] = []
        self.unit: dict[tuple[int, object], int] = {}
        self.labels: list = []
        self.unit_class: torch.Tensor | None = None
        self.class_unit: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __deepcopy__(self, memo: dict) -> OutputUnits:
        # Arrays, tensors and labels are replaced, never written in place: a copy shares
        # them and copies only the containers, so checkpoints stay cheap with many classes.
        new = copy.copy(self)
        new.task_classes, new.tasks = dict(self.task_classes), list(self.tasks)
        new.unit, new.labels = dict(self.unit), list(self.labels)
        memo[id(self)] = new
        return new

    def key(self, task: int) -> int:
        """The head a task's units live in: the task itself, or the shared head."""
        return task if self.per_task else SHARED

    def check(self, labels: np.ndarray, classes: np.ndarray | None) -> None:
        """Raise ``ValueError`` if a call's labels or ``classes`` conflict with the classes
        known so far; change nothing. ``classes`` is sorted and unique."""
        known, fixed = self.classes, self.fixed
        if classes is not None:
            if fixed and not np.array_equal(classes, known):
                raise ValueError(
                    f"classes={classes.tolist()!r} is not the class set fixed on an earlier "
                    f"call, {known.tolist()!r}"
                )
            if known is not None and np.setdiff1d(known, classes).size:
                raise ValueError(
                    f"classes={classes.tolist()!r} misses classes already seen: "
                    f"{np.setdiff1d(known, classes).tolist()!r}"
                )
            check_same_kind(classes, known, "classes")
            known = classes if known is None else np.unique(np.concatenate([known, classes]))
            fixed = True
        check_same_kind(labels, known, "y")
        if fixed:
            unseen = np.setdiff1d(labels, known)
            if unseen.size:
                raise ValueError(
                    f"y contains classes outside the fixed class set `classes`: "
                    f"{unseen.tolist()!r}"
                )

    def add_task(self, task: int, labels: np.ndarray,
                 classes: np.ndarray | None) -> tuple[int, int]:
        """Record that ``task`` shows ``labels`` (sorted, unique; checked by :meth:`check`).

        Given ``classes``, the class set becomes fixed. Returns ``(key, n_new)``:
        the head and number of output units the network must append.
        """
        if classes is not None:
            self.fixed = True
            self._add_classes(classes)
        if not self.fixed:
            self._add_classes(labels)
        if task not in self.task_classes:
            self.tasks.append(task)
            self.task_classes[task] = labels
        else:
            self.task_classes[task] = np.union1d(self.task_classes[task], labels)
        key = self.key(task)
        wanted = self.classes if self.fixed and key == SHARED else labels
        new = [label for label in wanted if (key, label) not in self.unit]
        for label in new:
            self.unit[(key, label)] = len(self.labels)
            self.labels.append(label)
        if new:
            self._refresh()
        return key, len(new)

    def encode(self, task: int, labels: np.ndarray, inverse: np.ndarray) -> np.ndarray:
        """Unit index of every sample of a task, from its unique labels and their inverse."""
        key = self.key(task)
        mapped = np.array([self.unit[(key, label)] for label in labels], dtype=np.int64)
        return mapped[inverse]

    def of(self, label, task: int | None = None) -> int:
        """The unit of ``label`` (in ``task``'s head when heads are per task)."""
        return self.unit[(SHARED if task is None else self.key(task), label)]

    def unit_tasks(self) -> np.ndarray:
        """The task of each unit, in unit order (heads per task only)."""
        if not self.per_task:
            raise ValueError("units are shared by every task: they have no task of their own")
        tasks = np.empty(len(self.labels), dtype=np.int64)
        for (key, _), unit in self.unit.items():
            tasks[unit] = key
        return tasks

    def class_scores(self, unit_scores: torch.Tensor) -> torch.Tensor:
        """Unit scores to class scores (columns following ``classes``): a class scores the
        max of its units."""
        unit_class, class_unit = self.unit_class, self.class_unit
        if unit_class.device != unit_scores.device:
            unit_class = unit_class.to(unit_scores.device)
            class_unit = None if class_unit is None else class_unit.to(unit_scores.device)
        if class_unit is not None:
            return unit_scores.index_select(1, class_unit)
        n = unit_scores.shape[0]
        out = unit_scores.new_full((n, len(self.classes)), float("-inf"))
        index = unit_class.unsqueeze(0).expand(n, -1)
        return out.scatter_reduce(1, index, unit_scores, reduce="amax")

    def _add_classes(self, labels: np.ndarray) -> None:
        if self.classes is None:
            self.classes = labels
        else:
            self.classes = np.unique(np.concatenate([self.classes, labels]))

    def _refresh(self) -> None:
        device = self.device
        unit_class = np.searchsorted(self.classes, np.asarray(self.labels))
        self.unit_class = torch.from_numpy(unit_class).to(device)
        one_to_one = len(unit_class) == len(self.classes)
        self.class_unit = (
            torch.from_numpy(np.argsort(unit_class)).to(device) if one_to_one else None
        )
