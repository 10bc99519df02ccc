"""How the consolidated-head defaults (CWR*, AR1, AR1*) were chosen: on validation data only.

Each candidate is scored by :func:`skcl.model_selection.select_params` under
the ``'validation'`` protocol (20 % of every experience's training data held
out, the rest trained on, the whole stream; the test splits are never read)
on the streams and scenarios of the family's class-incremental goals:
split-digits class-incremental and permuted-digits domain-incremental (every
experience holds the same ten classes), at PROTOCOL.md settings, seeds 0 and
1. The default is the candidate with the best mean validation ACC over those
four runs.

AR1 and AR1* share ``si_c``: AR1's sweep chose 1; AR1*'s candidates 0.1 and 1
tie (mean 0.8222 and 0.8220), so it stays 1. ``latentreplay`` is no choice,
only the reference of AR1*'s goal (AR1* >= LatentReplay), on the same data.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/results/family_columns/sweep_defaults.py \
        [--methods cwr,ar1,ar1star] [--seeds 0,1]

Writes ``sweep_defaults.json`` and ``.md`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import skcl
from skcl.datasets import load_permuted_digits, load_split_digits
from skcl.evaluation import warm_up
from skcl.model_selection import select_params

HERE = Path(__file__).parent
PROTOCOL = dict(hidden_layer_sizes=(256, 256), optimizer="sgd", learning_rate=0.05,
                momentum=0.9, batch_size=32, device="cpu")
EPOCHS = 5
STREAMS = [(load_split_digits, "class"), (load_permuted_digits, "domain")]
#: method -> (class, fixed parameters, grid)
METHODS = {
    "cwr": ("CWRStarClassifier", {}, {"lower_lr_factor": [0.0, 0.03, 0.1, 0.3, 1.0]}),
    "ar1": ("AR1Classifier", {}, {"si_c": [0.1, 1.0, 10.0],
                                  "lower_lr_factor": [0.1, 0.3, 1.0]}),
    "ar1star": ("AR1Classifier", {"latent_replay": True, "memory_size": 200},
                {"si_c": [0.01, 0.1, 1.0], "lower_lr_factor": [0.0, 0.1]}),
    # Reference for AR1*'s goal (AR1* >= LatentReplay): LatentReplay at its defaults.
    "latentreplay": ("LatentReplayClassifier", {"memory_size": 200},
                     {"lower_lr_factor": [0.0]}),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=HERE / "sweep_defaults.json")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    warm_up()
    streams = [(loader(), scenario) for loader, scenario in STREAMS]
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    for method in args.methods.split(","):
        cls, fixed, grid = METHODS[method]
        estimator = getattr(skcl, cls)(**PROTOCOL, **fixed)
        runs = []
        for stream, scenario in streams:
            for seed in seeds:
                _, cv = select_params(estimator.set_params(random_state=seed), stream, grid,
                                      protocol="validation", scenario=scenario,
                                      epochs=EPOCHS, random_state=seed)
                params = [dict(p) for p in cv["params"]]
                runs.append({"stream": stream.name, "scenario": scenario, "seed": seed,
                             "params": params,
                             "acc": np.nan_to_num(cv["acc"], nan=0.0).tolist()})
                print(method, stream.name, scenario, seed, np.round(cv["acc"], 3),
                      file=sys.stderr, flush=True)
        mean = np.mean([r["acc"] for r in runs], axis=0)
        report[method] = {"class": cls, "fixed": fixed, "grid": grid, "seeds": seeds,
                          "candidates": runs[0]["params"], "runs": runs,
                          "validation_mean": mean.tolist(),
                          "chosen": runs[0]["params"][int(np.argmax(mean))],
                          "finished": time.strftime("%Y-%m-%d %H:%M")}
        args.out.write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(to_markdown(report) + "\n")


def to_markdown(report: dict) -> str:
    lines = ["# Consolidated-head defaults, chosen on validation data", "",
             "Validation ACC ('validation' protocol: 20 % of every experience's training "
             "data held out, whole stream; test data never read), PROTOCOL.md settings, "
             "5 epochs per experience. The default is the best mean.", ""]
    for method, r in report.items():
        lines += [f"## {method}: {r['class']} {r['fixed'] or ''}, best {r['chosen']}", "",
                  "| candidate | " + " | ".join(f"{x['stream']} {x['scenario']} s{x['seed']}"
                                               for x in r["runs"]) + " | mean |",
                  "|---|" + "---:|" * (len(r["runs"]) + 1)]
        for i, params in enumerate(r["candidates"]):
            cells = " | ".join(f"{x['acc'][i]:.3f}" for x in r["runs"])
            lines.append(f"| {params} | {cells} | {r['validation_mean'][i]:.3f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
