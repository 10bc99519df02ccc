"""The plumbing of a ContinualClassifier call: checked inputs, checkpoints, optimizers."""

from __future__ import annotations

import copy
import functools
import itertools
import operator
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
from torch import nn

from skcl._batch import Batch
from skcl._guard import scoring_view
from skcl._units import OutputUnits
from skcl._validation import (
    check_classes_argument,
    check_labels,
    check_task_ids,
    groups_in_order,
)


def new_optimizer(kind: str, params: list, lr: float, momentum: float) -> torch.optim.Optimizer:
    """SGD with momentum or Adam over the parameters that require gradients."""
    params = [p for p in params if p.requires_grad]
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def carry_state(optimizer: torch.optim.Optimizer, named: list[tuple[str, torch.Tensor]],
                carry_from: torch.optim.Optimizer | None, old_names: list[str]) -> list[str]:
    """Give each parameter of ``optimizer`` (``named`` lists them in order, with their
    names; ``""`` is no name) the state its namesake had in ``carry_from`` (whose
    parameters were named ``old_names``), rows added since starting from zero.

    Only the two optimizers' parameters are looked at, never the whole network,
    so the cost follows what the optimizers hold, not the network's size.
    Returns the names of ``optimizer``'s parameters, for the next carry.
    """
    names = [name for name, _ in named]
    if carry_from is None:
        return names
    old = carry_from.param_groups[0]["params"]
    by_name = {name: carry_from.state[p] for name, p in zip(old_names, old, strict=True)
               if name and p in carry_from.state}
    for name, p in zip(names, optimizer.param_groups[0]["params"], strict=True):
        state = by_name.get(name)
        if state is not None:
            optimizer.state[p] = {k: _grown(v, p) for k, v in state.items()}
    return names


class SharedExcept(NamedTuple):
    """The entries of a dict of the state (a module's submodules or buffers, a dict of
    the estimator's) that a call leaves alone: all but those under the keys ``own``.

    For a method that keeps a part per task in one container, where a call trains
    one task's. A checkpoint copies the dict itself (at C speed, however many
    entries) keeping the same entries, and deep-copies only ``own``'s; the walk
    that names a call's parameters enters only ``own``'s submodules. A call may add
    or replace entries (the checkpoint's copy of the dict does not see it), never
    change one outside ``own`` in place.
    """

    entries: dict
    own: tuple


def split_shared(shared) -> tuple[list, dict[int, SharedExcept]]:
    """What a ``_shared_with_checkpoint()`` lists, as the objects shared whole and
    ``{id(entries): item}`` of the :class:`SharedExcept` items."""
    whole, partial = [], {}
    for item in shared:
        if isinstance(item, SharedExcept):
            partial[id(item.entries)] = item
        else:
            whole.append(item)
    return whole, partial


def parameter_names(module: nn.Module, skip=()) -> dict[int, str]:
    """``{id(parameter): name}`` over ``module``'s parameters, first name of each, as
    ``named_parameters`` gives them, without entering the submodules in ``skip``
    (modules, or :class:`SharedExcept` containers, entered for their own entries only).

    Examples
    --------
    >>> from torch import nn
    >>> from skcl._call import parameter_names
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    >>> sorted(parameter_names(net, skip=[net[1]]).values())
    ['0.bias', '0.weight']
    """
    whole, partial = split_shared(skip)
    names = {}
    for prefix, sub in _submodules(module, {id(m) for m in whole}, partial):
        for name, p in sub._parameters.items():
            if p is not None:
                names.setdefault(id(p), prefix + name)
    return names


def _submodules(module: nn.Module, skip,
                partial: dict[int, SharedExcept]) -> list[tuple[str, nn.Module]]:
    """``(prefix, submodule)`` in the order of ``named_modules``, each once, without
    entering the submodules whose ids are in ``skip``, and entering only the ``own``
    entries of the dicts of submodules in ``partial`` (:func:`split_shared`)."""
    out, seen, stack = [], set(), [("", module)]
    while stack:
        prefix, sub = stack.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        out.append((prefix, sub))
        stack.extend((f"{prefix}{name}.", child) for name, child in
                     reversed(_entered(sub._modules, skip, partial)))
    return out


