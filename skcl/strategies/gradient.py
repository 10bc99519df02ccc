"""Gradient projection with an episodic memory: GEM and A-GEM.

Both keep a per-task episodic memory (:class:`~skcl.memory.EpisodicMemory`)
and change the gradient of each step, after the backward pass and before
the optimizer (the ``_after_backward`` hook), so that the step does not
increase the loss on the memories of earlier tasks. The projections are the
compiled kernels :func:`skcl.kernels.gem_project` and
:func:`skcl.kernels.agem_project`.
"""

from __future__ import annotations

from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval
from torch import nn
from torch.nn import functional as F

from skcl import kernels
from skcl._loop import diverged
from skcl._per_sample import linear_backward, linear_layers
from skcl.base import Batch, ContinualClassifier, Step
from skcl.distributed import share
from skcl.memory import EpisodicMemory

# Ridge added to G G^T in GEM's dual QP, as in the paper's code.
_GEM_EPS = 1e-3


def per_task_gradients(network: nn.Module, params: list[torch.Tensor], batch: Batch,
                       bounds: list[tuple[int, int]]) -> torch.Tensor:
    r"""Gradient of each task's mean memory loss, from one batched backward pass.

    Row :math:`k` of the result is :math:`g_k = \nabla_\theta \frac{1}{|M_k|}
    \sum_{i \in M_k} w_i \ell(f_\theta(x_i), y_i)`, flattened over ``params``
    in order, for the rows ``bounds[k] = (start, stop)`` of ``batch``. The
    whole memory goes through the network once, in eval mode (so samples do
    not interact), and one backward pass gives every sample's output gradient
    :math:`\delta_i` at each linear layer; a linear layer's per-task gradients
    are segment sums of per-sample outer products,

    .. math:: \nabla_W \mathcal L_k = \sum_{i \in M_k} \delta_i a_i^\top
              = \Delta_k^\top A_k, \qquad \nabla_b \mathcal L_k = \sum_{i \in M_k} \delta_i,

    with :math:`a_i` the layer's input, all tasks in one batched product (the
    memory is laid out as equal blocks per task, short tasks padded with rows
    of weight 0). Any other parameter gets its per-task gradients from a
    second backward pass vectorised over the tasks (``is_grads_batched``), so
    no pass runs per task.

    Parameters
    ----------
    network : torch.nn.Module
        ``network(X, task)`` returns logits over output units.
    params : list of torch.Tensor
        The parameters, in the order of the flattening.
    batch : Batch
        The memory samples, grouped by task.
    bounds : list of (int, int)
        Row range of each task in ``batch``: consecutive ranges covering all
        its rows, in order.

    Returns
    -------
    G : torch.Tensor of shape (len(bounds), n_params)
        float32, contiguous, on the parameters' device.

    Examples
    --------
    >>> import torch
    >>> from skcl.base import Batch
    >>> from skcl.nn import SharedHead, make_mlp
    >>> from skcl.strategies.gradient import per_task_gradients
    >>> net = SharedHead(lambda: make_mlp(4, (8,)), n_features=4)
    >>> net.add_units(task=-1, n_new=3, seed=0)
    >>> zeros = torch.zeros(6, dtype=torch.long)
    >>> batch = Batch(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]), None, zeros)
    >>> per_task_gradients(net, list(net.parameters()), batch, [(0, 2), (2, 6)]).shape
    torch.Size([2, 67])
    """
    n, t = batch.y.shape[0], len(bounds)
    ends = [0] + [stop for _, stop in bounds]
    if [start for start, _ in bounds] != ends[:-1] or ends[-1] != n \
            or any(stop <= start for start, stop in bounds):
        raise ValueError(
            f"bounds {bounds} must be consecutive non-empty row ranges covering the batch's "
            f"{n} rows"
        )
    padded, m = _pad_tasks(batch, bounds)
    sizes = [p.numel() for p in params]
    offsets = dict(zip((id(p) for p in params), _cumsum(sizes), strict=True))
    G = torch.zeros((t, sum(sizes)), dtype=torch.float32, device=batch.X.device)
    layers = linear_layers(network, params)

    def memory_losses():
        logits = network(padded.X, padded.task)
        return F.cross_entropy(logits, padded.y, reduction="none") * padded.weight

    was_training = network.training
    network.eval()
    try:
        losses, grads, rest = linear_backward(layers, memory_losses, t * m, params)
    finally:
        network.train(was_training)
    for module, (a, delta) in grads.items():
        weight, bias = layers[module]
        out_features, in_features = weight.shape
        delta = delta.reshape(t, m, out_features)
        w = offsets[id(weight)]
        torch.bmm(delta.transpose(1, 2), a.reshape(t, m, in_features),
                  out=G[:, w:w + out_features * in_features].view(t, out_features, in_features))
        if bias is not None:
            b = offsets[id(bias)]
            torch.sum(delta, dim=1, out=G[:, b:b + out_features])
    if rest:
        per_task = losses.reshape(t, m).sum(1)
        eye = torch.eye(t, dtype=per_task.dtype, device=per_task.device)
        grads = torch.autograd.grad(per_task, rest, grad_outputs=eye, is_grads_batched=True,
                                    allow_unused=True, materialize_grads=True)
        for p, g in zip(rest, grads, strict=True):
            G[:, offsets[id(p)]:offsets[id(p)] + p.numel()] = g.reshape(t, -1)
    return G


