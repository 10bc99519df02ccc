"""Mask methods: tasks isolated inside one network by binary weight masks.

- :class:`PackNetClassifier` (:mod:`.packnet`): train, prune, retrain, freeze.
- :class:`PiggybackClassifier` (:mod:`.piggyback`): learned masks over a fixed backbone.
- :class:`SupSupClassifier` (:mod:`.supsup`): supermasks over fixed random weights,
  with one-shot task inference.

The layers are those of :mod:`skcl.nn.masked`.
"""

from skcl.strategies.masks.packnet import PackNetClassifier
from skcl.strategies.masks.piggyback import PiggybackClassifier
from skcl.strategies.masks.supsup import SupSupClassifier

__all__ = ["PackNetClassifier", "PiggybackClassifier", "SupSupClassifier"]
