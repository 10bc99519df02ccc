"""Task inference by confidence: which task's head answers when predictions come
without a task id.

Every method that keeps a head (or a mask, a column, generated weights) per task
and predicts without task ids asks each task's network for its logits and lets
the most confident one answer: the lowest entropy of the softmax (SupSup's
one-shot rule ranks tasks by an entropy gradient instead, but picks the same
way). Two granularities, chosen by an estimator's ``task_inference`` parameter:

- ``'sample'``: each row picks its own task. Nothing is assumed about the rows
  of a call, so mixed-task batches are fine; it is the weaker rule, as one row
  carries little evidence.
- ``'batch'``: the rows of one call are taken to come from one task, and the
  task with the lowest total entropy over the call answers for all of them (as
  SupSup infers a task per batch of 128, Wortsman et al., NeurIPS 2020, and as
  von Oswald et al.'s HNET+ENT evaluates one task's test batch at a time). Use it
  only where every predict call holds one task's samples; a call is scored in
  chunks of at most 8192 rows, and each chunk picks its task.
"""

from __future__ import annotations

import torch

TASK_INFERENCE = ("sample", "batch")


def check_task_inference(value) -> str:
    """``value`` if it is a task-inference granularity, else a ``ValueError`` naming it."""
    if not isinstance(value, str) or value not in TASK_INFERENCE:
        raise ValueError(f"task_inference must be one of {TASK_INFERENCE}, got {value!r}")
    return value


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax of ``logits`` over the last axis (``-inf`` logits count as
    probability 0)."""
    return torch.special.entr(torch.softmax(logits, dim=-1)).sum(dim=-1)


def least(scores: torch.Tensor, per: str = "sample") -> torch.Tensor:
    """The index of the lowest score per sample, or over the whole batch.

    Parameters
    ----------
    scores : Tensor of shape (n_tasks, n_samples)
        A score per task and sample, lower meaning more likely (an entropy).
    per : {'sample', 'batch'}
        ``'batch'``: one index for every sample, that of the lowest sum over
        the samples.

    Returns
    -------
    Tensor of shape (n_samples,)
        Indices into the first axis of ``scores``.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import least
    >>> scores = torch.tensor([[0.1, 0.9, 0.8], [0.5, 0.2, 0.3]])
    >>> least(scores).tolist(), least(scores, per="batch").tolist()
    ([0, 1, 1], [1, 1, 1])
    """
    if per == "batch":
        return scores.sum(dim=1).argmin().expand(scores.shape[1])
    return scores.argmin(dim=0)


def min_entropy_heads(logits: torch.Tensor, per: str = "sample") -> torch.Tensor:
    """Task inference by confidence: the logits of the head whose softmax has the
    lowest entropy, per sample or per batch (:func:`least`).

    Parameters
    ----------
    logits : Tensor of shape (n_tasks, n_samples, n_units)
        Each task's logits over all units, ``-inf`` outside that task's head.
    per : {'sample', 'batch'}

    Returns
    -------
    Tensor of shape (n_samples, n_units)
        The chosen head's logits, ``-inf`` elsewhere.

    Examples
    --------
    >>> import torch
    >>> from skcl.nn import min_entropy_heads
    >>> inf = float("inf")
    >>> heads = torch.tensor([[[0.0, 0.1, -inf, -inf]], [[-inf, -inf, 5.0, 0.0]]])
    >>> min_entropy_heads(heads).tolist()
    [[-inf, -inf, 5.0, 0.0]]
    """
    best = least(softmax_entropy(logits), per)
    return logits[best, torch.arange(logits.shape[1], device=logits.device)]
