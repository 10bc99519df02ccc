"""How SupSup's default ``inference_rule`` was chosen: on validation data, never test data.

Each experience's training data is split 80/20 (skcl.model_selection.make_validation_stream,
validation_size=0.2); SupSup (PROTOCOL.md, learning_rate 0.2) trains on the 80 % of every
experience, then three rules infer the task of each experience's 20 %: the paper's
one-shot entropy gradient, its binary search (halve the candidates by the gradient until
one is left) and the lowest entropy among every task's supermask, per sample, per batch of
128 rows and per whole split. Seeds 0 and 1 on permuted-digits and split-digits.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/results/family_masks/inference_rule_validation.py \
        > benchmarks/results/family_masks/inference_rule_validation.jsonl
"""

from __future__ import annotations

import json

import numpy as np
import torch

import skcl
from skcl._guard import scoring_view
from skcl.datasets import load_permuted_digits, load_split_digits
from skcl.evaluation import _train
from skcl.model_selection import make_validation_stream
from skcl.nn import Superposition, softmax_entropy


def rules(network):
    """The tasks of ``network`` and the rules, each ``rule(x, per) -> task index per row``."""
    tasks = torch.unique(network.unit_task).tolist()
    k = len(tasks)

    def gradients(x, alpha_row):
        with torch.enable_grad():
            alpha = alpha_row.expand(x.shape[0], -1).clone().requires_grad_()
            logits = network(x, Superposition(alpha, tuple(tasks)))
            (grad,) = torch.autograd.grad(softmax_entropy(logits).sum(), alpha)
        return grad

    def one_shot(x, per):
        grad = gradients(x, torch.full((k,), 1.0 / k, dtype=x.dtype))
        return grad.argmin(1) if per == "sample" else grad.sum(0).argmin().expand(len(x))

    def entropy(x, per):
        with torch.no_grad():
            H = torch.stack([softmax_entropy(network(x, t)) for t in tasks])
        return H.argmin(0) if per == "sample" else H.sum(1).argmin().expand(len(x))

    def binary(x, per):
        good = torch.ones(k, dtype=torch.bool)
        while good.sum() > 1:
            alpha = good.to(x.dtype) / good.sum()
            grad = torch.where(good, gradients(x, alpha).sum(0), torch.inf)
            good = torch.zeros_like(good)
            good[grad.argsort()[: int(alpha.gt(0).sum()) // 2]] = True
        return good.nonzero()[0].expand(len(x))

    return tasks, {"one-shot": one_shot, "binary": binary, "entropy": entropy}


def main() -> None:
    torch.set_num_threads(1)
    for name, loader in (("permuted-digits", load_permuted_digits),
                         ("split-digits", load_split_digits)):
        for seed in (0, 1):
            val = make_validation_stream(loader(), validation_size=0.2, random_state=seed)
            clf = skcl.SupSupClassifier(hidden_layer_sizes=(256, 256), learning_rate=0.2,
                                        momentum=0.9, batch_size=32, device="cpu",
                                        random_state=seed)
            for exp in val:
                _train(clf, exp, 5, True, val.classes)
            network = scoring_view(clf, clf._scoring_view, clf._scoring_key).network.network
            tasks, found = rules(network)
            result = {"stream": name, "seed": seed}
            for rule, infer in found.items():
                for per, size in (("sample", None), ("batch128", 128), ("whole", None)):
                    if rule == "binary" and per == "sample":
                        continue
                    accuracy = []
                    for exp in val:
                        X = torch.from_numpy(exp.X_test.astype(np.float64))
                        step = size or len(X)
                        got = torch.cat([infer(X[i:i + step], "sample" if per == "sample"
                                               else "batch") for i in range(0, len(X), step)])
                        accuracy.append(float((torch.tensor(tasks)[got] == exp.task_id)
                                              .double().mean()))
                    result[f"{rule}/{per}"] = float(np.mean(accuracy))
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
