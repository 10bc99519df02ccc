"""Output units of a ContinualClassifier: how labels and tasks map to output neurons.

A *unit* is one output neuron. Units are only appended: a shared head has one
unit per class (key ``-1``); per-task heads have one unit per (task, class)
pair (key = task id). ``classes_`` stays sorted for sklearn, so scores are
gathered from units into ``classes_`` order, a class scoring the max of its
units.
"""

from __future__ import annotations

import numpy as np
import torch

from skcl._validation import is_numeric_labels


class OutputUnitsMixin:
    """Bookkeeping of classes, tasks and output units, mixed into ContinualClassifier."""

    def _check_classes(self, labels: np.ndarray, classes) -> np.ndarray | None:
        """Raise ``ValueError`` if a call's labels or ``classes`` conflict with the classes
        known so far; change nothing.

        Returns ``classes`` sorted and unique (``None`` when not given).
        """
        known = getattr(self, "classes_", None)
        fixed = self._fixed_classes_
        if classes is not None:
            classes = np.unique(np.asarray(classes))
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
            _check_same_kind(classes, known)
            known = classes if known is None else np.unique(np.concatenate([known, classes]))
            fixed = True
        if not fixed:
            _check_same_kind(labels, known)
            return classes
        _check_same_kind(labels[:0], known)
        unseen = np.setdiff1d(labels, known)
        if unseen.size:
            raise ValueError(
                f"y contains classes outside the fixed class set `classes`: {unseen.tolist()!r}"
            )
        return classes

    def _grow_classes(self, labels: np.ndarray, classes: np.ndarray | None) -> None:
        """Add a task's labels to ``classes_`` or, given ``classes``, fix the class set.

        The inputs were checked by :meth:`_check_classes`.
        """
        if classes is not None:
            self._fixed_classes_ = True
            self._add_classes(classes)
        if not self._fixed_classes_:
            self._add_classes(labels)

    def _add_classes(self, labels: np.ndarray) -> None:
        known = getattr(self, "classes_", None)
        if known is None:
            self.classes_ = labels
            return
        _check_same_kind(labels, known)
        self.classes_ = np.unique(np.concatenate([known, labels]))

    def _register_task(self, task: int, labels: np.ndarray) -> bool:
        """Record that ``task`` shows ``labels`` (sorted, unique); add units for new pairs.

        Returns whether units were added.
        """
        if task not in self.task_classes_:
            self.tasks_seen_.append(task)
            self.task_classes_[task] = labels
        else:
            self.task_classes_[task] = np.union1d(self.task_classes_[task], labels)
        key = task if self._task_specific_units else -1
        wanted = self.classes_ if self._fixed_classes_ and key == -1 else labels
        new = [label for label in wanted if (key, label) not in self._units_]
        if not new:
            return False
        for label in new:
            self._units_[(key, label)] = len(self._unit_labels_)
            self._unit_labels_.append(label)
        self.network_.add_units(task=key, n_new=len(new), seed=self._next_seed())
        self._refresh_unit_maps()
        return True

    def _refresh_unit_maps(self) -> None:
        unit_class = np.searchsorted(self.classes_, np.asarray(self._unit_labels_))
        self._unit_class_ = torch.from_numpy(unit_class).to(self.device_)
        one_to_one = len(unit_class) == len(self.classes_)
        self._class_unit_ = (
            torch.from_numpy(np.argsort(unit_class)).to(self.device_) if one_to_one else None
        )

    def _encode(self, task: int, labels: np.ndarray, inverse: np.ndarray) -> np.ndarray:
        """Unit index of every sample of a task, from its unique labels and their inverse."""
        key = task if self._task_specific_units else -1
        mapped = np.array([self._units_[(key, label)] for label in labels], dtype=np.int64)
        return mapped[inverse]

    def _class_scores(self, unit_scores: torch.Tensor) -> torch.Tensor:
        """Unit scores to class scores: a class scores the max of its units."""
        if self._class_unit_ is not None:
            return unit_scores.index_select(1, self._class_unit_)
        n = unit_scores.shape[0]
        out = unit_scores.new_full((n, len(self.classes_)), float("-inf"))
        index = self._unit_class_.unsqueeze(0).expand(n, -1)
        return out.scatter_reduce(1, index, unit_scores, reduce="amax")


def _check_same_kind(labels: np.ndarray, known: np.ndarray | None) -> None:
    """Labels must be numbers when the known classes are, strings when they are strings."""
    if known is not None and is_numeric_labels(labels) != is_numeric_labels(known):
        raise ValueError(
            f"labels {labels.tolist()!r} mix numbers and strings with the classes seen "
            f"so far {known.tolist()!r}"
        )
