"""The estimator registry: every public skcl estimator, its command-line name and aliases.

One line of :data:`ENTRIES` per estimator. From it come the classes
``skcl`` and ``skcl.strategies`` export, the names of ``skcl list`` and
``skcl run --estimator``, the grid of ``skcl bench --estimators all`` and the
estimators of the scikit-learn conformance test. Adding an estimator is
writing its class in a module of :mod:`skcl.strategies` and adding its line
here.

This module imports nothing of skcl at import time; :meth:`Entry.load`
imports an estimator's module when its class is asked for.

Examples
--------
>>> from skcl import registry
>>> registry.get("finetune").name, registry.get("LatentReplayClassifier").name
('naive', 'latentreplay')
>>> registry.get("latent-replay").load().__name__
'LatentReplayClassifier'
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

__all__ = ["ENTRIES", "Entry", "UnknownEstimatorError", "classes", "find", "get", "names"]


@dataclass(frozen=True)
class Entry:
    """One estimator of the registry.

    Parameters
    ----------
    name : str
        Command-line name (``skcl run --estimator NAME``), lower case; also
        the estimator's name in ``skcl bench`` results.
    module : str
        Module of :mod:`skcl.strategies` defining the class (``'baselines'``).
    cls : str
        Class name (``'NaiveClassifier'``).
    aliases : tuple of str, default=()
        Other names accepted wherever ``name`` is.

    Examples
    --------
    >>> from skcl.registry import Entry
    >>> Entry("naive", "baselines", "NaiveClassifier").load().__name__
    'NaiveClassifier'
    """

    name: str
    module: str
    cls: str
    aliases: tuple[str, ...] = ()

    def load(self) -> type:
        """The estimator class (imports its module)."""
        return getattr(importlib.import_module(f"skcl.strategies.{self.module}"), self.cls)

    def keys(self) -> set[str]:
        """Every spelling that names this entry, normalised by :func:`_normalise`."""
        return {_normalise(k) for k in (self.name, self.cls, *self.aliases)}


#: Every public estimator, in the order of ``skcl list`` and of ``skcl bench``'s grid
#: (``naive`` first: bench timings are relative to it; then ``joint``, then by family).
ENTRIES: tuple[Entry, ...] = (
    Entry("naive", "baselines", "NaiveClassifier", ("finetune",)),
    Entry("joint", "baselines", "JointClassifier"),
    Entry("cumulative", "baselines", "CumulativeClassifier"),
    Entry("ensemble", "baselines", "EnsembleClassifier"),
    Entry("multihead", "architectural", "MultiHeadClassifier"),
    Entry("packnet", "masks", "PackNetClassifier"),
    Entry("piggyback", "masks", "PiggybackClassifier"),
    Entry("supsup", "masks", "SupSupClassifier", ("supermasks",)),
    Entry("ewc", "regularization", "EWCClassifier"),
    Entry("si", "regularization", "SIClassifier", ("synaptic-intelligence",)),
    Entry("mas", "regularization", "MASClassifier"),
    Entry("imm", "imm", "IMMClassifier"),
    Entry("lwf", "lwf", "LwFClassifier", ("learning-without-forgetting",)),
    Entry("hnet", "hypernetwork", "HyperNetworkClassifier", ("hypernetwork",)),
    Entry("replay", "replay", "ReplayClassifier", ("er", "experience-replay")),
    Entry("mir", "replay", "MIRClassifier"),
    Entry("gdumb", "replay", "GDumbClassifier"),
    Entry("latentreplay", "replay", "LatentReplayClassifier"),
    Entry("dgr", "generative", "GenerativeReplayClassifier", ("generative-replay",)),
    Entry("gnr", "generative", "GenerativeNegativeReplayClassifier",
          ("generative-negative-replay",)),
    Entry("gem", "gradient", "GEMClassifier"),
    Entry("agem", "gradient", "AGEMClassifier"),
    Entry("icarl", "icarl", "ICaRLClassifier"),
    Entry("progressive", "columns", "ProgressiveClassifier", ("pnn", "progressive-networks")),
    Entry("pnc", "columns", "ProgressCompressClassifier", ("progress-compress",)),
    Entry("cwrstar", "consolidated", "CWRStarClassifier", ("cwr",)),
    Entry("ar1", "consolidated", "AR1Classifier", ("ar1star",)),
    Entry("hat", "gates", "HATClassifier", ("hard-attention",)),
    Entry("cpg", "gates", "CPGClassifier", ("compacting-picking-growing",)),
)


class UnknownEstimatorError(ValueError):
    """A name that is no estimator of the registry; the message lists the valid names."""


def _normalise(name: str) -> str:
    """Lower case, without separators or a ``Classifier`` suffix: ``'Latent-Replay'``
    and ``'LatentReplayClassifier'`` both give ``'latentreplay'``."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower()).removesuffix("classifier")


def names() -> list[str]:
    """Command-line names of every estimator, in registry order.

    Returns
    -------
    names : list of str

    Examples
    --------
    >>> from skcl.registry import names
    >>> names()[:3]
    ['naive', 'joint', 'cumulative']
    """
    return [entry.name for entry in ENTRIES]


def find(name: str) -> Entry | None:
    """The entry a name, class name or alias stands for (any case, ``-``/``_`` ignored).

    Parameters
    ----------
    name : str

    Returns
    -------
    entry : Entry or None
        None when no estimator goes by that name.

    Examples
    --------
    >>> from skcl.registry import find
    >>> find("EWC").cls, find("nope")
    ('EWCClassifier', None)
    """
    key = _normalise(name)
    return next((entry for entry in ENTRIES if key in entry.keys()), None)


def get(name: str) -> Entry:
    """Like :func:`find`, but an unknown name raises.

    Parameters
    ----------
    name : str

    Returns
    -------
    entry : Entry

    Raises
    ------
    UnknownEstimatorError
        With the valid names in its message.

    Examples
    --------
    >>> from skcl.registry import get
    >>> get("experience_replay").name
    'replay'
    """
    entry = find(name)
    if entry is None:
        raise UnknownEstimatorError(f"unknown estimator {name!r}; valid: {', '.join(names())}")
    return entry


def classes() -> dict[str, type]:
    """Every estimator class by command-line name, in registry order (imports them).

    Returns
    -------
    classes : dict of str to type

    Examples
    --------
    >>> from skcl.registry import classes
    >>> classes()["naive"].__name__
    'NaiveClassifier'
    """
    return {entry.name: entry.load() for entry in ENTRIES}
