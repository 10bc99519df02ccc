"""What the estimator costs over a hand-written PyTorch loop.

Times ``NaiveClassifier.partial_fit`` over permuted-digits (10 experiences,
5 epochs each, PROTOCOL.md model and optimizer) against a plain loop training
the same MLP on the same data with the same batch size and optimizer (reset
per experience, as skcl resets it per task), measured in the same run. A
third variant runs the estimator without its per-call checkpoint (the copy a
failing call is rolled back to), so the report states what the
all-or-nothing guarantee costs.

Robust to a busy machine: torch runs one thread (``--threads``), so the
process's CPU time (``time.process_time``) is the work done, whatever other
jobs take of the cores; wall-clock time is recorded beside it. The variants
take turns call by call (one epoch of one experience each, in an order
rotated every call), so a change in load or clock speed hits them alike, and
the goal is judged on the median of the per-repeat ratios of CPU time.

Usage::

    python benchmarks/bench_overhead.py [--repeats 11] [--threads 1] [--device cpu]

Writes ``benchmarks/results/overhead_<device>.json`` and ``.md``. Goal: the
estimator costs at most 1.15x the plain loop.
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


class _Clock:
    """Wall-clock and process CPU seconds spent inside the block (device synced)."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self) -> _Clock:
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        _sync(self.device)
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


class PlainLoop:
    """A hand-written PyTorch loop: the MLP, SGD made anew per experience, one epoch a call."""

    def __init__(self, stream, device: str, seed: int):
        torch.manual_seed(seed)
        self.model = nn.Sequential(
            nn.Linear(stream.n_features, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, len(stream.classes))).to(device)
        self.data = {e.task_id: (torch.from_numpy(e.X_train).to(device),
                                 torch.from_numpy(e.y_train).to(device)) for e in stream}
        self.generator = torch.Generator().manual_seed(seed)
        self.device, self.task, self.optimizer = device, None, None

    def __call__(self, exp) -> None:
        X, y = self.data[exp.task_id]
        if exp.task_id != self.task:
            self.task = exp.task_id
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        order = torch.randperm(X.shape[0], generator=self.generator).to(self.device)
        for i in range(0, X.shape[0], BATCH):
            idx = order[i:i + BATCH]
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(X[idx]), y[idx])
            loss.backward()
            self.optimizer.step()


def estimator(stream, device: str, seed: int, checkpoint: bool = True):
    """NaiveClassifier.partial_fit, one epoch a call (numpy in, as users call it);
    ``checkpoint=False`` leaves out the per-call checkpoint (for its cost only)."""
    clf = skcl.NaiveClassifier(hidden_layer_sizes=(256, 256), learning_rate=LR,
                               momentum=MOMENTUM, batch_size=BATCH, device=device,
                               random_state=seed)
    if not checkpoint:
        clf._all_or_nothing = contextlib.nullcontext
    return lambda exp: clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)


VARIANTS = {
    "plain": PlainLoop,
    "estimator": estimator,
    "no_checkpoint": lambda stream, device, seed: estimator(stream, device, seed, False),
}


def measure(stream, device: str, repeats: int) -> dict[str, dict[str, list[float]]]:
    """``{variant: {"wall": [...], "cpu": [...]}}``: seconds of each repeat's stream.

    The variants take turns call by call (one epoch of one experience each, in
    an order rotated every call), so a change in the machine's load hits them
    alike within a fraction of a second.
    """
    times = {name: {"wall": [], "cpu": []} for name in VARIANTS}
    names = list(VARIANTS)
    for r in range(repeats):
        runs = {name: VARIANTS[name](stream, device, r) for name in names}
        spent = {name: [0.0, 0.0] for name in names}
        turn = 0
        for exp in stream:
            for _ in range(EPOCHS):
                for name in names[turn % 3:] + names[:turn % 3]:
                    with _Clock(device) as clock:
                        runs[name](exp)
                    spent[name][0] += clock.wall
                    spent[name][1] += clock.cpu
                turn += 1
        for name in names:
            times[name]["wall"].append(spent[name][0])
            times[name]["cpu"].append(spent[name][1])
    return times


