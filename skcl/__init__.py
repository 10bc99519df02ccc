"""skcl: continual learning that speaks scikit-learn.

Every method is an estimator with ``partial_fit(X, y, task_id)``.
"""

from skcl.base import ContinualClassifier
from skcl.strategies import (
    CumulativeClassifier,
    EnsembleClassifier,
    EWCClassifier,
    IMMClassifier,
    JointClassifier,
    LwFClassifier,
    MASClassifier,
    MultiHeadClassifier,
    NaiveClassifier,
    SIClassifier,
)

__version__ = "0.1.0"

__all__ = [
    "ContinualClassifier",
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
