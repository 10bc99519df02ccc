r"""The consolidated output layer of CWR* (Lomonaco & Maltoni 2017; Maltoni & Lomonaco 2019).

A bias-free linear output layer with two sets of weights: the temporary
weights ``weight`` (:math:`tw`) that training updates, and the consolidated
weights ``cw`` that predictions read, each class with the number of samples
``past`` its consolidated weights were learned from.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from skcl.nn.core import SharedHead

__all__ = ["ConsolidatedHead", "ConsolidatedNetwork"]


class ConsolidatedHead(nn.Module):
    r"""A bias-free output layer with temporary weights :math:`tw` and consolidated ones :math:`cw`.

    Units start at zero in both (the paper's :math:`cw = 0`). :meth:`load`
    zeroes :math:`tw` and copies :math:`cw` into the rows of the classes about
    to be trained; :meth:`consolidated` computes CWR*'s update of those rows,

    .. math:: cw_j \leftarrow \frac{cw_j\, w_j + (tw_j - \overline{tw})}{w_j + 1}, \qquad
              w_j = \sqrt{past_j / cur_j}, \qquad past_j \leftarrow past_j + cur_j,

    :math:`\overline{tw}` being the mean of :math:`tw` over those classes and
    :math:`cur_j` the number of samples of class :math:`j` just trained on.
    Rows marked ``replaced`` take :math:`w_j = 0`: their :math:`cw_j` becomes
    :math:`tw_j - \overline{tw}` (AR1*'s classes trained on replayed latents
    alone, see :class:`~skcl.AR1Classifier`).

    Parameters
    ----------
    in_features : int

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import ConsolidatedHead
    >>> head = ConsolidatedHead(2)
    >>> head.grow(3, seed=0)
    >>> with torch.no_grad():
    ...     _ = head.weight.copy_(torch.tensor([[1.0, 0.0], [3.0, 0.0], [9.0, 9.0]]))
    >>> cw, past = head.consolidated(torch.tensor([0, 1]), torch.tensor([10.0, 10.0]))
    >>> cw.tolist(), past.tolist()
    ([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], [10.0, 10.0, 0.0])
    """

    def __init__(self, in_features: int):
        super().__init__()
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(0, in_features))
        self.register_buffer("cw", torch.empty(0, in_features))
        self.register_buffer("past", torch.empty(0))

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def grow(self, n_new: int, seed: int) -> None:
        """Append ``n_new`` units, zero in :math:`tw` and :math:`cw` (``seed`` is unused)."""
        zeros = self.weight.new_zeros(n_new, self.in_features)
        self.weight = nn.Parameter(torch.cat([self.weight.data, zeros]))
        self.cw = torch.cat([self.cw, zeros])
        self.past = torch.cat([self.past, self.past.new_zeros(n_new)])

    @torch.no_grad()
    def load(self, units: torch.Tensor, zero: bool = False) -> None:
        """Copy :math:`cw` into the rows ``units`` of :math:`tw`, after zeroing all of
        :math:`tw` when ``zero``."""
        if zero:
            self.weight.zero_()
        self.weight[units] = self.cw[units]

    @torch.no_grad()
    def consolidated(self, units: torch.Tensor, counts: torch.Tensor,
                     replaced: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cw, past)`` after folding the rows ``units`` of :math:`tw` in, ``counts``
        their samples :math:`cur_j`, ``replaced`` (booleans, one per unit) the rows whose
        :math:`cw` is replaced rather than averaged; the layer is unchanged."""
        cw, past = self.cw.clone(), self.past.clone()
        if units.numel():
            tw = self.weight[units]
            w_past = (past[units] / counts).sqrt().unsqueeze(1)
            if replaced is not None:
                w_past = w_past.masked_fill(replaced.unsqueeze(1), 0.0)
            cw[units] = (cw[units] * w_past + (tw - tw.mean(dim=0))) / (w_past + 1)
            past[units] += counts
        return cw, past

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class ConsolidatedNetwork(SharedHead):
    """A trunk under a :class:`ConsolidatedHead` (CWR*, AR1): the network contract of
    :class:`~skcl.nn.SharedHead` with a bias-free, consolidated output layer.

    Parameters
    ----------
    make_trunk : callable
        Zero-argument factory of the trunk module.
    n_features : int
        Input width.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import make_mlp
    >>> from skcl.nn import ConsolidatedNetwork
    >>> net = ConsolidatedNetwork(lambda: make_mlp(4, (8,)), n_features=4)
    >>> net.add_units(task=0, n_new=2, seed=0)
    >>> net(torch.zeros(3, 4)).tolist()
    [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    """

    def __init__(self, make_trunk: Callable[[], nn.Module], n_features: int):
        super().__init__(make_trunk, n_features)
        self.head = ConsolidatedHead(self.head.in_features)
