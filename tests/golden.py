"""The golden record: every estimator's predictions on small fixed streams.

Run as a script, it trains each estimator of skcl on split-digits and
permuted-digits (small settings, fixed seeds) and writes the predictions and
``predict_proba`` of each, scored with and without task ids, to an ``.npz``::

    ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=1 \
        python tests/golden.py tests/data/golden.npz

``tests/test_golden.py`` runs it under those pinned kernels and compares the
result with the committed record bit for bit. A refactor must leave the record
unchanged; a deliberate change regenerates it in the same commit, whose
message says why.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

import skcl
from skcl.datasets import load_permuted_digits, load_split_digits

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
              "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
N_TRAIN, N_TEST, EPOCHS = 120, 60, 2


#: The estimators the record was made for: the seventeen on main before the core
#: refactor. Estimators added since are checked by their own tests.
RECORDED = ("AGEMClassifier", "CumulativeClassifier", "EWCClassifier", "EnsembleClassifier",
            "GDumbClassifier", "GEMClassifier", "ICaRLClassifier", "IMMClassifier",
            "JointClassifier", "LatentReplayClassifier", "LwFClassifier", "MASClassifier",
            "MIRClassifier", "MultiHeadClassifier", "NaiveClassifier", "ReplayClassifier",
            "SIClassifier")


def estimators() -> list[type]:
    """The recorded estimators' classes."""
    return [getattr(skcl, name) for name in RECORDED]


def _streams():
    return {"split": load_split_digits(), "permuted": load_permuted_digits(n_experiences=3)}


def fingerprint() -> str:
    """What the record's bits depend on besides skcl: torch, the kernels' SIMD level, the env."""
    from skcl.kernels import backend_info

    pinned = ",".join(f"{k}={os.environ.get(k, '')}" for k in sorted(PINNED_ENV))
    return f"torch={torch.__version__};simd={backend_info()['cpu']['simd']};{pinned}"


def record() -> dict[str, np.ndarray]:
    """Train every estimator on every stream; return ``{key: array}``."""
    torch.set_num_threads(1)
    out: dict[str, np.ndarray] = {"fingerprint": np.array(fingerprint())}
    for stream_name, stream in _streams().items():
        X_test = np.concatenate([e.X_test[:N_TEST] for e in stream])
        y_task = np.concatenate([np.full(len(e.X_test[:N_TEST]), e.task_id) for e in stream])
        for cls in estimators():
            params = {**cls._unit_test_params(), "random_state": 0}
            clf = cls(**params)
            for exp in stream:
                for _ in range(EPOCHS):
                    clf.partial_fit(exp.X_train[:N_TRAIN], exp.y_train[:N_TRAIN],
                                    task_id=exp.task_id)
            clf.end_task()
            key = f"{stream_name}/{cls.__name__}"
            out[f"{key}/predict"] = clf.predict(X_test)
            out[f"{key}/proba"] = clf.predict_proba(X_test)
            out[f"{key}/predict_task"] = clf.predict(X_test, task_id=y_task)
            out[f"{key}/proba_task"] = clf.predict_proba(X_test, task_id=y_task)
    return out


if __name__ == "__main__":
    missing = {k: v for k, v in PINNED_ENV.items() if os.environ.get(k) != v}
    if missing:
        pinned = " ".join(f"{k}={v}" for k, v in PINNED_ENV.items())
        sys.exit(f"run under the pinned kernels: {pinned}")
    np.savez_compressed(sys.argv[1], **record())
