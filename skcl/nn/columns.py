r"""Column networks: one MLP column per task, with lateral links from earlier columns.

Column :math:`k` is the MLP of the estimator's widths, built through the layer
factory of :func:`~skcl.nn.make_mlp`. Its layer :math:`\ell \ge 2` also reads
the layer :math:`\ell - 1` of every earlier column through a lateral adapter
(Rusu et al., 2016, eq. 1):

.. math:: h^{(k)}_\ell = \mathrm{ReLU}\Big(W^{(k)}_\ell h^{(k)}_{\ell-1}
          + \sum_{j<k} U^{(k:j)}_\ell h^{(j)}_{\ell-1}\Big),

the :math:`U^{(k:j)}_\ell` of all :math:`j < k` stored as one bias-free linear
layer over the earlier columns' activations side by side. Each task has a
head in a column; a head of column :math:`k` reads :math:`h^{(k)}_L` and,
through its lateral part, :math:`h^{(j)}_L` of every earlier column (one
linear layer over them side by side, so its columns past the first
:math:`|h_L|` are the head's adapters).

Column :math:`k` depends only on columns :math:`j \le k`: a column added
later never changes what an earlier one computes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from skcl._call import SharedExcept
from skcl.nn.core import IncrementalLinear, make_mlp, seeded
from skcl.nn.inference import check_task_inference, min_entropy_heads

__all__ = ["ColumnNetwork"]


class _Column(nn.Module):
    """One column: its MLP (built by the layer factory) and its lateral adapters."""

    def __init__(self, n_features: int, sizes: Sequence[int], index: int,
                 linear: Callable[[int, int], nn.Module]):
        super().__init__()
        self.trunk = make_mlp(n_features, sizes, linear)
        self.laterals = nn.ModuleList(
            nn.Linear(index * int(sizes[i - 1]), int(sizes[i]), bias=False)
            for i in range(1, len(sizes)) if index > 0
        )
        self.heads = nn.ModuleDict()


class ColumnNetwork(nn.Module):
    """Columns of MLPs with lateral adapters and per-task heads (progressive networks).

    ``forward(x, task)`` runs each sample through its task's column and head
    and returns logits over all units, ``-inf`` for units of other tasks (as
    :class:`~skcl.nn.TaskHeads`). With ``task=None`` the task is inferred per
    sample or per call (``task_inference``): every task's head answers and the
    task whose softmax over its own units has the lowest entropy (the most
    confident head, :func:`~skcl.nn.min_entropy_heads`) is taken; the other
    tasks' units score ``-inf``.

    Parameters
    ----------
    n_features : int
        Input width.
    hidden_layer_sizes : sequence of int
        Widths of every column's layers.
    linear : callable, default=torch.nn.Linear
        Layer factory of each column's own layers (:func:`~skcl.nn.make_mlp`).
    per_task_columns : bool, default=True
        ``True``: a new task gets a new column, its head there, and earlier
        columns are frozen (progressive networks). ``False``: the network has
        ``n_columns`` columns from the start, every task a head in each, and
        is routed to column 0 (Progress & Compress: the knowledge base and
        the active column).
    n_columns : int, default=2
        Number of columns when ``per_task_columns`` is false.
    task_inference : {'sample', 'batch'}, default='sample'
        Granularity of the task inference without task ids (:mod:`skcl.nn.inference`);
        an attribute, which may be set on a copy that predicts.

    Attributes
    ----------
    task_column : dict of int to int
        The column each task's predictions read.
    n_frozen : int
        Columns below this one are frozen: they run without an autograd graph.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import ColumnNetwork
    >>> net = ColumnNetwork(4, (8, 8))
    >>> net.add_units(task=0, n_new=2, seed=0)
    >>> net.add_units(task=1, n_new=3, seed=1)
    >>> len(net.columns), net.n_frozen, net(torch.zeros(1, 4), task=1)[0, :2].tolist()
    (2, 1, [-inf, -inf])
    >>> net.parameter_counts()
    {'columns': 269, 'adapters': 88}
    """

    def __init__(self, n_features: int, hidden_layer_sizes: Sequence[int],
                 linear: Callable[[int, int], nn.Module] = nn.Linear,
                 per_task_columns: bool = True, n_columns: int = 2,
                 task_inference: str = "sample"):
        super().__init__()
        self.task_inference = check_task_inference(task_inference)
        self.n_features = n_features
        self.sizes = [int(s) for s in hidden_layer_sizes]
        self.linear = linear
        self.per_task_columns = per_task_columns
        self.columns = nn.ModuleList()
        self.task_column: dict[int, int] = {}
        self.n_frozen = 0
        self.register_buffer("unit_task", torch.empty(0, dtype=torch.long))
        if not per_task_columns:
            for _ in range(n_columns):
                self.columns.append(self._new_column(len(self.columns)))

    @property
    def n_units(self) -> int:
        return int(self.unit_task.numel())

    @property
    def width(self) -> int:
        """Width of a column's last layer (the input width with no hidden layer)."""
        return self.sizes[-1] if self.sizes else self.n_features

    def _new_column(self, index: int) -> _Column:
        column = _Column(self.n_features, self.sizes, index, self.linear)
        return column.to(self.unit_task.device).train(self.training)

    def train(self, mode: bool = True) -> ColumnNetwork:
        """Set training mode. Every column is kept in the network's mode, so setting the
        mode it has already costs nothing however many columns and heads there are (the
        training loop sets it each epoch)."""
        if mode != self.training:
            super().train(mode)
        return self

    def add_units(self, task: int, n_new: int, seed: int) -> None:
        """Append ``n_new`` units to ``task``'s head(s); a new task's first units bring its
        head, and, with per-task columns, its column (earlier columns are then frozen)."""
        key = str(task)
        if task not in self.task_column:
            if self.per_task_columns:
                with seeded(seed):
                    self.columns.append(self._new_column(len(self.columns)))
                self.n_frozen = len(self.columns) - 1
                self.task_column[task] = len(self.columns) - 1
            else:
                self.task_column[task] = 0
        for index, column in enumerate(self.columns):
            if key in column.heads:
                self._rebuild(index, [column.heads[key]])  # grown below: a copy
            elif not self.per_task_columns or index == self.task_column[task]:
                self._rebuild(index).heads[key] = self._new_head(index)
        for column in self.columns:
            if key in column.heads:
                column.heads[key].grow(n_new, seed)
        new = torch.full((n_new,), task, dtype=torch.long, device=self.unit_task.device)
        self.unit_task = torch.cat([self.unit_task, new])

    def _new_head(self, index: int) -> IncrementalLinear:
        head = IncrementalLinear((index + 1) * self.width).to(self.unit_task.device)
        return head.train(self.training)

    def reset_column(self, index: int, seed: int) -> None:
        """Re-initialise column ``index``'s layers and adapters, without heads (Progress &
        Compress's active column before the next task: a new task's units bring its head,
        :meth:`add_head` gives one to a task met again)."""
        with seeded(seed):
            self.columns[index] = self._new_column(index)

    def add_head(self, index: int, task: int, seed: int) -> None:
        """Give column ``index`` a freshly initialised head for ``task``'s units."""
        head = self._new_head(index)
        head.grow(int((self.unit_task == task).sum()), seed)
        self._rebuild(index).heads[str(task)] = head

    def _rebuild(self, index: int, copied: Iterable[nn.Module] = ()) -> _Column:
        """Replace column ``index`` by a copy of it that shares its layers, adapters and
        heads but ``copied``: the column object it was stays unchanged (a checkpoint may
        share it), whatever is then done to the copy's heads."""
        column, copied = self.columns[index], {id(m) for m in copied}
        kept = [m for m in (column.trunk, column.laterals, *column.heads.values())
                if id(m) not in copied]
        self.columns[index] = copy.deepcopy(column, {id(m): m for m in kept})
        return self.columns[index]

    def parts_except(self, task: int | None, columns: Iterable[int]) -> list:
        """What training ``task`` in ``columns`` leaves untouched (a checkpoint shares it):
        whole columns that hold neither, and in the others every other task's head (their
        dicts of heads as ``skcl._call.SharedExcept``, shared but for ``task``'s entry),
        and the layers and adapters of those not in ``columns``."""
        columns, skip = set(columns), str(task)
        parts: list = []
        for index, column in enumerate(self.columns):
            if index not in columns and skip not in column.heads:
                parts.append(column)
                continue
            parts.append(SharedExcept(column.heads._modules, (skip,)))
            if index not in columns:
                parts += [column.trunk, column.laterals]
        return parts

    def own(self, task: int, column: int | None = None) -> None:
        """Replace ``task``'s heads, and ``column``'s layers and adapters if given, by
        copies, leaving the objects they were (which a checkpoint may share) unchanged."""
        key = str(task)
        for index, c in enumerate(self.columns):
            parts = [c.heads[key]] if key in c.heads else []
            parts += [c.trunk, c.laterals] if index == column else []
            if parts:
                self._rebuild(index, parts)

    def column_parameters(self, index: int):
        """Parameters of column ``index``: its layers, adapters and heads."""
        return self.columns[index].parameters()

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the columns' own layers and heads, and of their lateral adapters
        (the lateral parts of the heads included)."""
        adapters = sum(p.numel() for c in self.columns for p in c.laterals.parameters())
        adapters += sum(
            head.weight.shape[0] * (head.in_features - self.width)
            for c in self.columns for head in c.heads.values()
        )
        return {"columns": sum(p.numel() for p in self.parameters()) - adapters,
                "adapters": adapters}

    def layers(self, x: torch.Tensor, upto: int, detach_below: int | None = None
               ) -> list[list[torch.Tensor]]:
        """The activations of columns ``0 .. upto``: one list per layer (the input first,
        then every hidden layer), one tensor per column. Columns below ``detach_below``
        (default ``n_frozen``) run without an autograd graph."""
        detach_below = self.n_frozen if detach_below is None else detach_below
        below: list[torch.Tensor] = [x] * (upto + 1)
        out = [below]
        for layer in range(len(self.sizes)):
            current = []
            for index in range(upto + 1):
                with torch.set_grad_enabled(torch.is_grad_enabled() and index >= detach_below):
                    column = self.columns[index]
                    z = column.trunk[2 * layer](below[index])
                    if layer > 0 and index > 0:
                        z = z + column.laterals[layer - 1](torch.cat(below[:index], dim=1))
                    current.append(F.relu(z))
            below = current
            out.append(current)
        return out

    def hidden(self, x: torch.Tensor, upto: int, detach_below: int | None = None
               ) -> list[torch.Tensor]:
        """The last-layer activations of columns ``0 .. upto`` (see :meth:`layers`)."""
        return self.layers(x, upto, detach_below)[-1]

    def earlier(self, x: torch.Tensor, column: int) -> torch.Tensor:
        """What column ``column`` (at least 1; the network has hidden layers) reads from
        earlier columns: their activations at every hidden layer, side by side in one
        tensor, without an autograd graph. A frozen column's input of
        :meth:`forward_from`, computed once for data seen over several epochs."""
        with torch.no_grad():
            hidden_layers = self.layers(x, column - 1)[1:]
        return torch.cat([torch.cat(acts, dim=1) for acts in hidden_layers], dim=1)

    def forward_from(self, x: torch.Tensor, earlier: torch.Tensor, task: int) -> torch.Tensor:
        """``forward(x, task)`` for one task, the earlier columns' activations read from
        ``earlier`` (as :meth:`earlier` gives them for the task's column) instead of
        computed: only the task's column runs."""
        index = self.task_column[task]
        chunks = torch.split(earlier, [index * w for w in self.sizes], dim=1)
        column = self.columns[index]
        h = x
        for layer in range(len(self.sizes)):
            z = column.trunk[2 * layer](h)
            if layer > 0:
                z = z + column.laterals[layer - 1](chunks[layer - 1])
            h = F.relu(z)
        logits = column.heads[str(task)](torch.cat([chunks[-1], h], dim=1))
        units = torch.nonzero(self.unit_task == task).flatten()
        return x.new_full((x.shape[0], self.n_units), float("-inf")).index_copy(1, units, logits)

    def column_logits(self, x: torch.Tensor, task: int, column: int | None = None,
                      detach_below: int | None = None) -> torch.Tensor:
        """Logits of ``task``'s units from its head in ``column`` (default: its column)."""
        column = self.task_column[task] if column is None else column
        hidden = self.hidden(x, column, detach_below)
        return self.columns[column].heads[str(task)](torch.cat(hidden, dim=1))

    def features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """What ``task``'s head reads: its column's and earlier columns' last activations."""
        return torch.cat(self.hidden(x, self.task_column[int(task)]), dim=1)

    def forward(self, x: torch.Tensor, task: torch.Tensor | int | None = None,
                column: int | None = None, detach_below: int | None = None) -> torch.Tensor:
        out = x.new_full((x.shape[0], self.n_units), float("-inf"))
        if task is None:
            return self._inferred(x, out)
        groups = _groups(task, x.shape[0], self.task_column)
        for t, rows in groups:
            units = torch.nonzero(self.unit_task == t).flatten()
            logits = self.column_logits(x if rows is None else x[rows], t, column, detach_below)
            if rows is None:
                out = out.index_copy(1, units, logits)
            else:
                out = out.index_copy(0, rows, out[rows].index_copy(1, units, logits))
        return out

    def _inferred(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Every head answers; the most confident one is kept, per sample or per batch
        (:func:`~skcl.nn.min_entropy_heads` at ``task_inference``)."""
        if not self.task_column:
            return out
        hidden = self.hidden(x, max(self.task_column.values()))
        answers = []
        for t, column in self.task_column.items():
            units = torch.nonzero(self.unit_task == t).flatten()
            logits = self.columns[column].heads[str(t)](torch.cat(hidden[:column + 1], dim=1))
            answers.append(out.index_copy(1, units, logits))
        return min_entropy_heads(torch.stack(answers), self.task_inference)

def _groups(task, n_rows: int, known: dict[int, int]):
    """``(task, rows)`` pairs of the known tasks in ``task`` (rows ``None``: all)."""
    if isinstance(task, int):
        return [(task, None)] if task in known else []
    values = torch.unique(task).tolist()
    if len(values) == 1:
        return [(values[0], None)] if values[0] in known else []
    return [(t, torch.nonzero(task == t).flatten()) for t in values if t in known]
