"""Mask methods: tasks isolated inside one network by binary weight masks.

- :class:`PackNetClassifier` (:mod:`.packnet`): train, prune, retrain, freeze.
- :class:`PiggybackClassifier` (:mod:`.piggyback`): learned masks over a fixed backbone.
- :class:`SupSupClassifier` (:mod:`.supsup`): supermasks over fixed random weights,
  with task inference by entropy or by the paper's one-shot rule.

Each infers the task of predictions without ``task_id`` per sample or per predict
call (``task_inference``, :mod:`skcl.nn.inference`).

The layers are those of :mod:`skcl.nn.masked`.
"""

from skcl.strategies.masks.packnet import PackNetClassifier
from skcl.strategies.masks.piggyback import PiggybackClassifier
from skcl.strategies.masks.supsup import SupSupClassifier

__all__ = ["PackNetClassifier", "PiggybackClassifier", "SupSupClassifier"]
