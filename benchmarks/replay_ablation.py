"""What makes Replay hold up off split-digits: admission, balance, replay-batch composition.

Each variant is skcl's ReplayClassifier at PROTOCOL.md settings (MLP 256-256,
SGD lr 0.05 momentum 0.9, batch 32 joined by 32 replayed samples, 5 epochs
per experience, memory 200), differing in one of:

- admission: the current task's samples enter the buffer after each
  ``partial_fit`` call (``admission='after_call'``, so from the second epoch a
  share of every replay batch is the current task) or only when the task
  ends (``admission='task_end'``);
- balance: reservoir sampling over the stream, greedy balance over (task,
  label) classes, or equal shares per experience (``policy``);
- composition: 'past only' keeps after-call admission but draws replay
  batches from the other tasks' samples alone (a script-only variant, to
  separate what the buffer holds from what a batch replays).

Every run also records the share of the current task's samples among all
replayed samples (``current_share``). Streams: split-digits,
permuted-digits, and the held-out rotated-digits, split-tabular and
permuted-tabular (:mod:`skcl.heldout`), each in its default scenario.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/replay_ablation.py [--seeds 0,1,2,3]

Writes ``benchmarks/results/replay_ablation.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from skcl import ReplayClassifier
from skcl.datasets import load_permuted_digits, load_split_digits
from skcl.evaluation import evaluate_stream, warm_up
from skcl.heldout import load_permuted_tabular, load_rotated_digits, load_split_tabular
from skcl.memory import take

RESULTS = Path(__file__).parent / "results"
PROTOCOL = dict(hidden_layer_sizes=(256, 256), optimizer="sgd", learning_rate=0.05,
                momentum=0.9, batch_size=32, memory_size=200, device="cpu")
EPOCHS = 5
STREAMS = [load_split_digits, load_split_tabular, load_permuted_digits, load_permuted_tabular,
           load_rotated_digits]
#: label -> (policy, admission, past_only)
VARIANTS = {
    "reservoir, after call": ("reservoir", "after_call", False),
    "reservoir, after call, past only": ("reservoir", "after_call", True),
    "reservoir, task end": ("reservoir", "task_end", False),
    "class-balanced, after call": ("class_balanced", "after_call", False),
    "class-balanced, task end": ("class_balanced", "task_end", False),
    "experience-balanced, after call": ("experience_balanced", "after_call", False),
    "experience-balanced, after call, past only": ("experience_balanced", "after_call", True),
    "experience-balanced, task end": ("experience_balanced", "task_end", False),
}


class _Counted(ReplayClassifier):
    """ReplayClassifier counting the current task's share of the replayed samples; with
    ``past_only`` its replay batches are drawn from the other tasks' samples alone."""

    past_only = False

    def _initialize(self) -> None:
        super()._initialize()
        self.replayed_ = np.zeros(2)  # (current task's samples, all replayed samples)

    def _replay(self, batch):
        n = self.replay_batch_size or self.batch_size
        items = self.memory_.items()
        if self.past_only:
            past = torch.nonzero(items.task != batch.task[0]).flatten()
            drawn = take(items, past[self._rng_.choice(past.numel(), size=min(n, past.numel()),
                                                      replace=False)])
        else:
            drawn = self.memory_.sample(n, self._rng_)
        self.replayed_ += [int((drawn.task == batch.task[0]).sum()), drawn.y.shape[0]]
        return drawn


