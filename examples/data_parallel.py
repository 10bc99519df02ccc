"""
Data-parallel training with torchrun
====================================

One stream, many processes (:mod:`skcl.distributed`): ``torchrun`` starts
one process per CPU share or GPU, each process passes *its shard* of every
training call to ``partial_fit``, and every process ends with the same model,
the one a single process would have trained with the same settings.

This script needs several processes, so the documentation shows it without
running it. On one machine, two processes::

    torchrun --nproc_per_node=2 examples/data_parallel.py

On two machines with two processes each, run on both (``--node_rank=1`` on
the second), ``host0`` being the first machine's address::

    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=2 \\
             --rdzv_backend=c10d --rdzv_endpoint=host0:29500 examples/data_parallel.py
    # or a static rendezvous: --master_addr=host0 --master_port=29500 instead of --rdzv_*

On GPUs, give ``--nproc_per_node`` the number of GPUs of each machine: each
process takes the GPU of its ``LOCAL_RANK`` and the processes talk over NCCL.
Run without ``torchrun``, the script trains in one plain process.

``skcl run --estimator replay --stream split-digits --nproc 2`` does the same
from the command line.
"""

# %%
# The process group
# -----------------
# ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and the
# rendezvous variables). Gloo carries the collectives between CPU processes,
# NCCL between GPUs, one GPU per process.
import os

import numpy as np
import torch
import torch.distributed as dist

from skcl import ReplayClassifier
from skcl.datasets import load_split_digits

rank = int(os.environ.get("RANK", "0"))
world = int(os.environ.get("WORLD_SIZE", "1"))
local_rank = int(os.environ.get("LOCAL_RANK", "0"))
if torch.cuda.is_available():
    torch.cuda.set_device(local_rank)
    device, backend = f"cuda:{local_rank}", "nccl"
else:
    device, backend = "cpu", "gloo"
if world > 1:
    dist.init_process_group(backend)

# %%
# The estimator
# -------------
# Every process builds the same estimator with the same ``random_state``. Its
# ``distributed='auto'`` finds the process group. ``batch_size`` is the
# *global* mini-batch: each of the ``world`` processes trains about
# ``batch_size / world`` of its rows, and the gradients are averaged over all
# of them, so the number of processes does not change what is learned. The
# replay memory is the same on every process; each replayed batch is split
# between them.
BATCH_SIZE = 64
clf = ReplayClassifier(hidden_layer_sizes=(256, 256), batch_size=BATCH_SIZE, memory_size=200,
                       device=device, random_state=0)

# %%
# Training on shards
# ------------------
# Every process makes the same calls, in the same order, each with its own
# rows: here the ``rank``-th of ``world`` contiguous slices of the
# experience. Predictions are local, so rank 0 alone scores the model after
# each experience and fills the accuracy matrix ``R``.
stream = load_split_digits()
R = np.full((len(stream), len(stream)), np.nan)
for i, exp in enumerate(stream):
    rows = np.array_split(np.arange(len(exp.y_train)), world)[rank]
    for _ in range(5):
        clf.partial_fit(exp.X_train[rows], exp.y_train[rows], task_id=exp.task_id)
    clf.end_task()
    if rank == 0:
        R[i, : i + 1] = [clf.score(seen.X_test, seen.y_test) for seen in stream[: i + 1]]

# %%
# The accuracy matrix
# -------------------
# Class-incremental accuracy (no task id at test time) on every experience
# seen so far. A model trained on several processes pickles like any other
# and predicts in one plain process.
if rank == 0:
    print(f"{world} process(es) over {backend}; global batch {BATCH_SIZE}, "
          f"{-(-BATCH_SIZE // world)} rows per process")
    for i, row in enumerate(R):
        print(f"after {i}: " + "  ".join(f"{a:.3f}" for a in row[: i + 1]))
    print(f"ACC {R[-1].mean():.3f}")
if world > 1:
    dist.destroy_process_group()
