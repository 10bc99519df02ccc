"""Continual-learning methods, one module per family.

The classes exported here are those of :data:`skcl.registry.ENTRIES`: a new
estimator is its class in a module of this package and one line there.
"""

from skcl import registry

_CLASSES = {entry.cls: entry.load() for entry in registry.ENTRIES}
globals().update(_CLASSES)

__all__ = sorted(_CLASSES)
