r"""Regularization by importance-weighted quadratic penalties: EWC, online EWC, SI, MAS.

At the end of each task every parameter :math:`\theta_i` receives an importance
:math:`\Omega_i` and an anchor :math:`\theta^*_i` (a detached copy of its value
then), and later tasks train on

.. math:: \mathcal{L}(\theta) = \mathcal{L}_{task}(\theta)
          + \tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2, \qquad k_i = s\,\Omega_i ,

the *stiffness* :math:`k_i` being the penalty's curvature. EWC, SI and MAS
share this mechanism (:class:`ImportancePenalty`) and differ only in how
:math:`\Omega` is computed when a task ends (and in the factor :math:`s` that
writes each paper's penalty in this form).

Stability under SGD. Heavy-ball SGD with step size :math:`\eta` and momentum
:math:`\mu` on the quadratic :math:`\tfrac12 k (\theta - \theta^*)^2` iterates
:math:`e_{t+1} = (1 + \mu - \eta k) e_t - \mu e_{t-1}`, which converges only
while :math:`\eta k < 2 (1 + \mu)`; past that the parameter oscillates with
growing amplitude and training ends in NaN. Large strengths reach it easily
(EWC with :math:`\lambda = 10^4` and a Fisher entry of 0.01 gives
:math:`\eta k = 5 > 3.8` at the protocol's :math:`\eta = 0.05, \mu = 0.9`).
With ``clip_stiffness=True`` (the default) each :math:`k_i` is clipped to
:math:`(1 + \mu) / \eta`, half that limit, leaving the other half to the task
loss's own curvature. A parameter at the clip is still pulled back to its
anchor within a few steps, so the clip changes how hard the most important
parameters are held only marginally, never whether they are held. Negative
importances (SI's path integral can be negative) give :math:`k_i = 0`: a
concave penalty is unbounded below. Adam's steps are bounded by its step size,
so no clip applies to it.
"""

from __future__ import annotations

import hashlib
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from skcl.base import ContinualClassifier
from skcl.kernels import fisher_diagonal, mas_importance

_KERNEL_BATCH = 256


