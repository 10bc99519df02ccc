r"""Reusable mechanics of continual-learning methods, held by estimators as components.

An estimator holds the components it needs and calls them from the hooks of
its training loop (:mod:`skcl.base`); two mechanisms combine by holding both,
never by inheriting from two bases.

- :class:`QuadraticPenalty`: :math:`\tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2`
  over a chosen set of parameters (EWC, online EWC, SI, MAS, IMM's
  L2-transfer; Progress & Compress's knowledge base, AR1's lower layers).
- :class:`PathIntegral`: SI's path integral over a chosen set of parameters.
- :class:`FrozenSnapshot`: a frozen copy of the network (LwF, iCaRL, DGR's
  previous solver).

The set of parameters a component covers, its *scope*, is ``None`` (every
parameter), a name prefix such as ``"trunk.0."``, or a callable
``scope(name, parameter) -> bool``. A quadratic penalty is wired into an
estimator's hooks as follows (each override calls ``super()`` as well)::

    _initialize          self.ewc_ = QuadraticPenalty(scope="trunk.0.")
    _before_task         self.ewc_.stiffen(strength, limit)
    _penalty             sum_terms(super()._penalty(), self.ewc_.value(self.network_))
    _after_backward      self.ewc_.add_gradient(self.network_)
    _parameters_changed  self.ewc_.parameters_changed()
    _after_task          self.ewc_.consolidate(importance, dict(self.network_.named_parameters()))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["FrozenSnapshot", "PathIntegral", "QuadraticPenalty", "Scope", "scoped_parameters",
           "stiffness_limit", "sum_terms"]

#: Which parameters a component covers: all (``None``), a name prefix, or a predicate.
Scope = str | Callable[[str, torch.Tensor], bool] | None


def _check_scope(scope: Scope) -> Scope:
    if scope is None or isinstance(scope, str) or callable(scope):
        return scope
    raise TypeError(
        "scope must be None, a parameter name prefix or a callable (name, parameter) -> bool, "
        f"got {type(scope).__name__}"
    )


def _in_scope(scope: Scope, name: str, parameter: torch.Tensor) -> bool:
    if scope is None:
        return True
    if isinstance(scope, str):
        return name.startswith(scope)
    return bool(scope(name, parameter))


def scoped_parameters(network: nn.Module, scope: Scope = None) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs of ``network`` within ``scope``, in the network's order.

    Parameters
    ----------
    network : torch.nn.Module
    scope : None, str or callable, default=None
        Every parameter, those whose name starts with the prefix, or those for
        which ``scope(name, parameter)`` is true.

    Returns
    -------
    pairs : list of (str, Parameter)

    Examples
    --------
    >>> import torch
    >>> from skcl.components import scoped_parameters
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    >>> [name for name, _ in scoped_parameters(net, "0.")]
    ['0.weight', '0.bias']
    >>> [name for name, _ in scoped_parameters(net, lambda name, p: p.dim() == 1)]
    ['0.bias', '2.bias']
    """
    scope = _check_scope(scope)
    return [(n, p) for n, p in network.named_parameters() if _in_scope(scope, n, p)]


def stiffness_limit(optimizer: str, learning_rate: float, momentum: float) -> float:
    r"""The largest stiffness :class:`QuadraticPenalty` keeps under an optimizer:
    :math:`(1 + \mu) / \eta` for SGD, half its stability limit; no limit for Adam.

    Examples
    --------
    >>> from skcl.components import stiffness_limit
    >>> stiffness_limit("sgd", learning_rate=0.5, momentum=0.5)
    3.0
    >>> stiffness_limit("adam", learning_rate=0.05, momentum=0.9)
    inf
    """
    if optimizer != "sgd":
        return math.inf
    return (1.0 + momentum) / learning_rate


def sum_terms(*terms: torch.Tensor | None) -> torch.Tensor | None:
    """The sum of the terms that are not ``None`` (``None`` when all are): how an
    estimator's ``_penalty`` adds its own term to ``super()._penalty()``.

    Examples
    --------
    >>> import torch
    >>> from skcl.components import sum_terms
    >>> sum_terms(None, torch.tensor(2.0), torch.tensor(1.0))
    tensor(3.)
    >>> sum_terms(None, None) is None
    True
    """
    present = [t for t in terms if t is not None]
    if not present:
        return None
    total = present[0]
    for term in present[1:]:
        total = total + term
    return total


