"""Continual-learning methods, one module per family."""

from skcl.strategies.architectural import MultiHeadClassifier
from skcl.strategies.baselines import (
    CumulativeClassifier,
    EnsembleClassifier,
    JointClassifier,
    NaiveClassifier,
)
from skcl.strategies.imm import IMMClassifier
from skcl.strategies.lwf import LwFClassifier
from skcl.strategies.regularization import EWCClassifier, MASClassifier, SIClassifier

__all__ = [
    "CumulativeClassifier",
    "EWCClassifier",
    "EnsembleClassifier",
    "IMMClassifier",
    "JointClassifier",
    "LwFClassifier",
    "MASClassifier",
    "MultiHeadClassifier",
    "NaiveClassifier",
    "SIClassifier",
]
