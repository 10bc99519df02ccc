"""How AR1* consolidates a class trained on replayed latents alone: chosen on validation data.

In a task, a class of an earlier task is trained on replayed latents only.
Three rules for folding its trained weights :math:`tw_j` into :math:`cw_j`
(CWR*'s :math:`cw_j \\leftarrow (cw_j w_j + tw_j - \\overline{tw}) / (w_j + 1)`):

- ``stored``: :math:`w_j = \\sqrt{past_j / cur_j}`, :math:`cur_j` its number of stored latents
  (the rule before);
- ``whole-past``: the latents counted as the class's whole past, :math:`w_j = 1`;
- ``replace``: :math:`w_j = 0`, :math:`cw_j \\leftarrow tw_j - \\overline{tw}` (AR1Classifier's).

Scored by validation ACC (:func:`skcl.model_selection.make_validation_stream`,
20 % of every experience's training data held out; test data never read) on
split-digits class-incremental, seeds 0 and 1, PROTOCOL.md settings. On
permuted-digits every class has samples of its own in every task, so the
rules coincide there.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/results/family_columns/ar1star_consolidation.py

Writes ``ar1star_consolidation.md`` beside this script.
"""

from __future__ import annotations

from pathlib import Path

import torch

from skcl import AR1Classifier, LatentReplayClassifier
from skcl.datasets import load_split_digits
from skcl.evaluation import evaluate_stream
from skcl.model_selection import make_validation_stream

PROTOCOL = dict(hidden_layer_sizes=(256, 256), optimizer="sgd", learning_rate=0.05,
                momentum=0.9, batch_size=32, device="cpu")
SEEDS = (0, 1)


class _Stored(AR1Classifier):
    """Replayed-only classes averaged in with their stored counts."""

    def _replaced(self, units):
        return None


class _WholePast(_Stored):
    """Replayed-only classes averaged in as if their latents were their whole past."""

    def _consolidated(self):
        units = self._counts_.nonzero().flatten()
        counts = self._counts_[units].clone()
        alone = super(_Stored, self)._replaced(units)
        if alone is not None:
            counts[alone] = torch.maximum(self.network_.head.past[units][alone], counts[alone])
        return self.network_.head.consolidated(units, counts)


RULES = {"stored": _Stored, "whole-past": _WholePast, "replace": AR1Classifier}


def main() -> None:
    torch.set_num_threads(1)
    stream = load_split_digits()
    rows = []
    for name, cls in [*RULES.items(), ("LatentReplay (reference)", LatentReplayClassifier)]:
        extra = {} if cls is LatentReplayClassifier else {"latent_replay": True}
        accs = []
        for seed in SEEDS:
            validation = make_validation_stream(stream, 0.2, random_state=seed)
            estimator = cls(**PROTOCOL, **extra, memory_size=200, random_state=seed)
            accs.append(evaluate_stream(estimator, validation, "class", 5).acc)
        rows.append(f"| {name} | " + " | ".join(f"{a:.3f}" for a in accs)
                    + f" | {sum(accs) / len(accs):.3f} |")
        print(rows[-1], flush=True)
    Path(__file__).with_suffix(".md").write_text("\n".join([
        "# AR1*: consolidating a class trained on replayed latents alone", "",
        "Validation ACC, split-digits class-incremental ('validation' protocol: 20 % of "
        "every experience's training data held out, test data never read), PROTOCOL.md "
        "settings, memory 200, si_c 1, layers below the latent layer frozen.", "",
        "| rule | seed 0 | seed 1 | mean |", "|---|---:|---:|---:|", *rows, ""]))


if __name__ == "__main__":
    main()