class _PastOnly(_Counted):
    past_only = True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--out", type=Path, default=RESULTS / "replay_ablation.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warm_up()
    streams = [loader() for loader in STREAMS]
    runs = json.loads(args.out.read_text())["runs"] if args.out.exists() else []
    done = {(r["variant"], r["stream"], r["seed"]) for r in runs}
    for seed in (int(s) for s in args.seeds.split(",")):
        for stream in streams:
            for label, (policy, admission, past_only) in VARIANTS.items():
                if (label, stream.name, seed) in done:
                    continue
                cls = _PastOnly if past_only else _Counted
                est = cls(**PROTOCOL, policy=policy, admission=admission, random_state=seed)
                start = time.perf_counter()
                result = evaluate_stream(est, stream, stream.default_scenario, EPOCHS)
                share = est.replayed_[0] / max(est.replayed_[1], 1)
                runs.append({"variant": label, "stream": stream.name,
                             "scenario": stream.default_scenario, "seed": seed,
                             "acc": result.acc, "bwt": result.bwt, "current_share": share,
                             "seconds": time.perf_counter() - start})
                print(f"{stream.name:16s} {label:44s} seed={seed} ACC={result.acc:.3f} "
                      f"BWT={result.bwt:+.3f} current={share:.2f}", file=sys.stderr, flush=True)
                args.out.write_text(json.dumps({"protocol": {**PROTOCOL, "epochs": EPOCHS},
                                                "runs": runs}, indent=1))
    args.out.with_suffix(".md").write_text(to_markdown(runs) + "\n")


FINDINGS = """\
Findings (seeds 0-3 on the split streams, 0-2 on the others; the run was stopped in seed 3):

- Admission is the cause on class-incremental streams. With after-call admission (skcl's
  behaviour until now) 38 % of replayed samples on the 5-task split streams are the current
  task's (24 % on the 10-task permuted ones, 33 % over all runs). Admitting a task when it
  ends is better on both split streams for every policy: reservoir +0.030 / +0.029,
  class-balanced +0.015 / +0.047, experience-balanced +0.008 / +0.052 (split-digits /
  split-tabular). On the domain-incremental streams admission moves ACC by at most 0.011.
- Composition alone is not: keeping after-call admission but replaying only other tasks'
  samples ('past only') helps experience-balanced buffers (+0.019 / +0.028 on the split
  streams) but not reservoir ones (+0.020 / -0.016, -0.019 on permuted-digits): during the
  task the current task also takes slots from the old ones, which only task-end admission
  avoids.
- Balance matters on permuted-digits: class balancing over (task, label) gives 0.834-0.838
  against 0.780-0.799 for reservoir and per-experience balance (10 permutations x 10 classes
  share 200 slots: 2 per class and permutation).
- Class-balanced with task-end admission has the best mean ACC (0.674, against 0.654 for
  the paper's reservoir with after-call admission) and is the new default. With
  admission='task_end' a task enters as its own reservoir sample of at most memory_size, so
  'reservoir, task end' weighs tasks by those samples (near-balanced per experience), not by
  their sizes.
- permuted-tabular is beyond this network for every variant (Joint 0.347 on it).
"""


def to_markdown(runs: list[dict]) -> str:
    streams = list(dict.fromkeys(r["stream"] for r in runs))
    lines = ["# Replay ablation: admission, balance and replay-batch composition", "",
             "ReplayClassifier at PROTOCOL.md settings (memory 200, 5 epochs), each stream in "
             "its default scenario; ACC mean ± std over seeds (n seeds in brackets), and the "
             "share of the current task's samples among replayed samples. Script: "
             "benchmarks/replay_ablation.py. split-tabular, permuted-tabular and rotated-digits "
             "are held-out streams (skcl.heldout).", "",
             "| variant | " + " | ".join(streams) + " | mean ACC | current share |",
             "|---|" + "---:|" * (len(streams) + 2)]
    for label in dict.fromkeys(r["variant"] for r in runs):
        cells, means = [], []
        for stream in streams:
            accs = [r["acc"] for r in runs if (r["variant"], r["stream"]) == (label, stream)]
            cells.append(f"{np.mean(accs):.3f} ± {np.std(accs, ddof=1) if len(accs) > 1 else 0:.3f}"
                         f" ({len(accs)})" if accs else "n/a")
            if accs:
                means.append(np.mean(accs))
        share = np.mean([r["current_share"] for r in runs if r["variant"] == label])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean(means):.3f} | "
                     f"{share:.2f} |")
    return "\n".join([*lines, "", FINDINGS])


if __name__ == "__main__":
    main()
