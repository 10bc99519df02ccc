"""skcl: continual learning that speaks scikit-learn.

Every method is an estimator with ``partial_fit(X, y, task_id)``.
"""

from skcl.base import ContinualClassifier
from skcl.strategies import (
    AGEMClassifier,
    CumulativeClassifier,
    EnsembleClassifier,
    EWCClassifier,
    GDumbClassifier,
    GEMClassifier,
    ICaRLClassifier,
    IMMClassifier,
    JointClassifier,
    LatentReplayClassifier,
    LwFClassifier,
    MASClassifier,
    MIRClassifier,
    MultiHeadClassifier,
    NaiveClassifier,
    ReplayClassifier,
    SIClassifier,
)

__version__ = "0.1.0"

__all__ = [
    "AGEMClassifier",
    "ContinualClassifier",
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