def _pad_tasks(batch: Batch, bounds: list[tuple[int, int]]) -> tuple[Batch, int]:
    """The batch laid out as ``t`` blocks of ``m`` rows (``m`` the largest task).

    Each task's rows start its block; padding rows repeat the block's task,
    take unit 0 and weigh 0, so their gradients vanish. ``weight`` holds each
    real row's factor ``w_i / |M_k|``.
    """
    n, t = batch.y.shape[0], len(bounds)
    device = batch.X.device
    counts = torch.tensor([stop - start for start, stop in bounds], device=device)
    m = int(counts.max())
    weight = torch.repeat_interleave(1.0 / counts, counts, output_size=n).to(batch.X.dtype)
    if batch.weight is not None:
        weight = weight * batch.weight
    if m * t == n:
        return batch._replace(weight=weight), m
    shift = torch.arange(t, device=device) * m - torch.tensor([s for s, _ in bounds],
                                                                device=device)
    pos = torch.arange(n, device=device) + torch.repeat_interleave(shift, counts, output_size=n)
    block_task = batch.task[[start for start, _ in bounds]]
    padded = Batch(
        batch.X.new_zeros((t * m, *batch.X.shape[1:])).index_copy_(0, pos, batch.X),
        batch.y.new_zeros(t * m).index_copy_(0, pos, batch.y),
        weight.new_zeros(t * m).index_copy_(0, pos, weight),
        torch.repeat_interleave(block_task, m).index_copy_(0, pos, batch.task),
    )
    return padded, m


def _cumsum(sizes: list[int]) -> list[int]:
    out, total = [], 0
    for size in sizes:
        out.append(total)
        total += size
    return out


class _EpisodicProjection(ContinualClassifier):
    """A per-task episodic memory and a projection of every step's gradient.

    Each ``partial_fit`` call is offered to the memory once. After each
    backward pass, when earlier tasks have memories, the flattened gradient
    :math:`g` is replaced by the subclass's ``_project(g, tasks)``.
    """

    def _initialize(self) -> None:
        super()._initialize()
        self.memory_ = EpisodicMemory(self.memory_size)

    def _observe(self, samples: Batch) -> None:
        self.memory_.offer(samples, self._rng_)
        super()._observe(samples)

    def _params(self) -> list[torch.Tensor]:
        return self._optimizer_.param_groups[0]["params"]

    def _after_backward(self, batch: Batch, step: Step) -> None:
        super()._after_backward(batch, step)
        tasks = [t for t in self.memory_.tasks if t != self.current_task_]
        if not tasks:
            return
        params = self._params()
        g = torch.cat([torch.zeros(p.numel(), device=p.device) if p.grad is None
                       else p.grad.reshape(-1) for p in params])
        try:
            projected = self._project(g, tasks)
        except kernels.NonFiniteError as exc:
            raise diverged(self, batch.X) from exc
        if projected is g:
            return
        start = 0
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(projected[start:start + p.numel()].view_as(p))
            start += p.numel()


