"""iCaRL's exemplar sets: herding-chosen samples per class, a fixed total shrinking per class."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch
from torch.nn import functional as F

from skcl import kernels
from skcl._batch import Batch
from skcl.memory import _Rows, concat_batches


def herding_selection(features: torch.Tensor, m: int) -> torch.Tensor:
    r"""Indices of ``m`` exemplars chosen by herding on L2-normalised features, in pick order.

    Rebuffi et al. (CVPR 2017), Algorithm 4, computed by :func:`skcl.kernels.herding`:

    .. math:: p_k = \arg\min_{x} \Big\lVert \mu - \frac1k \big(\varphi(x)
              + \textstyle\sum_{j<k} \varphi(p_j)\big) \Big\rVert,
              \qquad \varphi(x) = \frac{f(x)}{\lVert f(x) \rVert}

    with :math:`\mu` the mean of :math:`\varphi` over all candidates.

    Examples
    --------
    >>> import torch
    >>> from skcl.exemplars import herding_selection
    >>> herding_selection(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), 1).tolist()
    [2]
    """
    phi = F.normalize(features.detach().float(), dim=1).contiguous()
    return kernels.herding(phi, int(m))


class ExemplarSets:
    r"""iCaRL's exemplar sets (Rebuffi et al., CVPR 2017, Algorithms 4 and 5).

    One ordered set per class. With :math:`K` = ``memory_size`` and :math:`t`
    classes, each set holds :math:`m = \lfloor K / t \rfloor` exemplars: a
    new class's set is chosen by herding (:func:`herding_selection`), in
    priority order, and older sets are reduced to their first :math:`m`
    exemplars, so the total never exceeds :math:`K`.

    Parameters
    ----------
    memory_size : int
        :math:`K`, the most exemplars kept over all classes.

    Examples
    --------
    >>> import torch
    >>> from skcl.base import Batch
    >>> from skcl.exemplars import ExemplarSets
    >>> sets = ExemplarSets(memory_size=4)
    >>> X = torch.randn(10, 3)
    >>> batch = Batch(X, torch.zeros(10, dtype=torch.long), None, torch.zeros(10, dtype=torch.long))
    >>> sets.update({0: (batch, X)})
    >>> sets.update({1: (batch._replace(y=torch.ones(10, dtype=torch.long)), X)})
    >>> [len(sets.exemplars(c).y) for c in sets.classes]
    [2, 2]
    """

    def __init__(self, memory_size: int):
        if isinstance(memory_size, bool) or not isinstance(memory_size, Integral) \
                or memory_size < 0:
            raise ValueError(f"memory_size must be a non-negative integer, got {memory_size!r}")
        self.memory_size = int(memory_size)
        self._sets: dict[int, _Rows] = {}

    def __len__(self) -> int:
        return sum(rows.size for rows in self._sets.values())

    def state_key(self) -> tuple:
        """A fingerprint that changes whenever a set is rebuilt or edited in place."""
        return tuple((unit, rows.size, id(rows.X), None if rows.X is None else rows.X._version)
                     for unit, rows in self._sets.items())

    @property
    def classes(self) -> list[int]:
        """Keys (output units) of the classes with an exemplar set, in order of arrival."""
        return list(self._sets)

    def update(self, candidates: dict[int, tuple[Batch, torch.Tensor]]) -> None:
        """Reduce the sets to the new per-class size, then build sets for ``candidates``.

        Parameters
        ----------
        candidates : dict of int to (Batch, Tensor)
            For each class to (re)build: its samples and their features (one row
            each). A class that already has a set gets a new one from these
            candidates.
        """
        m = self.memory_size // max(len(set(self._sets) | set(candidates)), 1)
        for key, rows in self._sets.items():
            if key not in candidates:
                rows.keep(np.arange(min(m, rows.size)), m)
        for key, (batch, features) in candidates.items():
            order = herding_selection(features, min(m, batch.y.shape[0])).cpu().numpy()
            rows = _Rows(m)
            rows.write(np.arange(order.size), batch, order)
            self._sets[key] = rows

    def counts(self) -> dict[int, int]:
        """Number of exemplars of each class (0 once ``m`` reaches 0)."""
        return {key: rows.size for key, rows in self._sets.items()}

    def exemplars(self, key: int) -> Batch:
        """Class ``key``'s exemplars in herding order; ``ValueError`` if it has none."""
        rows = self._sets[key]
        if rows.size == 0:
            raise ValueError(f"class {key} has no exemplars")
        return rows.batch()

    def items(self) -> Batch:
        """Every exemplar, class after class."""
        return concat_batches(*(rows.batch() for rows in self._sets.values() if rows.size))