def summary(times: dict, clock: str, steps: int, calls: int) -> dict:
    """Medians, per-repeat ratios to the plain loop, and the checkpoint's cost, on ``clock``."""
    plain = np.array(times["plain"][clock])
    est = np.array(times["estimator"][clock])
    bare = np.array(times["no_checkpoint"][clock])
    ratios = est / plain
    return {
        "plain_median": float(np.median(plain)), "estimator_median": float(np.median(est)),
        "no_checkpoint_median": float(np.median(bare)),
        "ratio_per_repeat": ratios.tolist(), "ratio_median": float(np.median(ratios)),
        "ratio_of_medians": float(np.median(est) / np.median(plain)),
        "no_checkpoint_ratio_median": float(np.median(bare / plain)),
        "us_per_step": {name: 1e6 * float(np.median(times[name][clock])) / steps
                        for name in times},
        "checkpoint_ms_per_call": 1e3 * float(np.median(est - bare)) / calls,
        "checkpoint_share_of_plain": float(np.median((est - bare) / plain)),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    stream = load_permuted_digits()
    warm_up(args.device)
    times = measure(stream, args.device, args.repeats)
    steps = EPOCHS * sum(-(-len(e.y_train) // BATCH) for e in stream)
    calls = EPOCHS * len(stream)
    # CPU time counts the work of one process: on a GPU the work is the device's, so judge
    # wall-clock time there.
    judged = "cpu" if args.device == "cpu" else "wall"
    report = {
        "benchmark": "overhead", "device": args.device, "stream": "permuted-digits",
        "epochs": EPOCHS, "batch_size": BATCH, "optimizer_steps": steps, "calls": calls,
        "repeats": args.repeats, "threads": torch.get_num_threads(), "goal": GOAL,
        "judged_on": judged, "seconds": times,
        "cpu": summary(times, "cpu", steps, calls), "wall": summary(times, "wall", steps, calls),
        "versions": {"skcl": skcl.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
    }
    report["ratio"] = report[judged]["ratio_median"]
    report["goal_met"] = report["ratio"] <= GOAL
    args.out.mkdir(parents=True, exist_ok=True)
    name = "cuda" if args.device.startswith("cuda") else "cpu"
    (args.out / f"overhead_{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / f"overhead_{name}.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    cpu, wall = report["cpu"], report["wall"]
    rows = [("plain PyTorch", "plain"), ("skcl NaiveClassifier", "estimator"),
            ("skcl NaiveClassifier without the per-call checkpoint", "no_checkpoint")]
    judged = report[report["judged_on"]]
    lines = [
        f"# Estimator overhead ({report['device']})",
        "",
        f"NaiveClassifier.partial_fit vs a hand-written PyTorch loop: permuted-digits, "
        f"{EPOCHS} epochs x 10 experiences ({report['calls']} calls), MLP 64-256-256-10, SGD "
        f"lr {LR} momentum {MOMENTUM}, batch {BATCH} ({report['optimizer_steps']} optimizer "
        f"steps), {report['repeats']} repeats, the variants taking turns call by call, torch "
        f"{report['versions']['torch']}, {report['threads']} thread(s). CPU time is the "
        "process's (`time.process_time`): with one torch thread it is the work done, "
        "whatever load other jobs put on the machine.",
        "",
        "| loop | CPU s (median) | CPU µs per step | wall s (median) | wall µs per step |",
        "|---|---|---|---|---|",
    ]
    for label, key in rows:
        lines.append(
            f"| {label} | {cpu[key + '_median']:.3f} | {cpu['us_per_step'][key]:.0f} | "
            f"{wall[key + '_median']:.3f} | {wall['us_per_step'][key]:.0f} |")
    lines += [
        "",
        f"**Ratio (median of per-repeat {report['judged_on']}-time ratios): "
        f"{report['ratio']:.3f}** (goal ≤ {GOAL}: "
        f"{'met' if report['goal_met'] else 'NOT met'}). Without the checkpoint: "
        f"{judged['no_checkpoint_ratio_median']:.3f}. Ratio of medians: CPU "
        f"{cpu['ratio_of_medians']:.3f}, wall {wall['ratio_of_medians']:.3f}.",
        "",
        f"The checkpoint (a deep copy of the estimator's state per call, restored if the call "
        f"fails) costs {judged['checkpoint_ms_per_call']:.2f} ms per call, "
        f"{100 * judged['checkpoint_share_of_plain']:.1f}% of the plain loop's time "
        f"(medians of per-repeat differences, {report['judged_on']} time).",
        "",
        "Per-repeat ratios, CPU: " + ", ".join(f"{r:.3f}" for r in cpu["ratio_per_repeat"]),
        "",
        "Per-repeat ratios, wall: " + ", ".join(f"{r:.3f}" for r in wall["ratio_per_repeat"]),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
