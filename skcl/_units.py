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

    def _grow_classes(self, labels: np.ndarray, classes) -> None:
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            known = getattr(self, "classes_", None)
            if self._fixed_classes_ and not np.array_equal(classes, known):
                raise ValueError(
                    f"classes={classes.tolist()!r} is not the class set fixed on an earlier "
                    f"call, {known.tolist()!r}"
                )
            if known is not None and np.setdiff1d(known, classes).size:
                raise ValueError(
                    f"classes={classes.tolist()!r} misses classes already seen: "
                    f"{np.setdiff1d(known, classes).tolist()!r}"
                )
            self._fixed_classes_ = True
            self._add_classes(classes)
        if not self._fixed_classes_:
            self._add_classes(labels)
            return
        self._add_classes(labels[:0])
        unseen = np.setdiff1d(labels, self.classes_)
        if unseen.size:
            raise ValueError(
                f"y contains classes outside the fixed class set `classes`: {unseen.tolist()!r}"
            )

    def _add_classes(self, labels: np.ndarray) -> None:
        known = getattr(self, "classes_", None)
        if known is None:
            self.classes_ = labels
            return
        if is_numeric_labels(labels) != is_numeric_labels(known):
            raise ValueError(
                f"labels {labels.tolist()!r} mix numbers and strings with the classes seen "
                f"so far {known.tolist()!r}"
            )
        self.classes_ = np.unique(np.concatenate([known, labels]))

    def _register_tasks(self, groups) -> bool:
        """Record each group's task and classes, add output units for new pairs.

        Returns whether units were added.
        """
        new_units: dict[int, list] = {}
        for task, _, labels, _ in groups:
            if task not in self.task_classes_:
                self.tasks_seen_.append(task)
                self.task_classes_[task] = labels
            else:
                self.task_classes_[task] = np.union1d(self.task_classes_[task], labels)
            key = task if self._task_specific_units else -1
            wanted = self.classes_ if self._fixed_classes_ and key == -1 else labels
            for label in wanted:
                if (key, label) not in self._units_ and label not in new_units.get(key, []):
                    new_units.setdefault(key, []).append(label)
        for key, labels in new_units.items():
            for label in labels:
                self._units_[(key, label)] = len(self._unit_labels_)
                self._unit_labels_.append(label)
            self.network_.add_units(task=key, n_new=len(labels), seed=self._next_seed())
        if new_units:
            self._refresh_unit_maps()
        return bool(new_units)

    def _refresh_unit_maps(self) -> None:
        unit_class = np.searchsorted(self.classes_, np.asarray(self._unit_labels_))
        self._unit_class_ = torch.from_numpy(unit_class).to(self.device_)
        one_to_one = len(unit_class) == len(self.classes_)
        self._class_unit_ = (
            torch.from_numpy(np.argsort(unit_class)).to(self.device_) if one_to_one else None
        )

    def _encode(self, groups, n_samples: int) -> np.ndarray:
        """Unit index of every sample, from each task group's unique labels and inverse."""
        units = np.empty(n_samples, dtype=np.int64)
        for task, rows, labels, inverse in groups:
            key = task if self._task_specific_units else -1
            mapped = np.array([self._units_[(key, label)] for label in labels], dtype=np.int64)
            if rows is None:
                units[:] = mapped[inverse]
            else:
                units[rows] = mapped[inverse]
        return units

    def _class_scores(self, unit_scores: torch.Tensor) -> torch.Tensor:
        """Unit scores to class scores: a class scores the max of its units."""
        if self._class_unit_ is not None:
            return unit_scores.index_select(1, self._class_unit_)
        n = unit_scores.shape[0]
        out = unit_scores.new_full((n, len(self.classes_)), float("-inf"))
        index = self._unit_class_.unsqueeze(0).expand(n, -1)
        return out.scatter_reduce(1, index, unit_scores, reduce="amax")
