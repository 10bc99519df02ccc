"""
A benchmark grid on a Dask cluster
==================================

:func:`skcl.bench.run_bench` trains every combination of estimators,
streams, scenarios and seeds, saving each finished cell to
``results.json`` and writing ``REPORT.md``. With ``backend="dask"`` the
cells run on a Dask cluster. This example starts a small cluster inside this
process; on a real cluster, pass its scheduler's address instead
(``scheduler="tcp://host:8786"``, with skcl installed on the workers).

The grid is tiny (one epoch, a 32-unit network, two seeds) so that it runs
in seconds.
"""

# %%
# An in-process cluster
# ---------------------
# One worker thread: PyTorch's random generator is shared by the threads of a
# process, so cells running side by side in threads of one process would not
# be reproducible. A real cluster runs workers in processes, one cell each.
import logging
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from dask.distributed import LocalCluster

from skcl.bench import run_bench

cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                       dashboard_address=None, silence_logs=logging.ERROR)
print(cluster.scheduler_address)

# %%
# The grid
# --------
# Three estimators on split-digits, scored with and without the task id,
# two seeds: 12 cells. ``params`` applies to every estimator that has the
# parameter; ``"replay.memory_size"`` only to the replay estimator.
out = Path(tempfile.mkdtemp()) / "bench"
run = run_bench(
    estimators=["naive", "replay", "ewc"],
    streams=["split-digits"],
    scenarios=["class", "task"],
    seeds=[0, 1],
    epochs=1,
    params={"hidden_layer_sizes": (32,), "replay.memory_size": 100},
    backend="dask",
    scheduler=cluster.scheduler_address,
    out=out,
    progress=False,
)
cluster.close()
print(f"{len(run.ran)} cells ran, {len(run.failed)} failed")
print("\n".join(run.report.read_text().splitlines()[:5]))

# %%
# Run again: nothing left to do
# -----------------------------
# Every cell is already in ``results.json``, so the same call reuses them.
# An interrupted grid resumes the same way. (``backend="serial"`` here: no
# cell needs to run.)
again = run_bench(["naive", "replay", "ewc"], ["split-digits"], ["class", "task"], [0, 1],
                  epochs=1, params={"hidden_layer_sizes": (32,), "replay.memory_size": 100},
                  backend="serial", out=out, progress=False)
print(f"{len(again.ran)} cells ran, {len(again.reused)} reused")

# %%
# The results
# -----------
# Each cell's record in ``run.cells`` holds the accuracy matrix and its
# metrics; ``REPORT.md`` shows them as tables and figures. Here we plot the
# mean ACC over seeds.
names = ["naive", "replay", "ewc"]
fig, ax = plt.subplots(figsize=(6, 3.5))
for k, scenario in enumerate(["class", "task"]):
    means = [np.mean([c["acc"] for c in run.cells
                      if c["estimator"] == name and c["scenario"] == scenario])
             for name in names]
    ax.bar(np.arange(len(names)) + 0.4 * k, means, width=0.4, label=scenario)
ax.set_xticks(np.arange(len(names)) + 0.2, names)
ax.set_ylabel("ACC (mean over 2 seeds)")
ax.set_ylim(0, 1)
ax.legend(title="scenario")
fig.tight_layout()

