"""skcl: continual learning that speaks scikit-learn.

Every method is an estimator with ``partial_fit(X, y, task_id)``. The
estimators exported here are those of :mod:`skcl.registry`.
"""

from skcl import strategies
from skcl.base import ContinualClassifier

globals().update({name: getattr(strategies, name) for name in strategies.__all__})

__version__ = "0.1.0"

__all__ = ["ContinualClassifier", *strategies.__all__]
