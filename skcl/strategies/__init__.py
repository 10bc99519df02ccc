"""Continual-learning methods, one module per family."""

from skcl.strategies.architectural import MultiHeadClassifier
from skcl.strategies.baselines import (
    CumulativeClassifier,
    EnsembleClassifier,
    JointClassifier,
    NaiveClassifier,
)
from skcl.strategies.gradient import AGEMClassifier, GEMClassifier
from skcl.strategies.icarl import ICaRLClassifier
from skcl.strategies.imm import IMMClassifier
from skcl.strategies.lwf import LwFClassifier
from skcl.strategies.regularization import EWCClassifier, MASClassifier, SIClassifier
from skcl.strategies.replay import (
    GDumbClassifier,
    LatentReplayClassifier,
    MIRClassifier,
    ReplayClassifier,
)

__all__ = [
    "AGEMClassifier",
    "CumulativeClassifier",
    "EWCClassifier",
    "EnsembleClassifier",
    "GDumbClassifier",
    "GEMClassifier",
    "ICaRLClassifier",
    "IMMClassifier",
    "JointClassifier",
    "LatentReplayClassifier",
    "LwFClassifier",
    "MASClassifier",
    "MIRClassifier",
    "MultiHeadClassifier",
    "NaiveClassifier",
    "ReplayClassifier",
    "SIClassifier",
]
