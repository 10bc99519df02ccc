"""Trunks, growing output layers and per-task heads: the default networks of skcl."""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from skcl._call import SharedExcept

#: Held by whoever seeds or restores torch's process-wide generator, so that
#: estimators built in threads of one process never draw from each other's seed.
GLOBAL_RNG_LOCK = threading.RLock()


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global generator seeded to ``seed``, then restore it.

    Module constructors (``nn.Linear``) draw from the global generator; this
    makes them reproducible, and thread-safe under :data:`GLOBAL_RNG_LOCK`.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import seeded
    >>> with seeded(0):
    ...     a = torch.nn.Linear(2, 2).weight
    >>> with seeded(0):
    ...     b = torch.nn.Linear(2, 2).weight
    >>> torch.equal(a, b)
    True
    """
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class TaskSequential(nn.Sequential):
    """A sequence of layers that hands the task to the layers that take one.

    A layer whose class attribute ``takes_task`` is true is called as
    ``layer(x, task)`` (a task id per sample, one id, a richer task context
    such as a gate slope, or ``None``); every other layer as ``layer(x)``.
    Slicing keeps the type, so a trunk cut in two (latent replay) still
    passes the task on.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import TaskSequential
    >>> class AddTask(torch.nn.Module):
    ...     takes_task = True
    ...     def forward(self, x, task):
    ...         return x + task
    >>> TaskSequential(torch.nn.Identity(), AddTask())(torch.zeros(1), 3).item()
    3.0
    """

    def forward(self, x: torch.Tensor, task=None) -> torch.Tensor:
        for layer in self:
            # A class attribute: read from the type, the instance lookup of a missing
            # attribute goes through Module.__getattr__ and costs microseconds per layer.
            x = layer(x, task) if getattr(type(layer), "takes_task", False) else layer(x)
        return x


def call_trunk(trunk: nn.Module, x: torch.Tensor, task=None) -> torch.Tensor:
    """``trunk(x, task)`` for a :class:`TaskSequential`, ``trunk(x)`` for any other module
    (a user's backbone)."""
    return trunk(x, task) if isinstance(trunk, TaskSequential) else trunk(x)


def make_mlp(n_features: int, hidden_layer_sizes: Sequence[int],
             linear: Callable[[int, int], nn.Module] = nn.Linear) -> TaskSequential:
    """Build the default trunk: ``linear -> ReLU`` for each hidden layer.

    Parameters
    ----------
    n_features : int
        Input width.
    hidden_layer_sizes : sequence of int
        Width of each hidden layer; empty gives an identity trunk (a linear model).
    linear : callable, default=torch.nn.Linear
        ``linear(in_features, out_features)`` builds each layer: the layer
        factory through which a method asks for masked, gated or column layers.

    Returns
    -------
    trunk : TaskSequential

    Examples
    --------
    >>> from skcl.nn import make_mlp
    >>> make_mlp(64, (256, 256))
    TaskSequential(
      (0): Linear(in_features=64, out_features=256, bias=True)
      (1): ReLU()
      (2): Linear(in_features=256, out_features=256, bias=True)
      (3): ReLU()
    )
    """
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden_layer_sizes:
        layers += [linear(width, int(size)), nn.ReLU()]
        width = int(size)
    return TaskSequential(*layers)


def make_trunk(n_features: int, hidden_layer_sizes, backbone=None,
               linear: Callable[[int, int], nn.Module] | None = None,
               owner: str = "this estimator") -> nn.Module:
    """The trunk of an estimator: ``backbone(n_features)``, or the MLP of ``hidden_layer_sizes``.

    Parameters
    ----------
    n_features : int
    hidden_layer_sizes : array-like of int
    backbone : callable, default=None
        ``backbone(n_features) -> torch.nn.Module``.
    linear : callable, default=None
        Layer factory of :func:`make_mlp`. A method that needs its own layers
        passes it, and then cannot take a backbone: that raises ``ValueError``.
    owner : str
        Who asks (named in error messages).

    Examples
    --------
    >>> from skcl.nn import make_trunk
    >>> len(make_trunk(4, (8, 8)))
    4
    """
    if backbone is not None:
        if linear is not None:
            raise ValueError(
                f"{owner} builds its trunk from its own layers ({linear.__name__}), so it "
                "cannot take a backbone; set hidden_layer_sizes instead"
            )
        trunk = backbone(n_features)
        if not isinstance(trunk, nn.Module):
            raise TypeError(f"backbone must return a torch.nn.Module, got {type(trunk).__name__}")
        return trunk
    sizes = np.asarray(hidden_layer_sizes).ravel()
    if sizes.size and (sizes.dtype.kind not in "iu" or sizes.min() < 1):
        raise ValueError(
            f"hidden_layer_sizes must be a tuple of positive integers, got {hidden_layer_sizes!r}"
        )
    return make_mlp(n_features, [int(s) for s in sizes], linear or nn.Linear)


def output_width(trunk: nn.Module, n_features: int) -> int:
    """Width of ``trunk``'s output for inputs of ``n_features``, found by one forward pass."""
    was_training = trunk.training
    trunk.eval()
    with torch.no_grad():
        param = next(trunk.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        out = trunk(torch.zeros(1, n_features, device=device))
    trunk.train(was_training)
    if out.dim() != 2:
        raise ValueError(
            f"the backbone must return a 2-D (n_samples, n_features) tensor, got shape "
            f"{tuple(out.shape)}"
        )
    return int(out.shape[1])


class IncrementalLinear(nn.Module):
    """A linear layer whose output units can be appended without touching old ones.

    New rows are initialised as :class:`torch.nn.Linear` initialises its
    weights, ``U(-1/sqrt(in), 1/sqrt(in))``, from an explicit seed.

    Parameters
    ----------
    in_features : int
        Input width.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import IncrementalLinear
    >>> layer = IncrementalLinear(3)
    >>> layer.grow(2, seed=0)
    >>> layer(torch.ones(1, 3)).shape
    torch.Size([1, 2])
    """

    def __init__(self, in_features: int):
        super().__init__()
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(0, in_features))
        self.bias = nn.Parameter(torch.empty(0))

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def grow(self, n_new: int, seed: int) -> None:
        """Append ``n_new`` freshly initialised output units."""
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        weight = torch.empty(n_new, self.in_features).uniform_(-bound, bound, generator=generator)
        bias = torch.empty(n_new).uniform_(-bound, bound, generator=generator)
        device = self.weight.device
        self.weight = nn.Parameter(torch.cat([self.weight.data, weight.to(device)]))
        self.bias = nn.Parameter(torch.cat([self.bias.data, bias.to(device)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class SharedHead(nn.Module):
    """One trunk and one growing output layer shared by all tasks (single head).

    ``forward(x, task)`` returns the logits of every unit whatever the task:
    the task restricts predictions later, not the network.

    Parameters
    ----------
    make_trunk : callable
        Zero-argument factory of the trunk module.
    n_features : int
        Input width, used to find the trunk's output width.
    """

    def __init__(self, make_trunk: Callable[[], nn.Module], n_features: int):
        super().__init__()
        self.trunk = make_trunk()
        self.head = IncrementalLinear(output_width(self.trunk, n_features))

    @property
    def n_units(self) -> int:
        return self.head.out_features

    def add_units(self, task: int, n_new: int, seed: int) -> None:
        """Append ``n_new`` output units (the task does not matter for a shared head)."""
        self.head.grow(n_new, seed)

    def features(self, x: torch.Tensor, task: torch.Tensor | int | None = None) -> torch.Tensor:
        """The trunk's output, the representation the head reads."""
        return call_trunk(self.trunk, x, task)

    def forward(self, x: torch.Tensor, task: torch.Tensor | int | None = None) -> torch.Tensor:
        return self.head(self.features(x, task))


class TaskHeads(nn.Module):
    """One output head per task over a shared trunk (multi-head) or one network per task.

    ``forward(x, task)`` computes only the heads of the given task(s) and
    returns logits over *all* units, with ``-inf`` for units of other tasks, so
    that a cross-entropy on it trains just the task's head and a max over units
    never picks another task's unit. With ``task=None`` every head answers.
    :meth:`task_logits` gives one task's logits alone, and :meth:`task_parts`
    the modules that are one task's own: training a task costs the same
    however many tasks there are.

    Parameters
    ----------
    make_trunk : callable
        Zero-argument factory of a trunk module.
    n_features : int
        Input width, used to find the trunk's output width.
    shared_trunk : bool, default=True
        ``True``: one trunk feeds every head (multi-head).
        ``False``: each task gets a fresh trunk and head (an ensemble of models).

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import TaskHeads, make_mlp
    >>> net = TaskHeads(lambda: make_mlp(4, (8,)), n_features=4)
    >>> net.add_units(task=0, n_new=2, seed=0)
    >>> net.add_units(task=1, n_new=2, seed=1)
    >>> net(torch.zeros(1, 4), task=1)[0, :2].tolist()
    [-inf, -inf]
    """

    def __init__(self, make_trunk: Callable[[], nn.Module], n_features: int,
                 shared_trunk: bool = True):
        super().__init__()
        self.make_trunk = make_trunk
        self.n_features = n_features
        self.shared_trunk = shared_trunk
        self.trunks = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        if shared_trunk:
            self.trunks["shared"] = make_trunk()
        self.register_buffer("unit_task", torch.empty(0, dtype=torch.long))

    @property
    def n_units(self) -> int:
        return int(self.unit_task.numel())

    def __deepcopy__(self, memo: dict) -> TaskHeads:
        # The trunk factory (often an estimator's bound method) is shared, not copied:
        # copying it would copy the whole estimator with every copy of the network.
        memo.setdefault(id(self.make_trunk), self.make_trunk)
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def _trunk(self, task: int) -> nn.Module:
        return self.trunks["shared" if self.shared_trunk else str(task)]

    def add_units(self, task: int, n_new: int, seed: int) -> None:
        """Append ``n_new`` units to ``task``'s head, creating the head (and trunk) if new.

        An existing head grows as a copy (:meth:`own`): the head object it
        replaces is left unchanged."""
        key = str(task)
        if key not in self.heads:
            device = self.unit_task.device
            if not self.shared_trunk:
                with seeded(seed):
                    self.trunks[key] = self.make_trunk().to(device)
            width = output_width(self._trunk(task), self.n_features)
            self.heads[key] = IncrementalLinear(width).to(device)
            for part in self.task_parts(task):
                part.train(self.training)
        else:
            self.heads[key] = copy.deepcopy(self.heads[key])
        self.heads[key].grow(n_new, seed)
        new = torch.full((n_new,), task, dtype=torch.long, device=self.unit_task.device)
        self.unit_task = torch.cat([self.unit_task, new])

    def task_parts(self, task: int) -> list[nn.Module]:
        """The modules that are ``task``'s alone: its head, and its trunk unless shared."""
        key = str(task)
        parts = [self.heads[key]] if key in self.heads else []
        if not self.shared_trunk and key in self.trunks:
            parts.append(self.trunks[key])
        return parts

    def parts_except(self, task: int | None) -> list[SharedExcept]:
        """Every task's own modules but ``task``'s, what training ``task`` leaves untouched:
        the dicts of heads (and of trunks, one per task) as ``skcl._call.SharedExcept``,
        so a checkpoint shares them whole but for ``task``'s entries, at a cost that does
        not grow with the tasks. Parts are replaced, never changed in place, outside the
        open task (:meth:`own`, :meth:`add_units`)."""
        own = () if task is None else (str(task),)
        containers = [self.heads] if self.shared_trunk else [self.heads, self.trunks]
        return [SharedExcept(container._modules, own) for container in containers]

    def train(self, mode: bool = True) -> TaskHeads:
        """Set training mode. Every part is kept in the network's mode, so setting the mode
        it has already costs nothing however many heads there are (the training loop sets
        it each epoch)."""
        if mode != self.training:
            super().train(mode)
        return self

    def own(self, task: int) -> None:
        """Replace ``task``'s own modules by copies, leaving the objects they were (which
        a checkpoint may share) unchanged."""
        key = str(task)
        if key in self.heads:
            self.heads[key] = copy.deepcopy(self.heads[key])
        if not self.shared_trunk and key in self.trunks:
            self.trunks[key] = copy.deepcopy(self.trunks[key])

    def units(self, task: int) -> torch.Tensor:
        """Indices of ``task``'s units, in the order of its head's rows."""
        return torch.nonzero(self.unit_task == task).flatten()

    def task_logits(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Logits of ``task``'s units only (columns in the order of :meth:`units`): the
        columns of ``forward(x, task)`` that are not ``-inf``."""
        return self.heads[str(task)](call_trunk(self._trunk(task), x, task))

    def features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """The representation ``task``'s head reads."""
        return call_trunk(self._trunk(task), x, task)

    def forward(self, x: torch.Tensor, task: torch.Tensor | int | None = None) -> torch.Tensor:
        out = x.new_full((x.shape[0], self.n_units), float("-inf"))
        tasks = self._tasks_to_run(task)
        shared = (call_trunk(self.trunks["shared"], x, task) if self.shared_trunk and tasks
                  else None)
        for t, rows in tasks:
            feats = shared if shared is not None else call_trunk(self._trunk(t), x, t)
            units = self.units(t)
            logits = self.heads[str(t)](feats if rows is None else feats[rows])
            if rows is None:
                out = out.index_copy(1, units, logits)
            else:
                block = out[rows].index_copy(1, units, logits)
                out = out.index_copy(0, rows, block)
        return out

    def _tasks_to_run(self, task):
        if task is None:
            return [(int(k), None) for k in self.heads.keys()]
        if isinstance(task, int):
            return [(task, None)] if str(task) in self.heads else []
        values = torch.unique(task).tolist()
        if len(values) == 1:
            return [(values[0], None)] if str(values[0]) in self.heads else []
        return [(t, torch.nonzero(task == t).flatten()) for t in values if str(t) in self.heads]
