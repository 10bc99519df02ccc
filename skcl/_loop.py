"""The training loop every skcl estimator runs (see :mod:`skcl.base` for its hooks)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from skcl._batch import Batch, Step

#: A training loss beyond this is taken as divergence (see :func:`run_epoch`).
LOSS_CEILING = 1e10
#: A trained parameter beyond this in magnitude is taken as divergence.
PARAMETER_CEILING = 1e8


def run_epoch(est, samples: Batch, network: nn.Module, optimizer, rng: np.random.Generator,
              forward, loss_fn, hooks: bool, epoch: int) -> None:
    """One epoch of mini-batch training of ``network`` over ``samples``: the one loop.

    Mini-batches of ``est.batch_size`` in the order ``rng`` shuffles; each step
    runs ``forward(batch, step)``, the loss (``loss_fn(logits, batch)``, or
    ``est._loss`` plus ``est._penalty()``), backward and ``optimizer.step()``,
    with ``est``'s ``_training_batch``, ``_after_backward`` and ``_after_step``
    hooks around them when ``hooks`` is true.

    Divergence is checked once, at the end of the epoch (one device sync): a
    step whose loss was not finite or exceeded :data:`LOSS_CEILING`, or a
    trained parameter beyond :data:`PARAMETER_CEILING` in magnitude, raises
    ``FloatingPointError``. The ceilings catch finite blow-ups too: a single
    input of 1e30 can leave the loss small (its gradient moves only the
    weights that read it) while those weights reach 1e26, and ruin every
    later prediction of a sample where that input is not zero.
    """
    comm = est._collective()
    n, size = samples.n, est.batch_size
    order = torch.from_numpy(rng.permutation(n)).to(samples.X.device)
    task = samples.task
    # One task for the whole epoch (the usual case): slice a constant instead of indexing.
    single_task = task[:size] if bool((task == task[0]).all()) else None
    network.train()
    starts = range(0, n, size)
    if est.verbose > 0:
        starts = tqdm(starts, desc=f"task {est.current_task_}", unit="batch", leave=False)
    n_batches, losses = -(-n // size), []
    X, y, weight, _, origin = samples
    for index, start in enumerate(starts):
        idx = order[start:start + size]
        step = Step(epoch, index, n_batches, idx.shape[0])
        if comm.world_size > 1:
            idx = idx[comm.rank::comm.world_size]
        batch = Batch(X[idx], y[idx], None if weight is None else weight[idx],
                      task[idx] if single_task is None else single_task[:idx.shape[0]],
                      None if origin is None else origin[idx])
        if hooks:
            batch = est._training_batch(batch, step)
        optimizer.zero_grad(set_to_none=True)
        if comm.world_size > 1:
            value = _data_parallel_step(est, comm, optimizer, forward, loss_fn, batch, step)
        else:
            logits = forward(batch, step)
            if loss_fn is None:
                loss = est._loss(logits, batch)
                penalty = est._penalty()
                if penalty is not None:
                    loss = loss + penalty
            else:
                loss = loss_fn(logits, batch)
            loss.backward()
            value = loss.detach()
        losses.append(value)  # no tensor op per step: checked once, after the epoch
        if hooks:
            est._after_backward(batch, step)
        optimizer.step()
        if hooks:
            est._after_step(batch, step)
    healthy = None
    if losses:
        trace = torch.stack(losses)
        healthy = torch.isfinite(trace).all() & (trace.abs() <= LOSS_CEILING).all()
        # Each parameter's min and max (5x faster than an inf-norm on CPU); NaN propagates.
        extremes = [v for group in optimizer.param_groups for p in group["params"]
                    if p.numel() for v in torch.aminmax(p.detach())]
        if extremes:
            largest = torch.stack(extremes).abs().max()
            healthy = healthy & torch.isfinite(largest) & (largest <= PARAMETER_CEILING)
    if healthy is not None and comm.world_size > 1:  # every rank raises, or none
        healthy = comm.all_reduce((~healthy).to(torch.float32).reshape(1)) == 0
    if healthy is not None and not bool(healthy):
        raise diverged(est, samples.X)


def _data_parallel_step(est, comm, optimizer, forward, loss_fn, batch: Batch,
                        step: Step) -> torch.Tensor:
    """Backward on this rank's rows of the global mini-batch, then the global mean gradient.

    The loss is summed over the rank's rows (the per-sample mean times their
    number), the gradients and row counts are summed over ranks in one
    all-reduce, and the sum is divided by the global count: the gradient of
    the mean loss over the global batch. A penalty's own gradient (the
    parameters are the same on every rank, so it is too) is added once, after
    the reduction; a penalty that adds its force in ``_after_backward`` (as
    :class:`skcl.components.QuadraticPenalty` does) joins the reported loss only.
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    value = torch.zeros((), device=batch.X.device)
    loss = None
    if batch.n:
        logits = forward(batch, step)
        loss = (est._loss(logits, batch) if loss_fn is None else loss_fn(logits, batch))
        value = loss.detach()
    penalty = est._penalty() if loss_fn is None else None
    with_gradient = penalty is not None and penalty.requires_grad
    if loss is not None:
        (loss * batch.n).backward(retain_graph=with_gradient)
    if penalty is not None:
        value = value + penalty.detach()
    flat = torch.cat([torch.zeros(p.numel(), device=p.device) if p.grad is None
                      else p.grad.reshape(-1) for p in params]
                     + [torch.tensor([float(batch.n)], device=value.device)])
    comm.all_reduce(flat)
    total, start = flat[-1].clamp(min=1), 0
    for p in params:
        p.grad = (flat[start:start + p.numel()] / total).view_as(p).clone()
        start += p.numel()
    if with_gradient:
        penalty.backward()
    return value


def diverged(est, X: torch.Tensor) -> FloatingPointError:
    """The error a diverging training raises, naming the likely causes."""
    scale = float(X.abs().max()) if X.numel() else 0.0
    return FloatingPointError(
        f"training diverged on task {est.current_task_}: the loss became infinite, NaN "
        f"or larger than {LOSS_CEILING:g}, or a parameter grew beyond "
        f"{PARAMETER_CEILING:g}. Likely causes: inputs on a large scale (max |X| = "
        f"{scale:.3g}; standardize them), sample weights too large, learning_rate="
        f"{est.learning_rate} too high, or the method's strength. The estimator was left "
        "as it was before this call."
    )
