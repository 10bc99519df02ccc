"""One rank of the data-parallel equivalence test (tests/test_distributed.py).

Run with the torchrun environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
and an output folder: trains every estimator of ``CASES`` on its shard of each
call of a small stream, and saves its predictions and memories. With
``WORLD_SIZE`` unset it trains alone on whole calls: the single-process
reference.
"""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import torch

import skcl
from skcl.datasets import load_split_digits

#: label -> (class name, parameters): the wave-1 estimators, small settings.
CASES = {
    "naive": ("NaiveClassifier", {}),
    "ewc": ("EWCClassifier", {}),
    "online-ewc": ("EWCClassifier", {"mode": "online"}),
    "si": ("SIClassifier", {}),
    "mas": ("MASClassifier", {}),
    "lwf": ("LwFClassifier", {}),
    "imm": ("IMMClassifier", {"merge": "mode"}),
    "replay": ("ReplayClassifier", {"memory_size": 40}),
    "replay-balanced": ("ReplayClassifier", {"memory_size": 40, "policy": "class_balanced"}),
    "mir": ("MIRClassifier", {"memory_size": 40, "n_candidates": 20, "k": 8}),
    "gdumb": ("GDumbClassifier", {"memory_size": 40, "gdumb_epochs": 3}),
    "latent": ("LatentReplayClassifier", {"memory_size": 40}),
    "gem": ("GEMClassifier", {"memory_size": 40}),
    "agem": ("AGEMClassifier", {"memory_size": 40, "sample_size": 16}),
    "icarl": ("ICaRLClassifier", {"memory_size": 40}),
}
#: The families added since: the seam they follow is checked the same way.
LATER_CASES = {
    "packnet": ("PackNetClassifier", {"n_tasks": 3}),
    "piggyback": ("PiggybackClassifier", {}),
    "hat": ("HATClassifier", {}),
    "cpg": ("CPGClassifier", {}),
    "progressive": ("ProgressiveClassifier", {}),
    "pnc": ("ProgressCompressClassifier", {}),
    "cwrstar": ("CWRStarClassifier", {}),
    "ar1": ("AR1Classifier", {}),
    "dgr": ("GenerativeReplayClassifier", {}),
    "gnr": ("GenerativeNegativeReplayClassifier", {}),
    "hnet": ("HyperNetworkClassifier", {}),
}
SETTINGS = dict(hidden_layer_sizes=(32,), batch_size=16, device="cpu", random_state=0)
N_TRAIN, N_TASKS, EPOCHS = 64, 3, 2


def memory_of(clf) -> np.ndarray | None:
    """Everything a method keeps between tasks, flattened to compare across ranks."""
    if hasattr(clf, "exemplars_"):
        return clf.exemplars_.items().X.numpy() if len(clf.exemplars_) else None
    memory = getattr(clf, "memory_", None)
    if memory is None or not len(memory):
        return None
    return memory.items().X.numpy()


def main(out: str) -> None:
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    stream = load_split_digits()[:N_TASKS]
    X_test = np.vstack([e.X_test[:40] for e in stream])
    results = {}
    cases = LATER_CASES if os.environ.get("SKCL_DP_CASES") == "later" else CASES
    for label, (name, params) in cases.items():
        clf = getattr(skcl, name)(**SETTINGS, **params)
        memories = []
        for exp in stream:
            X, y = exp.X_train[:N_TRAIN], exp.y_train[:N_TRAIN]
            rows = np.array_split(np.arange(len(y)), world)[rank]
            for _ in range(EPOCHS):
                clf.partial_fit(X[rows], y[rows], task_id=exp.task_id)
            clf.end_task()
            memories.append(memory_of(clf))
        results[label] = {"predict": clf.predict(X_test), "proba": clf.predict_proba(X_test),
                          "memories": memories, "pickle": pickle.dumps(clf)}
    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