class TaskSample:
    """Up to ``capacity`` distinct samples of the open task, kept by reservoir sampling.

    End-of-task importances (EWC's Fisher, MAS) are computed on it. A call whose
    inputs and labels equal an earlier call's (the same arrays fed once per
    epoch) adds nothing, so epochs do not duplicate samples. Samples of zero
    weight are not kept. Selection uses its own generator (seed 0), never the
    estimator's, so keeping a sample does not change training.

    Parameters
    ----------
    capacity : int
        Most samples kept.

    Examples
    --------
    >>> import torch
    >>> from skcl.strategies.regularization import TaskSample
    >>> sample = TaskSample(capacity=3)
    >>> X, y = torch.arange(10.0).reshape(5, 2), torch.arange(5)
    >>> sample.add(X, y, None)
    >>> sample.add(X, y, None)
    >>> sample.tensors()[0].shape
    torch.Size([3, 2])
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.n_seen = 0
        self.X: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self._digests: set[str] = set()
        self._rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return 0 if self.X is None else int(self.X.shape[0])

    def add(self, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None) -> None:
        """Offer a call's samples to the reservoir (once per distinct call)."""
        if self.capacity == 0:
            return
        if weight is not None:
            keep = weight > 0
            X, y = X[keep], y[keep]
        digest = hashlib.blake2b(digest_size=16)
        for tensor in (X, y):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        key = digest.hexdigest()
        if key in self._digests or X.shape[0] == 0:
            return
        self._digests.add(key)
        n_fill = min(self.capacity - len(self), X.shape[0])
        if n_fill:
            head_X, head_y = X[:n_fill].detach(), y[:n_fill].detach()
            self.X = head_X.clone() if self.X is None else torch.cat([self.X, head_X])
            self.y = head_y.clone() if self.y is None else torch.cat([self.y, head_y])
        rest = np.arange(n_fill, X.shape[0])
        seen = self.n_seen + rest
        slots = np.floor(self._rng.random(rest.size) * (seen + 1)).astype(np.int64)
        hit = slots < self.capacity
        slots, rows = slots[hit][::-1], rest[hit][::-1]
        slots, last = np.unique(slots, return_index=True)
        if slots.size:
            index = torch.from_numpy(slots).to(self.X.device)
            source = torch.from_numpy(rows[last]).to(X.device)
            self.X[index] = X[source].detach().to(self.X.device)
            self.y[index] = y[source].detach().to(self.y.device)
        self.n_seen += X.shape[0]

    def tensors(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(X, y)`` of the samples kept (``None`` if none)."""
        return self.X, self.y


def _pad_rows(t: torch.Tensor, like: torch.Tensor, fill: torch.Tensor | None = None):
    """``t`` grown to ``like``'s rows (output layers only grow), with zeros or ``fill``'s rows."""
    n = t.shape[0]
    if n == like.shape[0]:
        return t
    extra = torch.zeros_like(like[n:]) if fill is None else fill[n:]
    return torch.cat([t, extra])


class _TrainedUnits(nn.Module):
    """The network with its logits restricted to the first ``n_units`` output units."""

    def __init__(self, network: nn.Module, n_units: int):
        super().__init__()
        self.network = network
        self.n_units = n_units

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[:, : self.n_units]


class _QuadraticPenalty(torch.autograd.Function):
    r"""Autograd node of :math:`\tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2`, whose value and
    gradient :math:`k (\theta - \theta^*)` (the *forces*, on the anchored rows) are computed
    beforehand in closed form: one node instead of a graph of element-wise operations."""

    @staticmethod
    def forward(ctx, value, forces, *params):
        ctx.forces = forces
        ctx.shapes = [p.shape for p in params]
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        forces = ctx.forces if grad.item() == 1.0 else torch._foreach_mul(ctx.forces, grad)
        grads = []
        for force, shape in zip(forces, ctx.shapes, strict=True):
            if force.shape[0] != shape[0]:
                force = torch.cat([force, force.new_zeros((shape[0] - force.shape[0], *shape[1:]))])
            grads.append(force)
        return (None, None, *grads)


class ImportancePenalty(ContinualClassifier):
    r"""Base of the importance-weighted quadratic penalties (EWC, SI, MAS).

    Holds the anchors :math:`\theta^*` (``anchor_``, detached clones of the
    parameters when the last task ended), the consolidated importances
    :math:`\Omega` (``importance_``) and the penalty
    :math:`\tfrac12 \sum_i k_i (\theta_i - \theta^*_i)^2` with
    :math:`k_i = s\,\Omega_i` clipped for stability (see the module
    docstring). A subclass names its strength in ``_strength = (parameter,
    s / parameter)`` and implements :meth:`_importance`; when the output layer
    has grown since, the penalty covers only the units that existed when the
    importance was computed (new units have no anchor).

    Attributes
    ----------
    importance_ : dict of str to Tensor
        Consolidated importance per parameter name.
    anchor_ : dict of str to Tensor
        :math:`\theta^*` per parameter name.
    """

    #: (name of the strength parameter, factor s per unit of it)
    _strength: tuple[str, float]

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "clip_stiffness": ["boolean"],
    }

    # ------------------------------------------------------------------ what a method provides

    def _importance(self, task: int) -> dict[str, torch.Tensor] | None:
        """Importance of each parameter for the task just ended (shaped like the parameters)."""
        raise NotImplementedError(f"{type(self).__name__} must implement _importance")

    def _sample_size(self) -> int:
        """How many samples of each task the importance needs (0: none kept)."""
        return 0

    def _consolidate(self, importance: dict[str, torch.Tensor]) -> None:
        r"""Fold a task's importance into ``importance_``, :math:`\Omega \leftarrow \Omega +
        \Omega_t`, and anchor at the parameters the task ended with."""
        theta = self._trained_parameters()
        for name, omega in importance.items():
            old = self.importance_.get(name)
            self.importance_[name] = omega if old is None else omega + _pad_rows(old, omega)
            self.anchor_[name] = theta[name]

    # ------------------------------------------------------------------ hooks

    def _initialize(self) -> None:
        super()._initialize()
        self.importance_: dict[str, torch.Tensor] = {}
        self.anchor_: dict[str, torch.Tensor] = {}
        self._stiffness_: dict[str, torch.Tensor] = {}
        self._forces_: list[torch.Tensor] | None = None
        self._task_sample_ = TaskSample(0)

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self._task_sample_ = TaskSample(self._sample_size())
        self._stiffness_ = self._stiffness()
        self._record_trained_rows()

    def _observe(self, X, y, weight, task) -> None:
        self._record_trained_rows()
        self._task_sample_.add(X, y, weight)
        super()._observe(X, y, weight, task)

    def _penalty(self) -> torch.Tensor | None:
        if not self._stiffness_:
            self._forces_ = None
            return None
        params = dict(self.network_.named_parameters())
        live = [params[name] for name in self._stiffness_]
        anchors = [self.anchor_[name] for name in self._stiffness_]
        with torch.no_grad():
            rows = [p if p.shape[0] == a.shape[0] else p[: a.shape[0]]
                    for p, a in zip(live, anchors, strict=True)]
            diffs = torch._foreach_sub(rows, anchors)
            forces = torch._foreach_mul(diffs, list(self._stiffness_.values()))
            value = 0.5 * torch.stack(
                [torch.dot(f.view(-1), d.view(-1)) for f, d in zip(forces, diffs, strict=True)]
            ).sum()
        self._forces_ = forces
        return _QuadraticPenalty.apply(value, forces, *live)

    def _after_task(self, task: int) -> None:
        super()._after_task(task)
        importance = self._importance(task)
        if importance is not None:
            self._consolidate(importance)
        self._task_sample_ = TaskSample(0)

    # ------------------------------------------------------------------ helpers

    def _max_stiffness(self) -> float:
        """Largest stiffness kept: half of SGD-with-momentum's stability limit 2(1+mu)/eta."""
        if not self.clip_stiffness or self.optimizer != "sgd":
            return float("inf")
        return (1.0 + self.momentum) / self.learning_rate

    def _stiffness(self) -> dict[str, torch.Tensor]:
        name, factor = self._strength
        scale = factor * float(getattr(self, name))
        cap = self._max_stiffness()
        return {n: (scale * omega).clamp(0.0, cap) for n, omega in self.importance_.items()}

    def _task_tensors(self):
        X, y = self._task_sample_.tensors()
        return (None, None) if X is None else (X, y)

    def _record_trained_rows(self) -> None:
        # A new task id grows the output layer for the new task *before* the old task is
        # closed; end-of-task work must see only the units the closing task trained.
        self._trained_rows_ = {n: p.shape[0] for n, p in self.network_.named_parameters()}
        self._trained_units_ = len(self._unit_labels_)

    def _trained_parameters(self) -> dict[str, torch.Tensor]:
        """Detached clones of the parameters, restricted to the rows the closing task trained."""
        return {n: p.detach()[: self._trained_rows_.get(n, p.shape[0])].clone()
                for n, p in self.network_.named_parameters()}

    def _importance_kernel(self, kernel, *data) -> dict[str, torch.Tensor]:
        """Run an importance kernel on the network as the closing task trained it."""
        model = _TrainedUnits(self.network_, self._trained_units_)
        importance = kernel(model, *data, batch_size=_KERNEL_BATCH)
        rows = self._trained_rows_
        return {n: value[: rows.get(n, value.shape[0])]
                for n, value in ((k.removeprefix("network."), v) for k, v in importance.items())}


class EWCClassifier(ImportancePenalty):
    r"""Elastic weight consolidation (Kirkpatrick et al., PNAS 2017) and online EWC.

    When a task ends, the diagonal empirical Fisher information of the
    network's log-likelihood is computed exactly, per sample, on up to
    ``fisher_samples`` samples of the task (:func:`skcl.kernels.fisher_diagonal`;
    the log-probabilities are those of every class the model has):

    .. math:: F_i = \frac1N \sum_{n=1}^N
              \left(\frac{\partial \log p(y_n \mid x_n; \theta)}{\partial \theta_i}\right)^2 ,

    not the square of a mini-batch mean gradient, which is far smaller. Later
    tasks then minimise

    .. math:: \mathcal{L}_{task}(\theta) + \sum_{t} \frac{\lambda}{2}
              \sum_i F_{t,i} (\theta_i - \theta^*_{t,i})^2 .

    ``mode='separate'`` keeps one such term per past task :math:`t`, stored as
    the equivalent single quadratic (the sum of the Fishers around their
    Fisher-weighted mean anchor: the same gradient, a constant apart in value,
    and a cost per step independent of the number of tasks).
    ``mode='online'`` (online EWC, Schwarz et al., ICML 2018, "Progress &
    compress") keeps one running Fisher :math:`F^* \leftarrow \gamma F^* + F_t`
    anchored at the latest task's solution.

    Parameters
    ----------
    ewc_lambda : float, default=1000.0
        :math:`\lambda`, the strength of the penalty.
    mode : {'separate', 'online'}, default='separate'
        One penalty per task (EWC) or one decayed running penalty (online EWC).
    gamma : float, default=1.0
        :math:`\gamma`, decay of the running Fisher in online mode (ignored otherwise).
    fisher_samples : int, default=1000
        Samples of each task the Fisher is computed on (a reservoir sample of
        the task's distinct samples).
    clip_stiffness : bool, default=True
        Clip each parameter's penalty curvature :math:`\lambda F_i` to
        :math:`(1 + \mu) / \eta` under SGD, so that training cannot diverge
        (see :mod:`skcl.strategies.regularization`). ``False`` applies the
        paper's penalty unchanged.
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    fisher_ : dict of str to Tensor
        The Fisher of the last task that ended.
    importance_ : dict of str to Tensor
        The consolidated Fisher (sum over tasks, or the running one).
    anchor_ : dict of str to Tensor
        :math:`\theta^*`.

    Examples
    --------
    >>> from skcl import EWCClassifier
    >>> from skcl.datasets import load_permuted_digits
    >>> stream = load_permuted_digits(n_experiences=3)
    >>> clf = EWCClassifier(ewc_lambda=1e3, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf = clf.end_task()
    >>> sorted(clf.fisher_) == sorted(name for name, _ in clf.network_.named_parameters())
    True
    """

    _strength = ("ewc_lambda", 1.0)
    _parameter_constraints: dict = {
        **ImportancePenalty._parameter_constraints,
        "ewc_lambda": [Interval(Real, 0, None, closed="left")],
        "mode": [StrOptions({"separate", "online"})],
        "gamma": [Interval(Real, 0, 1, closed="both")],
        "fisher_samples": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        ewc_lambda=1000.0,
        mode="separate",
        gamma=1.0,
        fisher_samples=1000,
        clip_stiffness=True,
        hidden_layer_sizes=(256, 256),
        backbone=None,
        optimizer="sgd",
        learning_rate=0.05,
        momentum=0.9,
        batch_size=32,
        max_epochs=5,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, backbone=backbone, optimizer=optimizer,
            learning_rate=learning_rate, momentum=momentum, batch_size=batch_size,
            max_epochs=max_epochs, device=device, random_state=random_state, verbose=verbose,
        )
        self.ewc_lambda = ewc_lambda
        self.mode = mode
        self.gamma = gamma
        self.fisher_samples = fisher_samples
        self.clip_stiffness = clip_stiffness

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "ewc_lambda": 10.0, "fisher_samples": 64}

    def _sample_size(self) -> int:
        return self.fisher_samples

    def _importance(self, task: int) -> dict[str, torch.Tensor] | None:
        X, y = self._task_tensors()
        if X is None:
            return None
        self.fisher_ = self._importance_kernel(fisher_diagonal, X, y)
        return self.fisher_

    def _consolidate(self, importance: dict[str, torch.Tensor]) -> None:
        if self.mode == "online":
            self.importance_ = {n: self.gamma * omega for n, omega in self.importance_.items()}
            super()._consolidate(importance)
            return
        trained = self._trained_parameters()
        for name, fisher in importance.items():
            theta = trained[name]
            if name not in self.importance_:
                self.importance_[name], self.anchor_[name] = fisher, theta
                continue
            old = _pad_rows(self.importance_[name], fisher)
            star = _pad_rows(self.anchor_[name], theta, fill=theta)
            total = old + fisher
            mean = star + torch.nan_to_num(fisher / total) * (theta - star)
            self.importance_[name] = total
            self.anchor_[name] = torch.where(old > 0, mean, theta)


class _PathIntegral:
    r"""SI's per-step bookkeeping for one ``partial_fit`` call: after each step,
    :math:`\omega \mathrel{-}= (g - f) \Delta\theta`, with :math:`g` the gradient the backward
    pass left, :math:`f` the penalty's own gradient and :math:`\Delta\theta` the step."""

    def __init__(self, params, previous, omega, anchored_previous, anchored_omega):
        self.params = params
        self.previous = previous
        self.omega = omega
        self.anchored_previous = anchored_previous
        self.anchored_omega = anchored_omega
        self.grads: list[torch.Tensor | None] = []

    @torch.no_grad()
    def accumulate(self, forces: list[torch.Tensor] | None) -> None:
        if not self.params:
            return
        # A parameter without a gradient did not move: a zero gradient adds nothing.
        grads = [torch.zeros_like(p) if g is None else g
                 for p, g in zip(self.params, self.grads, strict=True)]
        torch._foreach_sub_(self.previous, self.params)
        torch._foreach_addcmul_(self.omega, grads, self.previous)
        if forces:
            torch._foreach_addcmul_(self.anchored_omega, forces, self.anchored_previous,
                                    value=-1.0)
        torch._foreach_copy_(self.previous, self.params)


class SIClassifier(ImportancePenalty):
    r"""Synaptic intelligence (Zenke, Poole & Ganguli, ICML 2017).

    During task :math:`\mu` every step adds to each parameter's path integral

    .. math:: \omega^\mu_i \mathrel{-}= g_i \, \Delta\theta_i ,

    with :math:`\Delta\theta_i` the step just taken and :math:`g_i` the
    gradient of the task loss (the total gradient read after the backward pass
    minus the penalty's own, known in closed form: no extra backward pass).
    When the task ends, with :math:`\Delta^\mu_i` the parameter's total change
    over the task,

    .. math:: \Omega_i \leftarrow \Omega_i + \frac{\omega^\mu_i}{(\Delta^\mu_i)^2 + \xi},

    and later tasks minimise
    :math:`\mathcal{L}_{task} + c \sum_i \Omega_i (\theta_i - \theta^*_i)^2`
    around the previous task's final parameters :math:`\theta^*`.

    Parameters
    ----------
    si_c : float, default=1.0
        :math:`c`, the strength of the penalty.
    xi : float, default=0.1
        :math:`\xi`, damping of the denominator.
    clip_stiffness : bool, default=True
        Clip each penalty curvature :math:`2 c \Omega_i` to :math:`(1 + \mu) / \eta`
        under SGD (see :mod:`skcl.strategies.regularization`).
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    importance_ : dict of str to Tensor
        :math:`\Omega`, summed over the tasks ended.
    anchor_ : dict of str to Tensor
        :math:`\theta^*`.

    Examples
    --------
    >>> from skcl import SIClassifier
    >>> from skcl.datasets import load_permuted_digits
    >>> stream = load_permuted_digits(n_experiences=3)
    >>> clf = SIClassifier(si_c=1.0, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.score(stream[0].X_test, stream[0].y_test) > 0.5
    True
    """

    _strength = ("si_c", 2.0)
    _parameter_constraints: dict = {
        **ImportancePenalty._parameter_constraints,
        "si_c": [Interval(Real, 0, None, closed="left")],
        "xi": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        si_c=1.0,
        xi=0.1,
        clip_stiffness=True,
        hidden_layer_sizes=(256, 256),
        backbone=None,
        optimizer="sgd",
        learning_rate=0.05,
        momentum=0.9,
        batch_size=32,
        max_epochs=5,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, backbone=backbone, optimizer=optimizer,
            learning_rate=learning_rate, momentum=momentum, batch_size=batch_size,
            max_epochs=max_epochs, device=device, random_state=random_state, verbose=verbose,
        )
        self.si_c = si_c
        self.xi = xi
        self.clip_stiffness = clip_stiffness

    def _before_task(self, task: int) -> None:
        super()._before_task(task)
        self._start_: dict[str, torch.Tensor] = {}
        self._previous_: dict[str, torch.Tensor] = {}
        self.omega_: dict[str, torch.Tensor] = {}

    def _observe(self, X, y, weight, task) -> None:
        # Parameters (and so this bookkeeping) change only when output units are added,
        # which happens before a call trains.
        tracked = [(n, p) for n, p in self.network_.named_parameters() if p.requires_grad]
        for name, p in tracked:
            self._track(name, p)
        names = [n for n, _ in tracked]
        anchored = [(n, self.anchor_[n].shape[0]) for n in self._stiffness_ if n in names]
        self._path_ = _PathIntegral(
            params=[p for _, p in tracked],
            previous=[self._previous_[n] for n in names],
            omega=[self.omega_[n] for n in names],
            anchored_previous=[self._previous_[n][:r] for n, r in anchored],
            anchored_omega=[self.omega_[n][:r] for n, r in anchored],
        )
        super()._observe(X, y, weight, task)
        self._path_ = None

    def _after_backward(self) -> None:
        super()._after_backward()
        self._path_.grads = [p.grad for p in self._path_.params]

    def _after_step(self) -> None:
        super()._after_step()
        self._path_.accumulate(self._forces_)

    def _importance(self, task: int) -> dict[str, torch.Tensor] | None:
        params = dict(self.network_.named_parameters())
        importance = {}
        for name, omega in self.omega_.items():
            total_change = params[name].detach()[: omega.shape[0]] - self._start_[name]
            importance[name] = omega / (total_change.square() + self.xi)
        self._start_, self._previous_, self.omega_ = {}, {}, {}
        return importance or None

    def _track(self, name: str, p: torch.Tensor) -> None:
        """Start the path integral of a parameter, or of output units added since."""
        theta = p.detach()
        if name not in self.omega_:
            self._start_[name], self._previous_[name] = theta.clone(), theta.clone()
            self.omega_[name] = torch.zeros_like(theta)
        elif self.omega_[name].shape[0] != theta.shape[0]:
            self._start_[name] = _pad_rows(self._start_[name], theta, fill=theta)
            self._previous_[name] = _pad_rows(self._previous_[name], theta, fill=theta)
            self.omega_[name] = _pad_rows(self.omega_[name], theta)


class MASClassifier(ImportancePenalty):
    r"""Memory aware synapses (Aljundi et al., ECCV 2018).

    When a task ends, each parameter's importance is the mean over up to
    ``importance_samples`` samples of the task of the absolute gradient of the
    squared L2 norm of the network's output :math:`f` (its logits), computed
    exactly per sample (:func:`skcl.kernels.mas_importance`):

    .. math:: \Omega_i \leftarrow \Omega_i + \frac1N \sum_{n=1}^N
              \left| \frac{\partial \lVert f(x_n; \theta) \rVert_2^2}{\partial \theta_i} \right| .

    It needs no labels (unsupervised). Later tasks minimise
    :math:`\mathcal{L}_{task} + \lambda \sum_i \Omega_i (\theta_i - \theta^*_i)^2`
    around the previous task's final parameters.

    Parameters
    ----------
    mas_lambda : float, default=1.0
        :math:`\lambda`, the strength of the penalty.
    importance_samples : int, default=1000
        Samples of each task the importance is computed on (a reservoir sample
        of the task's distinct samples).
    clip_stiffness : bool, default=True
        Clip each penalty curvature :math:`2 \lambda \Omega_i` to :math:`(1 + \mu) / \eta`
        under SGD (see :mod:`skcl.strategies.regularization`).
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    importance_ : dict of str to Tensor
        :math:`\Omega`, summed over the tasks ended.
    anchor_ : dict of str to Tensor
        :math:`\theta^*`.

    Examples
    --------
    >>> from skcl import MASClassifier
    >>> from skcl.datasets import load_permuted_digits
    >>> stream = load_permuted_digits(n_experiences=3)
    >>> clf = MASClassifier(mas_lambda=1.0, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     for _ in range(2):
    ...         clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.score(stream[0].X_test, stream[0].y_test) > 0.5
    True
    """

    _strength = ("mas_lambda", 2.0)
    _parameter_constraints: dict = {
        **ImportancePenalty._parameter_constraints,
        "mas_lambda": [Interval(Real, 0, None, closed="left")],
        "importance_samples": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        mas_lambda=1.0,
        importance_samples=1000,
        clip_stiffness=True,
        hidden_layer_sizes=(256, 256),
        backbone=None,
        optimizer="sgd",
        learning_rate=0.05,
        momentum=0.9,
        batch_size=32,
        max_epochs=5,
        device="auto",
        random_state=None,
        verbose=0,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, backbone=backbone, optimizer=optimizer,
            learning_rate=learning_rate, momentum=momentum, batch_size=batch_size,
            max_epochs=max_epochs, device=device, random_state=random_state, verbose=verbose,
        )
        self.mas_lambda = mas_lambda
        self.importance_samples = importance_samples
        self.clip_stiffness = clip_stiffness

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "importance_samples": 64}

    def _sample_size(self) -> int:
        return self.importance_samples

    def _importance(self, task: int) -> dict[str, torch.Tensor] | None:
        X, _ = self._task_tensors()
        if X is None:
            return None
        return self._importance_kernel(mas_importance, X)
