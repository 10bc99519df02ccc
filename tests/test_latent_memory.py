"""The latent memory (skcl.latent_memory): one component for LatentReplay and AR1*."""

import numpy as np
import pytest
import torch
from conftest import SMALL

from skcl import AR1Classifier, LatentReplayClassifier
from skcl._batch import REPLAY, STREAM
from skcl.base import Batch
from skcl.latent_memory import LatentMemory
from skcl.nn import LatentSplit, make_mlp


def batch(n, seed=0, task=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, 6, generator=g), torch.arange(n) % 3, None,
                 torch.full((n,), task, dtype=torch.long))


def test_a_task_is_stored_once_as_latents_when_it_ends():
    split = LatentSplit(make_mlp(6, (5, 4)), replay_layer=2)
    memory, rng = LatentMemory(memory_size=50), np.random.default_rng(0)
    samples = batch(12)
    for _ in range(3):  # three epochs of the same call
        memory.observe(samples)
    assert len(memory) == 0
    memory.close_task(split, rng)
    with torch.no_grad():
        expected = split.lower(samples.X)
    torch.testing.assert_close(memory.items().X, expected, rtol=0, atol=0)
    assert torch.equal(memory.items().y, samples.y)
    memory.close_task(split, rng)  # nothing observed since: nothing offered
    assert len(memory) == 12 and memory.n_seen == 12


def test_join_gives_the_batch_latents_then_replayed_ones_marked_replay():
    split = LatentSplit(make_mlp(6, (5, 4)), replay_layer=2)
    memory, rng = LatentMemory(memory_size=8), np.random.default_rng(0)
    incoming = batch(4, seed=1)
    alone = memory.join(incoming, split, n_replay=3, rng=rng, grad=True)
    assert alone.n == 4 and alone.X.requires_grad
    memory.observe(batch(10, seed=2))
    memory.close_task(split, rng)
    joined = memory.join(incoming, split, n_replay=3, rng=rng, grad=False)
    assert joined.X.shape == (7, 5) and not joined.X.requires_grad
    assert joined.origins().tolist() == [STREAM] * 4 + [REPLAY] * 3
    stored = memory.items().X
    assert all(torch.isin(row, stored).all() for row in joined.X[4:])


@pytest.mark.parametrize("cls, params", [
    (LatentReplayClassifier, {}), (AR1Classifier, {"latent_replay": True}),
])
def test_both_latent_replay_methods_keep_a_latent_memory(cls, params, stream):
    clf = cls(memory_size=30, **params, **SMALL)
    for exp in stream[:3]:
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    clf.end_task()
    assert isinstance(clf.memory_, LatentMemory)
    assert len(clf.memory_) == 30 and clf.memory_.n_seen == sum(len(e.y_train)
                                                                 for e in stream[:3])
    assert len(clf.memory_.task_data) == 0