def _entered(children: dict, skip,
             partial: dict[int, SharedExcept]) -> list[tuple[str, nn.Module]]:
    """The ``(name, child)`` items of ``children`` that are not ``None`` and not in
    ``skip``, and, if ``children`` is in ``partial``, under one of its own keys. The
    others are filtered at C speed: a container of thousands of skipped parts costs
    microseconds."""
    shared = partial.get(id(children))
    if shared is not None:
        return [(key, children[key]) for key in shared.own
                if children.get(key) is not None and id(children[key]) not in skip]
    keep = map(operator.not_, map(skip.__contains__, map(id, children.values())))
    return [item for item in itertools.compress(children.items(), keep) if item[1] is not None]


def check_call(est, X, y, task_id, classes, sample_weight, reset: bool) -> Call:
    """Check the inputs of a call to ``est`` and move its data to the device.

    With ``reset`` the estimator starts afresh (the caller's checkpoint
    restores it if a check fails) and the network is built once the inputs
    have passed.
    """
    if reset:
        est._reset()
    comm = est._collective()
    try:
        X, y = validate_data(est, X, y, reset=reset, dtype=np.float32)
        check_labels(y)
        task_ids = check_task_ids(task_id, X.shape[0], y=y)
        weight = None
        if sample_weight is not None:
            weight = _check_sample_weight(sample_weight, X, dtype=np.float32,
                                          ensure_non_negative=True)
    except Exception as exc:
        if comm.world_size > 1:
            comm.all_gather_object(None)
        raise exc
    if comm.world_size > 1:
        X, y, task_ids, weight = gather_call(comm, X, y, task_ids, weight)
    if weight is not None and np.all(weight == 1):
        weight = None
    groups = [
        Group(task, rows, *np.unique(y if rows is None else y[rows], return_inverse=True))
        for task, rows in groups_in_order(task_ids)
    ]
    labels = groups[0].labels if len(groups) == 1 else np.unique(np.concatenate(
        [g.labels for g in groups]))
    if classes is not None:
        classes = check_classes_argument(classes)
    est.output_units_.check(labels, classes)
    if reset:
        est._build()
    device = est.device_
    data = Data(
        as_tensor(X, device),
        None if weight is None else as_tensor(weight, device),
        torch.from_numpy(task_ids).to(device),
    )
    return Call(data, groups, classes)


_PREDICT_CHUNK = 8192


def gather_call(comm, X, y, task_ids, weight):
    """Every rank's shard of a call, joined in rank order (data-parallel training).

    Each rank sends its checked arrays; a rank whose checks failed sent
    ``None``, and the others raise too, so no rank waits forever. Ranks must
    pass the same task ids in the same call.
    """
    shards = comm.all_gather_object((X, y, task_ids, weight))
    failed = [rank for rank, shard in enumerate(shards) if shard is None]
    if failed:
        raise ValueError(f"the inputs of rank(s) {failed} failed their checks")
    tasks = [sorted(np.unique(shard[2]).tolist()) for shard in shards]
    if any(t != tasks[0] for t in tasks):
        raise ValueError(
            f"ranks passed different task ids in the same call: {dict(enumerate(tasks))}; "
            "every rank must pass its shard of the same tasks"
        )
    weights = None
    if any(shard[3] is not None for shard in shards):
        weights = np.concatenate([np.ones(len(shard[1]), dtype=np.float32) if shard[3] is None
                                  else shard[3] for shard in shards])
    return (np.concatenate([shard[0] for shard in shards]),
            np.concatenate([shard[1] for shard in shards]),
            np.concatenate([shard[2] for shard in shards]), weights)