def _pad_rows(t: torch.Tensor, like: torch.Tensor, fill: torch.Tensor | None = None):
    """``t`` grown to ``like``'s rows (output layers only grow), with zeros or ``fill``'s rows."""
    n = t.shape[0]
    if n == like.shape[0]:
        return t
    extra = torch.zeros_like(like[n:]) if fill is None else fill[n:]
    return torch.cat([t, extra])


class QuadraticPenalty:
    r"""An importance-weighted quadratic penalty around anchors, over a set of parameters.

    Every parameter :math:`\theta_i` in scope that has been consolidated holds
    an importance :math:`\Omega_i` and an anchor :math:`\theta^*_i` (a
    detached copy of its value then), and training adds

    .. math:: \tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2, \qquad k_i = s\,\Omega_i ,

    the *stiffness* :math:`k_i` being the penalty's curvature. EWC, SI and MAS
    differ only in how :math:`\Omega` is computed (and in the factor :math:`s`
    that writes each paper's penalty in this form); IMM's L2-transfer is the
    penalty with unit importance. When an output layer has grown since its
    importance was computed, the penalty covers only the units that existed
    then (new units have no anchor).

    The value is computed without an autograd graph; its gradient
    :math:`k_i (\theta_i - \theta^*_i)` is formed in closed form, in buffers
    fixed for the task, and added to the gradients by :meth:`add_gradient`
    after the backward pass (a ``_train_phase`` that uses the penalty runs
    with ``hooks=True``).

    Parameters
    ----------
    scope : None, str or callable, default=None
        The parameters the penalty may cover (see :func:`scoped_parameters`):
        importances of other parameters are ignored by :meth:`consolidate`.

    Attributes
    ----------
    importance : dict of str to Tensor
        :math:`\Omega`, consolidated, per parameter name.
    anchor : dict of str to Tensor
        :math:`\theta^*` per parameter name.
    stiffness : dict of str to Tensor
        :math:`k`, set by :meth:`stiffen` for the task.

    Notes
    -----
    Stability under SGD. Heavy-ball SGD with step size :math:`\eta` and
    momentum :math:`\mu` on the quadratic :math:`\tfrac12 k (\theta -
    \theta^*)^2` iterates :math:`e_{t+1} = (1 + \mu - \eta k) e_t - \mu
    e_{t-1}`, which converges only while :math:`\eta k < 2 (1 + \mu)`; past
    that the parameter oscillates with growing amplitude and training ends in
    NaN. Large strengths reach it easily (EWC with :math:`\lambda = 10^4` and a
    Fisher entry of 0.01 gives :math:`\eta k = 5 > 3.8` at the protocol's
    :math:`\eta = 0.05, \mu = 0.9`). :meth:`stiffen` clips each :math:`k_i` to
    a limit, :func:`stiffness_limit` giving :math:`(1 + \mu) / \eta`, half the
    stability limit, which leaves the other half to the task loss's own
    curvature. A parameter at the clip is still pulled back to its anchor
    within a few steps, so the clip changes how hard the most important
    parameters are held only marginally, never whether they are held.
    Negative importances (SI's path integral can be negative) give
    :math:`k_i = 0`: a concave penalty is unbounded below. Adam's steps are
    bounded by its step size, so no clip applies to it.

    Examples
    --------
    >>> import torch
    >>> from skcl.components import QuadraticPenalty
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    >>> penalty = QuadraticPenalty(scope="0.")
    >>> ones = {n: torch.ones_like(p) for n, p in net.named_parameters()}
    >>> penalty.consolidate(ones, dict(net.named_parameters()))
    >>> sorted(penalty.importance)
    ['0.bias', '0.weight']
    >>> penalty.stiffen(4.0)
    >>> with torch.no_grad():
    ...     _ = net[0].bias.add_(1.0)
    >>> round(penalty.value(net).item(), 4)
    4.0
    >>> penalty.add_gradient(net)
    >>> [round(g, 4) for g in net[0].bias.grad.tolist()]
    [4.0, 4.0]
    """

    def __init__(self, scope: Scope = None):
        self.scope = _check_scope(scope)
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.stiffness: dict[str, torch.Tensor] = {}
        # Fixed by stiffen for the task: anchors, square roots of k, buffers of the forces.
        self._anchors: list[torch.Tensor] = []
        self._root_stiffness: list[torch.Tensor] = []
        self._buffers: list[torch.Tensor] = []
        self._forces: list[torch.Tensor] | None = None
        self._params: list[nn.Parameter] | None = None

    def stiffen(self, strength: float, limit: float = math.inf) -> None:
        r"""Fix the stiffness :math:`k_i = \min(\max(s\,\Omega_i, 0), \text{limit})` for
        the coming task, :math:`s` being ``strength``."""
        self.stiffness = {n: (strength * omega).clamp(0.0, limit)
                          for n, omega in self.importance.items()}
        self._anchors = [self.anchor[n] for n in self.stiffness]
        self._root_stiffness = [k.sqrt() for k in self.stiffness.values()]
        self._buffers = [torch.empty_like(k) for k in self.stiffness.values()]
        self._forces = None
        self._params = None

    def value(self, network: nn.Module) -> torch.Tensor | None:
        r""":math:`\tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2` for ``network``'s parameters
        (``None`` while nothing is penalised); forms the forces :meth:`add_gradient` adds."""
        if not self.stiffness:
            self._forces = None
            return None
        rows = [p if p.shape[0] == a.shape[0] else p[: a.shape[0]]
                for p, a in zip(self._parameters(network), self._anchors, strict=True)]
        forces = self._buffers
        with torch.no_grad():
            # f = sqrt(k) (theta - theta*), the value is |f|^2 / 2, then f <- sqrt(k) f.
            torch._foreach_copy_(forces, rows)
            torch._foreach_sub_(forces, self._anchors)
            torch._foreach_mul_(forces, self._root_stiffness)
            value = 0.5 * torch.stack(torch._foreach_norm(forces)).square().sum()
            torch._foreach_mul_(forces, self._root_stiffness)
        self._forces = forces
        return value

    def term(self, network: nn.Module) -> torch.Tensor | None:
        r""":math:`\tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2` as an autograd term (``None``
        while nothing is penalised), for a loss that carries its own gradient: a side run
        (``_train_phase(loss=...)``, without hooks) on the network or a copy of it. Same
        value as :meth:`value` (anchors and stiffness as :meth:`stiffen` fixed them); its
        gradient is the force :meth:`add_gradient` adds."""
        if not self.stiffness:
            return None
        params = dict(network.named_parameters())
        total = None
        for (name, k), anchor in zip(self.stiffness.items(), self._anchors, strict=True):
            theta = params[name][: anchor.shape[0]]
            total = sum_terms(total, (k * (theta - anchor).square()).sum())
        return 0.5 * total

    def add_gradient(self, network: nn.Module) -> None:
        r"""Add the forces :math:`k_i (\theta_i - \theta^*_i)` of the last :meth:`value` to the
        gradients of ``network``'s parameters (call it after the backward pass)."""
        if self._forces is None:
            return
        grads = []
        for p, force in zip(self._parameters(network), self._forces, strict=True):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad if p.shape[0] == force.shape[0] else p.grad[: force.shape[0]])
        torch._foreach_add_(grads, self._forces)

    def forces(self) -> dict[str, torch.Tensor]:
        r"""The forces :math:`k_i (\theta_i - \theta^*_i)` of the last :meth:`value`, by
        parameter name, over the rows that have an anchor (empty when there are none)."""
        if self._forces is None:
            return {}
        return dict(zip(self.stiffness, self._forces, strict=True))

    def consolidate(self, importance: Mapping[str, torch.Tensor],
                    theta: Mapping[str, torch.Tensor], decay: float = 1.0) -> None:
        r"""Fold a task's importance into one running term, anchored at ``theta``.

        .. math:: \Omega \leftarrow \gamma\,\Omega + \Omega_t, \qquad \theta^* \leftarrow \theta

        for every parameter in scope that ``importance`` names; rows a parameter
        gained since take :math:`\Omega_t` alone. :math:`\gamma` = ``decay``: 1
        sums the tasks' importances (SI, MAS), :math:`\gamma < 1` is online EWC's
        decay, 0 keeps only this task's term (IMM's L2-transfer).

        Parameters
        ----------
        importance : mapping of str to Tensor
            :math:`\Omega_t`, shaped like the parameters.
        theta : mapping of str to Tensor
            The parameters now, by name (``dict(network.named_parameters())``);
            detached copies become the anchors.
        decay : float, default=1.0
        """
        if decay == 0.0:
            self.importance = {}
        elif decay != 1.0:
            self.importance = {n: decay * omega for n, omega in self.importance.items()}
        for name, omega in self._in_scope(importance, theta):
            old = self.importance.get(name)
            self.importance[name] = omega if old is None else omega + _pad_rows(old, omega)
            self.anchor[name] = theta[name].detach().clone()

    def add_term(self, importance: Mapping[str, torch.Tensor],
                 theta: Mapping[str, torch.Tensor]) -> None:
        r"""Add a separate term :math:`\tfrac12 \Omega_t (\theta - \theta_t)^2` (EWC's
        penalty per task), stored as the equivalent single quadratic.

        A sum of quadratics is one quadratic, a constant apart: with the new
        term the penalty has the same gradient as

        .. math:: \Omega \leftarrow \Omega + \Omega_t, \qquad
                  \theta^* \leftarrow \theta^* + \frac{\Omega_t}{\Omega + \Omega_t}
                  (\theta_t - \theta^*),

        the importance-weighted mean of the anchors (:math:`\theta_t` where no
        earlier term has importance), so a step costs the same whatever the
        number of tasks. Arguments as in :meth:`consolidate`.
        """
        for name, omega in self._in_scope(importance, theta):
            now = theta[name].detach().clone()
            if name not in self.importance:
                self.importance[name], self.anchor[name] = omega, now
                continue
            old = _pad_rows(self.importance[name], omega)
            star = _pad_rows(self.anchor[name], now, fill=now)
            total = old + omega
            mean = star + torch.nan_to_num(omega / total) * (now - star)
            self.importance[name] = total
            self.anchor[name] = torch.where(old > 0, mean, now)

    def parameters_changed(self) -> None:
        """Forget the cached parameter list (the network's parameters were added or
        replaced); it is rebuilt by name on next use."""
        self._params = None

    def _in_scope(self, importance, theta):
        return [(n, omega) for n, omega in importance.items()
                if _in_scope(self.scope, n, theta[n])]

    def _parameters(self, network: nn.Module) -> list[nn.Parameter]:
        if self._params is None:
            params = dict(network.named_parameters())
            self._params = [params[n] for n in self.stiffness]
        return self._params


