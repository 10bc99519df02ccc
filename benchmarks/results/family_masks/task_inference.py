"""Without task ids, per sample and per batch: the masks-and-gates family's accuracy and
task-inference accuracy under PROTOCOL.md (benchmarks/bench_methods.py's masks and gates
settings; SupSup also with the paper's one-shot rule).

Each (method, stream, seed) trains once, as ``skcl bench`` trains it (5 ``partial_fit``
epochs per experience, then ``end_task``). After every experience each seen test set is
scored with its task id and, without one, with ``task_inference='sample'`` and
``'batch'`` (``set_params`` on the fitted estimator); every predict call holds one
experience's whole test set, as ``skcl bench`` scores it. At the end the inferred task of
every test row is read from the head that answers it, per call of a whole test set and
per call of 128 rows.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/results/family_masks/task_inference.py 0,1,2 \
        > benchmarks/results/family_masks/task_inference.jsonl
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

import skcl
from skcl._guard import scoring_view
from skcl.datasets import load_permuted_digits, load_split_digits
from skcl.evaluation import _global_rng_preserved, _train, warm_up

PROTOCOL = dict(hidden_layer_sizes=(256, 256), optimizer="sgd", learning_rate=0.05,
                momentum=0.9, batch_size=32, device="cpu")
METHODS = {
    "PackNet": ("PackNetClassifier",
                {"split-digits": {"n_tasks": 5}, "permuted-digits": {"n_tasks": 10}}),
    "Piggyback": ("PiggybackClassifier", {}),
    "SupSup": ("SupSupClassifier", {"*": {"learning_rate": 0.2}}),
    "SupSup, one-shot": ("SupSupClassifier",
                         {"*": {"learning_rate": 0.2, "inference_rule": "one-shot"}}),
    "HAT": ("HATClassifier", {}),
    "CPG": ("CPGClassifier", {}),
}
STREAMS = {"permuted-digits": load_permuted_digits, "split-digits": load_split_digits}


def inferred_tasks(clf, X) -> np.ndarray:
    """The task of the head answering each row of ``X`` (one predict call)."""
    network = scoring_view(clf, clf._scoring_view, clf._scoring_key).network
    unit_task = getattr(network, "network", network).unit_task
    with torch.no_grad():
        out = network(torch.from_numpy(np.asarray(X, dtype=np.float64)), None)
    return unit_task[out.argmax(dim=1)].numpy()


def summary(R: np.ndarray) -> dict:
    last = len(R) - 1
    return {"acc": float(R[last].mean()),
            "bwt": float(np.mean([R[last, j] - R[j, j] for j in range(last)]))}


def run(label: str, stream_name: str, seed: int) -> dict:
    name, extra = METHODS[label]
    params = {**PROTOCOL, **extra.get("*", {}), **extra.get(stream_name, {}),
              "random_state": seed}
    clf = getattr(skcl, name)(**params)
    stream = STREAMS[stream_name]()
    T = len(stream)
    R = {mode: np.full((T, T), np.nan) for mode in ("task", "sample", "batch")}
    seconds = 0.0
    for i in range(T):
        seconds += _train(clf, stream[i], 5, True, stream.classes)
        with _global_rng_preserved():
            for j, exp in enumerate(stream[:i + 1]):
                R["task"][i, j] = clf.score(exp.X_test, exp.y_test, task_id=exp.task_id)
                for mode in ("sample", "batch"):
                    R[mode][i, j] = clf.set_params(task_inference=mode).score(exp.X_test,
                                                                              exp.y_test)
            clf.set_params(task_inference="sample")
    result = {"method": label, "stream": stream_name, "seed": seed, "train_seconds": seconds,
              **{mode: {**summary(R[mode]), "R": R[mode].tolist()} for mode in R}}
    with _global_rng_preserved():
        for mode in ("sample", "batch"):
            clf.set_params(task_inference=mode)
            per_task = [float(np.mean(inferred_tasks(clf, exp.X_test) == exp.task_id))
                        for exp in stream]
            result[mode].update(task_inference=float(np.mean(per_task)),
                                task_inference_per_task=per_task)
        per_128 = [float(np.mean(np.concatenate(
            [inferred_tasks(clf, exp.X_test[k:k + 128]) for k in range(0, len(exp.X_test), 128)]
        ) == exp.task_id)) for exp in stream]
        result["batch"]["task_inference_128"] = float(np.mean(per_128))
    return result


if __name__ == "__main__":
    seeds = [int(s) for s in sys.argv[1].split(",")]
    labels = sys.argv[2].split(",") if len(sys.argv) > 2 else list(METHODS)
    warm_up()
    for stream_name in STREAMS:
        for label in labels:
            for seed in seeds:
                print(json.dumps(run(label, stream_name, seed)), flush=True)
