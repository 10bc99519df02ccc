"""Continual-learning methods, one module per family."""

from skcl.strategies.architectural import MultiHeadClassifier
from skcl.strategies.baselines import (
    CumulativeClassifier,
    EnsembleClassifier,
    JointClassifier,
    NaiveClassifier,
)

__all__ = [
    "CumulativeClassifier",
    "EnsembleClassifier",
    "JointClassifier",
    "MultiHeadClassifier",
    "NaiveClassifier",
]