class GEMClassifier(_EpisodicProjection):
    r"""Gradient episodic memory (Lopez-Paz & Ranzato, NeurIPS 2017).

    "Gradient Episodic Memory for Continual Learning". Each task keeps an
    episodic memory :math:`\mathcal M_k` (``memory_size`` in total, shared
    equally among the tasks seen). A step may not increase the loss of any
    earlier task's memory: with :math:`g` the gradient on the incoming batch
    and :math:`g_k = \nabla_\theta \ell(f_\theta, \mathcal M_k)`, GEM takes the
    step along

    .. math:: \min_{g'} \tfrac12 \lVert g - g' \rVert^2 \quad \text{s.t.} \quad
              \langle g', g_k \rangle \ge 0 \;\; \forall k < t,

    solved, when some :math:`\langle g, g_k \rangle < 0`, through its dual

    .. math:: \min_v \tfrac12 v^\top (GG^\top + \epsilon\,\mathrm{diag}(GG^\top)) v
              + (Gg)^\top v \quad \text{s.t.} \quad v \ge m,

    :math:`m` = ``memory_strength``, :math:`g' = G^\top v + g`
    (:func:`skcl.kernels.gem_project`, :math:`\epsilon = 10^{-3}`; the paper's
    code adds :math:`\epsilon I`, which a row-scaled ridge replaces so that
    memory gradients of any norm keep their constraint). A positive
    ``memory_strength`` pushes :math:`g'` inside the cone, the paper's bias
    toward positive backward transfer. The :math:`t - 1` memory gradients come
    from one batched backward pass over the whole memory
    (:func:`per_task_gradients`), not one pass per task.

    Parameters
    ----------
    memory_size : int, default=200
        Episodic memory over all tasks; each of :math:`T` tasks keeps
        ``memory_size // T`` samples (reservoir sampling within the task).
    memory_strength : float, default=0.5
        The margin: lower bound on the dual variables :math:`v`.
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    memory_ : EpisodicMemory
        The per-task memories, on the estimator's device.

    Examples
    --------
    >>> from skcl import GEMClassifier
    >>> from skcl.datasets import load_split_digits
    >>> stream = load_split_digits()
    >>> clf = GEMClassifier(memory_size=100, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.memory_.segments()
    [(0, 0, 20), (1, 20, 40), (2, 40, 60), (3, 60, 80), (4, 80, 100)]
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "memory_size": [Interval(Integral, 1, None, closed="left")],
        "memory_strength": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, memory_size: int = 200, memory_strength: float = 0.5,
                 hidden_layer_sizes=(256, 256), backbone=None, optimizer="sgd",
                 learning_rate=0.05, momentum=0.9, batch_size=32, max_epochs=5, device="auto",
                 random_state=None, verbose=0, distributed="auto"):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, backbone=backbone,
                         optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                         batch_size=batch_size, max_epochs=max_epochs, device=device,
                         random_state=random_state, verbose=verbose, distributed=distributed)
        self.memory_size = memory_size
        self.memory_strength = memory_strength

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "memory_size": 40}

    def memory_gradients(self, tasks: list[int]) -> torch.Tensor:
        """:math:`G`: one row per task in ``tasks``, the gradient of its mean memory loss.

        In data-parallel training each rank computes the rows of its share of every
        task's memory, as sums, and the sums and counts are all-reduced.
        """
        segments = [(start, stop) for _, start, stop in self.memory_.segments(tasks)]
        items, params, comm = self.memory_.items(tasks), self._params(), self._collective()
        if comm.world_size == 1:
            return per_task_gradients(self.network_, params, items, segments)
        device = items.X.device
        shares = [share(comm, stop - start, device) + start for start, stop in segments]
        counts = torch.tensor([float(len(s)) for s in shares], device=device)
        present = [k for k, s in enumerate(shares) if len(s)]
        G = torch.zeros((len(segments), sum(p.numel() for p in params)), device=device)
        if present:
            rows = torch.cat([shares[k] for k in present])
            ends = torch.cumsum(counts[present], 0).long().tolist()
            bounds = list(zip([0, *ends[:-1]], ends, strict=True))
            G[present] = per_task_gradients(self.network_, params, items.take(rows), bounds)
        flat = comm.all_reduce(torch.cat([(G * counts[:, None]).reshape(-1), counts]))
        totals = flat[-len(segments):].clamp(min=1)
        return (flat[:-len(segments)].view_as(G) / totals[:, None]).contiguous()

    def _project(self, g: torch.Tensor, tasks: list[int]) -> torch.Tensor:
        return kernels.gem_project(self.memory_gradients(tasks), g,
                                   margin=self.memory_strength, eps=_GEM_EPS)


class AGEMClassifier(_EpisodicProjection):
    r"""Averaged gradient episodic memory (Chaudhry et al., ICLR 2019).

    "Efficient Lifelong Learning with A-GEM". GEM's :math:`t - 1` constraints
    become one: the step may not increase the average loss on the episodic
    memory. With :math:`g_{ref}` the gradient on ``sample_size`` samples drawn
    from the memories of earlier tasks (a new draw each step),

    .. math:: g' = g - \frac{g^\top g_{ref}}{g_{ref}^\top g_{ref}} g_{ref}
              \quad \text{if } g^\top g_{ref} < 0, \qquad g' = g \text{ otherwise}

    (:func:`skcl.kernels.agem_project`), so :math:`\langle g', g_{ref} \rangle
    \ge 0`.

    Parameters
    ----------
    memory_size : int, default=200
        Episodic memory over all tasks, shared equally among the tasks seen.
    sample_size : int, default=256
        Memory samples per reference gradient (all of them when fewer).
    hidden_layer_sizes, backbone, optimizer, learning_rate, momentum, batch_size, \