def class_scores(view: View, X: np.ndarray, task_ids: np.ndarray | None,
                 device: torch.device) -> np.ndarray:
    """Scores of shape (n_samples, n_classes) read from a scoring view, in float64.

    With ``task_ids``, classes outside each sample's task score ``-inf``.
    """
    units = view.units
    if task_ids is not None:
        unknown = np.setdiff1d(task_ids, units.tasks)
        if unknown.size:
            raise ValueError(
                f"task_id {unknown.tolist()} was never seen; tasks seen: {units.tasks}"
            )
    X_t = torch.from_numpy(np.asarray(X, dtype=np.float64)).to(device)
    tasks_t = None if task_ids is None else torch.from_numpy(task_ids).to(device)
    chunks = []
    with torch.no_grad():
        for start in range(0, X_t.shape[0], _PREDICT_CHUNK):
            stop = start + _PREDICT_CHUNK
            task_chunk = None if tasks_t is None else tasks_t[start:stop]
            chunks.append(units.class_scores(view.network(X_t[start:stop], task_chunk)))
    scores = torch.cat(chunks).double().cpu().numpy()
    if task_ids is not None:
        for task, rows in groups_in_order(task_ids):
            outside = ~np.isin(units.classes, units.task_classes[task])
            if rows is None:
                scores[:, outside] = -np.inf
            else:
                scores[np.ix_(rows, outside)] = -np.inf
    return scores


def inferred_tasks(estimator, X) -> np.ndarray:
    """The task whose head answers each row of ``X`` predicted without a task id: the
    task of the row's highest-scoring unit, read from the scoring view in the chunks
    predictions use (so ``task_inference='batch'`` picks one task per chunk, as
    ``predict`` does). For estimators whose output units are per task."""
    check_is_fitted(estimator)
    if not getattr(estimator, "_task_specific_units", False):
        raise ValueError(f"{type(estimator).__name__} shares its output units among tasks: "
                         "it infers no task")
    X = validate_data(estimator, X, reset=False, dtype=np.float32)
    view = scoring_view(estimator, estimator._scoring_view, estimator._scoring_key)
    X_t = torch.from_numpy(np.asarray(X, dtype=np.float64)).to(estimator.device_)
    with torch.no_grad():
        units = [view.network(X_t[start:start + _PREDICT_CHUNK], None).argmax(dim=1)
                 for start in range(0, X_t.shape[0], _PREDICT_CHUNK)]
    if not units:
        return np.empty(0, dtype=np.int64)
    return view.units.unit_tasks()[torch.cat(units).cpu().numpy()]


class View(NamedTuple):
    """What predictions read: the scoring network and a copy of the unit bookkeeping."""

    network: nn.Module
    units: OutputUnits


class Checkpoint:
    """Restores an estimator's ``__dict__`` when the block it guards raises.

    Entered once per public call (nested entries do nothing). The copy is a
    deep copy, so parameters, optimizer state, memories and generators come
    back exactly as they were; objects ``shared()`` returns are kept as they
    are instead of copied (the call promises not to change them).
    """

    def __init__(self, estimator, shared=tuple):
        self.estimator = estimator
        self.shared = shared

    def __enter__(self):
        est = self.estimator
        self.outer = not est.__dict__.get("_in_call", False)
        if self.outer:
            whole, partial = split_shared(self.shared())
            memo = dict(zip(map(id, whole), whole, strict=True))
            _seed_memo(est.__dict__, memo, partial)
            self.saved = copy.deepcopy(est.__dict__, memo)
            est.__dict__["_in_call"] = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if not self.outer:
            return False
        est = self.estimator
        if exc_type is not None:
            est.__dict__.clear()
            est.__dict__.update(self.saved)
        est.__dict__.pop("_in_call", None)
        return False


