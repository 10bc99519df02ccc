"""What the estimator costs over a hand-written PyTorch loop.

Times ``NaiveClassifier.partial_fit`` over permuted-digits (10 experiences,
5 epochs each, PROTOCOL.md model and optimizer) against a plain loop training
the same MLP on the same data with the same batch size and optimizer (reset
per experience, as skcl resets it per task), measured in the same run,
alternating the two so drifts in machine load hit both alike.

Usage::

    python benchmarks/bench_overhead.py [--repeats 7] [--device cpu]

Writes ``benchmarks/results/overhead_<device>.json`` and ``.md``. Goal: the
estimator costs at most 1.15x the plain loop. A third variant runs the
estimator without its per-call checkpoint (the copy a failing call is rolled
back to), so the report states what the all-or-nothing guarantee costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import skcl
from skcl.datasets import load_permuted_digits
from skcl.evaluation import warm_up

RESULTS = Path(__file__).parent / "results"
EPOCHS = 5
BATCH = 32
LR, MOMENTUM = 0.05, 0.9
GOAL = 1.15


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_loop(stream, device: str, seed: int) -> float:
    """Seconds for a hand-written PyTorch loop over the stream."""
    torch.manual_seed(seed)
    n_features = stream.n_features
    model = nn.Sequential(nn.Linear(n_features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, len(stream.classes))).to(device)
    data = [(torch.from_numpy(e.X_train).to(device), torch.from_numpy(e.y_train).to(device))
            for e in stream]
    generator = torch.Generator().manual_seed(seed)
    _sync(device)
    start = time.perf_counter()
    for X, y in data:
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        for _ in range(EPOCHS):
            order = torch.randperm(X.shape[0], generator=generator).to(device)
            for i in range(0, X.shape[0], BATCH):
                idx = order[i:i + BATCH]
                optimizer.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(X[idx]), y[idx])
                loss.backward()
                optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def estimator_loop(stream, device: str, seed: int, checkpoint: bool = True) -> float:
    """Seconds for NaiveClassifier.partial_fit over the same stream (numpy in, as users call it);
    ``checkpoint=False`` leaves out the per-call checkpoint (for its cost only)."""
    clf = skcl.NaiveClassifier(hidden_layer_sizes=(256, 256), learning_rate=LR,
                               momentum=MOMENTUM, batch_size=BATCH, device=device,
                               random_state=seed)
    if not checkpoint:
        clf._all_or_nothing = contextlib.nullcontext
    _sync(device)
    start = time.perf_counter()
    for exp in stream:
        for _ in range(EPOCHS):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    _sync(device)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    stream = load_permuted_digits()
    warm_up(args.device)
    plain, estimator, bare = [], [], []
    for r in range(args.repeats):
        plain.append(plain_loop(stream, args.device, r))
        estimator.append(estimator_loop(stream, args.device, r))
        bare.append(estimator_loop(stream, args.device, r, checkpoint=False))
    ratios = [e / p for e, p in zip(estimator, plain, strict=True)]
    steps = EPOCHS * sum(-(-len(e.y_train) // BATCH) for e in stream)
    report = {
        "benchmark": "overhead", "device": args.device, "stream": "permuted-digits",
        "epochs": EPOCHS, "batch_size": BATCH, "optimizer_steps": steps,
        "plain_seconds": plain, "estimator_seconds": estimator,
        "plain_median": float(np.median(plain)), "estimator_median": float(np.median(estimator)),
        "ratio_median": float(np.median(estimator) / np.median(plain)),
        "ratio_per_repeat": ratios, "goal": GOAL,
        "no_checkpoint_seconds": bare, "no_checkpoint_median": float(np.median(bare)),
        "checkpoint_share_of_plain": float((np.median(estimator) - np.median(bare))
                                           / np.median(plain)),
        "versions": {"skcl": skcl.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "threads": torch.get_num_threads(),
    }
    report["goal_met"] = report["ratio_median"] <= GOAL
    us_plain = 1e6 * report["plain_median"] / steps
    us_est = 1e6 * report["estimator_median"] / steps
    markdown = "\n".join([
        f"# Estimator overhead ({args.device})",
        "",
        f"NaiveClassifier.partial_fit vs a hand-written PyTorch loop: permuted-digits, "
        f"{EPOCHS} epochs x 10 experiences, MLP 64-256-256-10, SGD lr {LR} momentum "
        f"{MOMENTUM}, batch {BATCH} ({steps} optimizer steps), median of {args.repeats} "
        f"alternating repeats, torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "| loop | seconds (median) | µs per step |",
        "|---|---|---|",
        f"| plain PyTorch | {report['plain_median']:.3f} | {us_plain:.0f} |",
        f"| skcl NaiveClassifier | {report['estimator_median']:.3f} | {us_est:.0f} |",
        f"| skcl NaiveClassifier without the per-call checkpoint | "
        f"{report['no_checkpoint_median']:.3f} | "
        f"{1e6 * report['no_checkpoint_median'] / steps:.0f} |",
        "",
        f"The checkpoint (a deep copy of the estimator's state per call, restored if the "
        f"call fails) costs {100 * report['checkpoint_share_of_plain']:.1f}% of the plain "
        f"loop's time.",
        "",
        f"Ratio {report['ratio_median']:.3f} (goal ≤ {GOAL}: "
        f"{'met' if report['goal_met'] else 'NOT met'}); per repeat: "
        + ", ".join(f"{r:.3f}" for r in ratios),
        "",
    ])
    args.out.mkdir(parents=True, exist_ok=True)
    name = "cuda" if args.device.startswith("cuda") else "cpu"
    (args.out / f"overhead_{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"overhead_{name}.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
