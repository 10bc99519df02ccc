"""The concurrency contract of skcl estimators, and the frozen view predictions read.

- Predictions never change the estimator. They read a *scoring view*: a
  float64 copy of what the method predicts with (its network, merged weights,
  class means ...) and of the class bookkeeping, built once per trained state
  and shared by every prediction until the estimator trains again. Scoring
  in float64 also makes a sample's scores independent of the batch it is
  scored in: float32 products take other kernels for other row counts.
- Several threads may predict at once.
- Calls that train (``partial_fit``, ``fit``, ``end_task``) take the
  estimator for themselves: a second one from another thread raises
  ``RuntimeError``. A prediction from another thread meanwhile reads the view
  of the state before the call, or, when no view was built yet, waits for
  the call to finish. A prediction made by the training thread itself (a
  method that scores during training) reads the live state.

The guard keeps its lock and the view outside the estimator's ``__dict__``
(a weak mapping), so they never pickle, clone or show up as fitted state.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class _Guard:
    def __init__(self):
        self.cond = threading.Condition(threading.Lock())
        self.trainer: int | None = None
        self.depth = 0
        self.view: Any = None
        self.key: Any = None


_GUARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_GUARDS_LOCK = threading.Lock()


def _guard(estimator) -> _Guard:
    with _GUARDS_LOCK:
        guard = _GUARDS.get(estimator)
        if guard is None:
            guard = _GUARDS[estimator] = _Guard()
        return guard


@contextmanager
def training(estimator) -> Iterator[None]:
    """Hold ``estimator`` for a call that trains; reentrant within one thread."""
    guard, me = _guard(estimator), threading.get_ident()
    with guard.cond:
        if guard.trainer not in (None, me):
            raise RuntimeError(
                f"{type(estimator).__name__} is being trained by another thread: calls that "
                "train it (partial_fit, fit, end_task) must not overlap"
            )
        guard.trainer = me
        guard.depth += 1
    try:
        yield
    finally:
        with guard.cond:
            guard.depth -= 1
            if guard.depth == 0:
                guard.trainer = None
                guard.view = None
                guard.cond.notify_all()


def scoring_view(estimator, build: Callable[[], Any], key: Callable[[], Any]) -> Any:
    """The view predictions read, built by ``build()`` and cached while ``key()`` (a
    fingerprint of the state, e.g. the network's tensor versions) stays the same."""
    guard, me = _guard(estimator), threading.get_ident()
    with guard.cond:
        if guard.trainer == me:
            return build()
        while guard.trainer is not None and guard.view is None:
            guard.cond.wait()
        if guard.trainer is not None:
            return guard.view
        now = key()
        if guard.view is None or guard.key != now:
            guard.view, guard.key = build(), now
        return guard.view


def tensor_versions(module: nn.Module) -> tuple:
    """A fingerprint of ``module``'s tensors: changes whenever one is replaced or
    modified in place (an optimizer step, a hand edit)."""
    return (id(module), *((id(t), t._version) for t in
                          (*module.parameters(), *module.buffers())))


def float64_copy(module: nn.Module) -> nn.Module:
    """A detached float64 copy of ``module`` in eval mode, without its hooks.

    Examples
    --------
    >>> import torch
    >>> from skcl._guard import float64_copy
    >>> float64_copy(torch.nn.Linear(3, 2)).weight.dtype
    torch.float64
    """
    with torch.no_grad():
        clone = copy.deepcopy(module)
    for sub in clone.modules():
        sub._forward_hooks.clear()
        sub._forward_pre_hooks.clear()
        sub._backward_hooks.clear()
    return clone.double().eval().requires_grad_(False)