def _seed_memo(state: dict, memo: dict, partial: dict[int, SharedExcept]) -> None:
    """Copy ahead, into the deep-copy ``memo``, what ``copy.deepcopy`` copies slowly in
    ``state``'s modules and optimizers: their empty dicts and sets (a dozen hook
    registries per module, each rebuilt through ``__reduce_ex__``: half the time
    of a small network's copy) and each module's dict of submodules (one
    deep-copy step per entry, thousands where a method keeps a part per task).

    Submodules already in ``memo`` (shared, not copied) are not entered; the
    others are copied children first, so each finds its own containers ready. A
    dict in ``partial`` (:func:`split_shared`) is copied as it is, with copies of
    its ``own`` entries: first, so that copies made in the walk find it ready.
    """
    for key, shared in partial.items():
        memo[key] = type(shared.entries)(shared.entries)
    for value in state.values():
        if isinstance(value, torch.optim.Optimizer):
            _seed_empty(value, memo)
        elif isinstance(value, nn.Module):
            for _, sub in reversed(_submodules(value, memo, partial)):
                _seed_empty(sub, memo)
                children = sub._modules
                if id(children) in partial:
                    copied = memo[id(children)]
                else:
                    copied = type(children)(zip(children, map(memo.get, map(id, children.values())),
                                                strict=True))
                for name, child in _entered(children, memo, partial):
                    copied[name] = _copy_module(child, memo)
                memo[id(children)] = copied
            _copy_module(value, memo)
    for key, shared in partial.items():  # own entries the walk did not copy (not modules)
        copied = memo[key]
        for name in shared.own:
            if name in shared.entries:
                copied[name] = copy.deepcopy(shared.entries[name], memo)


def _copy_module(module: nn.Module, memo: dict) -> nn.Module:
    """``copy.deepcopy(module, memo)``, faster for a module copied by its state as
    ``nn.Module`` copies (no ``__deepcopy__``, ``__reduce__`` or state methods of its
    own): the same new object and state, built directly, atomic attributes (a dozen
    flags and names per module) taken as they are instead of one deep-copy call each."""
    found = memo.get(id(module))
    if found is not None:
        return found
    cls = type(module)
    if not _copies_by_state(cls):
        return copy.deepcopy(module, memo)
    new = cls.__new__(cls)
    memo[id(module)] = new
    new.__setstate__({key: value if type(value) in _ATOMIC else copy.deepcopy(value, memo)
                      for key, value in module.__getstate__().items()})
    return new


@functools.cache
def _copies_by_state(cls: type) -> bool:
    """Whether ``copy.deepcopy`` copies instances of ``cls`` as it copies ``nn.Module``'s."""
    return all(getattr(cls, name, None) is getattr(nn.Module, name, None) for name in
               ("__deepcopy__", "__reduce_ex__", "__reduce__", "__getstate__", "__setstate__"))

_ATOMIC = frozenset({int, float, bool, str, bytes, type(None)})


def _seed_empty(owner, memo: dict) -> None:
    for attr in vars(owner).values():
        if type(attr) in _EMPTY_CONTAINERS and not attr:
            memo.setdefault(id(attr), type(attr)())


_EMPTY_CONTAINERS = (dict, OrderedDict, set)


def _grown(value, param: torch.Tensor):
    """Optimizer state ``value`` padded with zero rows to ``param``'s shape."""
    if not isinstance(value, torch.Tensor) or value.shape == param.shape or value.dim() == 0:
        return value
    pad = torch.zeros((param.shape[0] - value.shape[0], *value.shape[1:]), dtype=value.dtype,
                      device=value.device)
    return torch.cat([value, pad])


class Group(NamedTuple):
    """The samples of one task in a call: ``rows`` (``None``: all), their sorted unique
    labels and each sample's index into them."""

    task: int
    rows: np.ndarray | None
    labels: np.ndarray
    inverse: np.ndarray


class Data(NamedTuple):
    """A call's samples on the device (labels are encoded per task, once registered)."""

    X: torch.Tensor
    weight: torch.Tensor | None
    task: torch.Tensor

    def select(self, rows: np.ndarray | None, units: torch.Tensor) -> Batch:
        """The given rows as a :class:`Batch`, ``units`` being their encoded labels."""
        if rows is None:
            return Batch(self.X, units, self.weight, self.task)
        index = torch.from_numpy(rows).to(self.X.device)
        weight = None if self.weight is None else self.weight[index]
        return Batch(self.X[index], units, weight, self.task[index])


class Call(NamedTuple):
    """A checked call: its data, its task groups in order, and ``classes`` if given."""

    data: Data
    groups: list[Group]
    classes: np.ndarray | None


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    array = np.ascontiguousarray(array, dtype=np.float32)
    tensor = torch.from_numpy(array) if array.flags.writeable else torch.tensor(array)
    return tensor.to(device)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