max_epochs, device, random_state, verbose, distributed
        As in :class:`~skcl.base.ContinualClassifier`.

    Attributes
    ----------
    memory_ : EpisodicMemory
        The per-task memories, on the estimator's device.

    Examples
    --------
    >>> from skcl import AGEMClassifier
    >>> from skcl.datasets import load_permuted_digits
    >>> stream = load_permuted_digits()[:3]
    >>> clf = AGEMClassifier(sample_size=64, hidden_layer_sizes=(64,), random_state=0)
    >>> for exp in stream:
    ...     clf = clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    >>> clf.memory_.tasks, len(clf.memory_)
    ([0, 1, 2], 200)
    """

    _parameter_constraints: dict = {
        **ContinualClassifier._parameter_constraints,
        "memory_size": [Interval(Integral, 1, None, closed="left")],
        "sample_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, memory_size: int = 200, sample_size: int = 256,
                 hidden_layer_sizes=(256, 256), backbone=None, optimizer="sgd",
                 learning_rate=0.05, momentum=0.9, batch_size=32, max_epochs=5, device="auto",
                 random_state=None, verbose=0, distributed="auto"):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, backbone=backbone,
                         optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
                         batch_size=batch_size, max_epochs=max_epochs, device=device,
                         random_state=random_state, verbose=verbose, distributed=distributed)
        self.memory_size = memory_size
        self.sample_size = sample_size

    @classmethod
    def _unit_test_params(cls) -> dict:
        return {**super()._unit_test_params(), "memory_size": 40, "sample_size": 20}

    def reference_gradient(self, sample: Batch) -> torch.Tensor:
        """:math:`g_{ref}`: the flattened gradient of the mean loss on ``sample``.

        In data-parallel training every rank drew the same sample; each takes the
        gradient of its share's summed loss, and the sums and counts are all-reduced.
        """
        comm = self._collective()
        if comm.world_size == 1:
            return self._flat_gradient(sample, scale=None)
        part = self._share(sample)
        flat = self._flat_gradient(part, scale=part.n)
        total = comm.all_reduce(torch.cat([flat, flat.new_tensor([float(part.n)])]))
        return total[:-1] / total[-1].clamp(min=1)

    def _flat_gradient(self, sample: Batch, scale: int | None) -> torch.Tensor:
        """Gradient of the mean loss on ``sample`` (times ``scale``), flattened, in eval mode."""
        params, network = self._params(), self.network_
        if not sample.n:
            return torch.zeros(sum(p.numel() for p in params), device=sample.X.device)
        was_training = network.training
        network.eval()
        try:
            loss = self._loss(network(sample.X, sample.task), sample)
        finally:
            network.train(was_training)
        if scale is not None:
            loss = loss * scale
        grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        return torch.cat([g.reshape(-1) for g in grads])

    def _project(self, g: torch.Tensor, tasks: list[int]) -> torch.Tensor:
        sample = self.memory_.sample(self.sample_size, self._rng_, tasks=tasks)
        return kernels.agem_project(g, self.reference_gradient(sample))
