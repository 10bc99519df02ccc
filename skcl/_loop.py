"""The training loop every skcl estimator runs (see :mod:`skcl.base` for its hooks)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from skcl._batch import Batch, Step


def run_epoch(est, samples: Batch, network: nn.Module, optimizer, rng: np.random.Generator,
              forward, loss_fn, hooks: bool, epoch: int) -> None:
    """One epoch of mini-batch training of ``network`` over ``samples``: the one loop.

    Mini-batches of ``est.batch_size`` in the order ``rng`` shuffles; each step
    runs ``forward(batch, step)``, the loss (``loss_fn(logits, batch)``, or
    ``est._loss`` plus ``est._penalty()``), backward and ``optimizer.step()``,
    with ``est``'s ``_training_batch``, ``_after_backward`` and ``_after_step``
    hooks around them when ``hooks`` is true. Whether every step's loss was
    finite is checked once, at the end of the epoch (one device sync); a
    non-finite loss raises ``FloatingPointError``.
    """
    n, size = samples.n, est.batch_size
    order = torch.from_numpy(rng.permutation(n)).to(samples.X.device)
    task = samples.task
    # One task for the whole epoch (the usual case): slice a constant instead of indexing.
    single_task = task[:size] if bool((task == task[0]).all()) else None
    network.train()
    starts = range(0, n, size)
    if est.verbose > 0:
        starts = tqdm(starts, desc=f"task {est.current_task_}", unit="batch", leave=False)
    finite = None
    n_batches = -(-n // size)
    for index, start in enumerate(starts):
        step = Step(epoch, index, n_batches)
        idx = order[start:start + size]
        batch = Batch(*(None if f is None else f[idx] for f in samples))
        if single_task is not None:
            batch = batch._replace(task=single_task[:idx.shape[0]])
        if hooks:
            batch = est._training_batch(batch, step)
        optimizer.zero_grad(set_to_none=True)
        logits = forward(batch, step)
        if loss_fn is None:
            loss = est._loss(logits, batch)
            penalty = est._penalty()
            if penalty is not None:
                loss = loss + penalty
        else:
            loss = loss_fn(logits, batch)
        loss.backward()
        ok = torch.isfinite(loss.detach())
        finite = ok if finite is None else finite & ok
        if hooks:
            est._after_backward(batch, step)
        optimizer.step()
        if hooks:
            est._after_step(batch, step)
    if finite is not None and not bool(finite):
        scale = float(samples.X.abs().max()) if samples.X.numel() else 0.0
        raise FloatingPointError(
            f"training diverged on task {est.current_task_}: the loss became infinite or "
            f"NaN. Likely causes: inputs on a large scale (max |X| = {scale:.3g}; "
            f"standardize them), sample weights too large, learning_rate="
            f"{est.learning_rate} too high, or the method's strength. The estimator "
            "was left as it was before this call."
        )