class PathIntegral:
    r"""The path integral of synaptic intelligence (Zenke, Poole & Ganguli, ICML 2017).

    Over the trainable parameters in scope, every optimizer step adds

    .. math:: \omega_i \mathrel{-}= g_i \, \Delta\theta_i ,

    :math:`\Delta\theta_i` being the step just taken and :math:`g_i` the
    gradient of the task loss: the gradient the backward pass left, minus the
    force of a :class:`QuadraticPenalty` added to it (known in closed form:
    no extra backward pass). When the task ends, with :math:`\Delta_i` the
    parameter's total change since the integral started,

    .. math:: \Omega_i = \frac{\omega_i}{\Delta_i^2 + \xi} .

    Wiring: :meth:`after_backward` in ``_after_backward`` (after a penalty's
    ``add_gradient``), :meth:`after_step` in ``_after_step``, :meth:`close` at
    the end of a task, :meth:`parameters_changed` in ``_parameters_changed``.
    Output units added while a task runs are integrated from when they appear.

    Parameters
    ----------
    scope : None, str or callable, default=None
        The parameters integrated (see :func:`scoped_parameters`), among those
        that require gradients.

    Attributes
    ----------
    omega : dict of str to Tensor
        :math:`\omega` of the open integral, per parameter name.

    Examples
    --------
    >>> import torch
    >>> from skcl.components import PathIntegral
    >>> net = torch.nn.Linear(1, 1, bias=False)
    >>> _ = torch.nn.init.ones_(net.weight)
    >>> path = PathIntegral()
    >>> optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> for _ in range(2):
    ...     optimizer.zero_grad()
    ...     net.weight.square().sum().backward()
    ...     path.after_backward(net)
    ...     optimizer.step()
    ...     path.after_step()
    >>> round(path.omega["weight"].item(), 3)
    0.656
    >>> round(path.close(net, xi=0.1)["weight"].item(), 3)
    2.857
    """

    def __init__(self, scope: Scope = None):
        self.scope = _check_scope(scope)
        self.omega: dict[str, torch.Tensor] = {}
        self._start: dict[str, torch.Tensor] = {}
        self._previous: dict[str, torch.Tensor] = {}
        self._grads: list[torch.Tensor | None] | None = None
        self._tracked: tuple[list, list, list, list] | None = None

    def after_backward(self, network: nn.Module) -> None:
        """Read the gradients the step will take (the task loss's plus any penalty force)."""
        _, params, _, _ = self._track(network)
        self._grads = [p.grad for p in params]

    @torch.no_grad()
    def after_step(self, penalty: QuadraticPenalty | None = None) -> None:
        r""":math:`\omega \mathrel{-}= (g - f)\,\Delta\theta`, with :math:`f` the forces of
        ``penalty`` (the gradient it added, which is not the task's)."""
        names, params, previous, omega = self._tracked
        grads, self._grads = self._grads, None
        if not params:
            return
        # A parameter without a gradient did not move: a zero gradient adds nothing.
        grads = [torch.zeros_like(p) if g is None else g
                 for p, g in zip(params, grads, strict=True)]
        torch._foreach_sub_(previous, params)  # previous <- -delta theta
        torch._foreach_addcmul_(omega, grads, previous)
        forces = {} if penalty is None else penalty.forces()
        anchored = [(n, forces[n]) for n in names if n in forces]
        if anchored:
            torch._foreach_addcmul_([self.omega[n][: f.shape[0]] for n, f in anchored],
                                    [f for _, f in anchored],
                                    [self._previous[n][: f.shape[0]] for n, f in anchored],
                                    value=-1.0)
        torch._foreach_copy_(previous, params)

    def close(self, network: nn.Module, xi: float) -> dict[str, torch.Tensor]:
        r"""End the integral: :math:`\Omega_i = \omega_i / (\Delta_i^2 + \xi)` per parameter
        integrated (empty if none was), and start afresh."""
        params = dict(network.named_parameters())
        importance = {}
        for name, omega in self.omega.items():
            total_change = params[name].detach()[: omega.shape[0]] - self._start[name]
            importance[name] = omega / (total_change.square() + xi)
        self.omega, self._start, self._previous = {}, {}, {}
        self._tracked = None
        return importance

    def parameters_changed(self) -> None:
        """Forget the cached parameter lists; new rows are integrated from their next step."""
        self._tracked = None

    def _track(self, network: nn.Module) -> tuple[list, list, list, list]:
        """Names, parameters, previous values and integrals of the parameters integrated;
        the integral of a parameter, or of output units added since, starts at its value now."""
        if self._tracked is None:
            named = [(n, p) for n, p in scoped_parameters(network, self.scope) if p.requires_grad]
            for name, p in named:
                theta = p.detach()
                if name not in self.omega:
                    self._start[name], self._previous[name] = theta.clone(), theta.clone()
                    self.omega[name] = torch.zeros_like(theta)
                elif self.omega[name].shape[0] != theta.shape[0]:
                    self._start[name] = _pad_rows(self._start[name], theta, fill=theta)
                    self._previous[name] = _pad_rows(self._previous[name], theta, fill=theta)
                    self.omega[name] = _pad_rows(self.omega[name], theta)
            names = [n for n, _ in named]
            self._tracked = (names, [p for _, p in named], [self._previous[n] for n in names],
                             [self.omega[n] for n in names])
        return self._tracked


class FrozenSnapshot:
    """A frozen copy of a network: detached, in eval mode, without gradients.

    Refreshed when a task ends, it answers as the network did then, whatever
    training does to the network afterwards (LwF's and iCaRL's previous model,
    DGR's previous solver).

    Attributes
    ----------
    network : torch.nn.Module or None
        The copy (``None`` before the first :meth:`refresh`).
    n_units : int
        The number of output units it has (0 before the first refresh).

    Examples
    --------
    >>> import torch
    >>> from skcl.components import FrozenSnapshot
    >>> from skcl.nn import SharedHead, make_mlp
    >>> net = SharedHead(lambda: make_mlp(4, (8,)), n_features=4)
    >>> net.add_units(task=0, n_new=2, seed=0)
    >>> snapshot = FrozenSnapshot()
    >>> snapshot.refresh(net)
    >>> net.add_units(task=1, n_new=3, seed=1)
    >>> snapshot.n_units, snapshot(torch.zeros(5, 4)).shape, snapshot.network.training
    (2, torch.Size([5, 2]), False)
    """

    def __init__(self):
        self.network: nn.Module | None = None
        self.n_units = 0

    def refresh(self, network: nn.Module) -> None:
        """Replace the copy by one of ``network`` as it is now."""
        frozen = copy.deepcopy(network).eval().requires_grad_(False)
        for p in frozen.parameters():
            p.grad = None
        self.network, self.n_units = frozen, frozen.n_units

    def __call__(self, x: torch.Tensor, task: torch.Tensor | int | None = None) -> torch.Tensor:
        """The copy's outputs on ``x``, without an autograd graph."""
        with torch.no_grad():
            return self.network(x, task)
