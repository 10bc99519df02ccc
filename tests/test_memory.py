"""Bounded memories (skcl.memory) and the memory bound of every memory-based estimator."""

import pickle

import numpy as np
import pytest
import torch

from skcl import (
    AGEMClassifier,
    GDumbClassifier,
    GEMClassifier,
    ICaRLClassifier,
    LatentReplayClassifier,
    MIRClassifier,
    ReplayClassifier,
)
from skcl.base import Batch
from skcl.exemplars import ExemplarSets, herding_selection
from skcl.kernels import herding
from skcl.memory import (
    ClassBalancedBuffer,
    EpisodicMemory,
    ReservoirBuffer,
    SampleStore,
    concat_batches,
)

SMALL = dict(hidden_layer_sizes=(16,), batch_size=16, device="cpu", random_state=0)
MEMORY_ESTIMATORS = [
    (ReplayClassifier, {}),
    (ReplayClassifier, {"policy": "class_balanced"}),
    (MIRClassifier, {"n_candidates": 20, "k": 8}),
    (GDumbClassifier, {"gdumb_epochs": 1}),
    (LatentReplayClassifier, {}),
    (GEMClassifier, {}),
    (AGEMClassifier, {"sample_size": 16}),
    (ICaRLClassifier, {}),
]


def make_batch(n, task=0, n_classes=2, seed=0, width=3):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, width, generator=g), torch.arange(n) % n_classes, None,
                 torch.full((n,), task, dtype=torch.long))


def stream_of_tasks(n_tasks, n_per_task=12, n_features=4, classes_per_task=2, seed=0):
    rng = np.random.default_rng(seed)
    for t in range(n_tasks):
        y = np.repeat(np.arange(classes_per_task) + classes_per_task * t,
                      n_per_task // classes_per_task)
        X = rng.normal(size=(len(y), n_features)).astype(np.float32)
        X[:, 0] += y
        yield t, X, y


# ------------------------------------------------------------------ buffers


def test_reservoir_is_capped_counts_offers_once_and_keeps_a_uniform_sample():
    buffer = ReservoirBuffer(memory_size=10)
    rng = np.random.default_rng(0)
    batch = make_batch(30)
    assert buffer.offer(batch, rng)
    assert not buffer.offer(batch, rng)  # the same call again (another epoch)
    assert len(buffer) == 10 and buffer.n_seen == 30
    for t in range(1, 50):
        buffer.offer(make_batch(7, task=t, seed=t), rng)
        assert len(buffer) <= 10
    # Every item offered is kept with probability memory_size / n_seen.
    kept = np.zeros(1000)
    for trial in range(400):
        buffer, rng = ReservoirBuffer(memory_size=100), np.random.default_rng(trial)
        for start in range(0, 1000, 250):
            X = torch.arange(start, start + 250, dtype=torch.float32)[:, None]
            buffer.offer(Batch(X, torch.zeros(250, dtype=torch.long), None,
                               torch.zeros(250, dtype=torch.long)), rng)
        kept[buffer.items().X[:, 0].long().numpy()] += 1
    frequency = kept.reshape(4, 250).mean(axis=1) / 400
    np.testing.assert_allclose(frequency, 0.1, atol=0.01)


def test_reservoir_resize_keeps_a_subset_and_weights_follow_the_samples():
    buffer, rng = ReservoirBuffer(memory_size=8), np.random.default_rng(0)
    batch = make_batch(8)._replace(weight=torch.arange(8, dtype=torch.float32))
    buffer.offer(batch, rng)
    items = buffer.items()
    before = dict(zip(items.X[:, 0].tolist(), items.weight.tolist(), strict=True))
    buffer.resize(3, rng)
    items = buffer.items()
    assert len(buffer) == 3 and buffer._rows.X.shape[0] == 3
    for x, w in zip(items.X[:, 0].tolist(), items.weight.tolist(), strict=True):
        assert before[x] == w


def test_class_balanced_keeps_every_class_seen():
    buffer, rng = ClassBalancedBuffer(memory_size=20), np.random.default_rng(0)
    seen = set()
    for t in range(50):
        buffer.offer(make_batch(30 if t == 0 else 5, task=t, n_classes=1 + t % 3, seed=t), rng)
        seen |= {(t, c) for c in range(1 + t % 3)}
        assert len(buffer) <= 20
        if len(seen) <= 20:
            assert set(buffer.class_counts()) == seen


def test_class_balanced_counts_even_out_when_classes_bring_enough_samples():
    buffer, rng = ClassBalancedBuffer(memory_size=20), np.random.default_rng(0)
    buffer.offer(make_batch(40, n_classes=1), rng)
    assert buffer.class_counts() == {(0, 0): 20}
    buffer.offer(make_batch(40, task=1, n_classes=2, seed=1), rng)
    counts = buffer.class_counts()
    assert len(buffer) == 20 and max(counts.values()) - min(counts.values()) <= 1
    assert sorted(counts.values()) == [6, 7, 7]


def test_episodic_memory_shares_memory_size_among_tasks():
    memory, rng = EpisodicMemory(memory_size=20), np.random.default_rng(0)
    for t in range(50):
        memory.offer(make_batch(9, task=t, seed=t), rng)
        assert len(memory) <= 20
        sizes = [stop - start for _, start, stop in memory.segments()]
        assert max(sizes) - min(sizes) <= 1
        if t == 3:
            assert sizes == [5, 5, 5, 5]
        if t == 12:
            items = memory.items([3, 7])
            for task, start, stop in memory.segments([3, 7]):
                assert (items.task[start:stop] == task).all()
    # More tasks than slots: the 20 most recent tasks keep one sample each.
    assert memory.tasks == list(range(30, 50)) and len(memory) == 20


def test_episodic_memory_gives_every_new_task_samples_beyond_memory_size_tasks():
    memory, rng = EpisodicMemory(memory_size=10), np.random.default_rng(0)
    for t in range(15):
        memory.offer(make_batch(6, task=t, seed=t), rng)
        assert t in memory.tasks and len(memory.segments([t])) == 1
    assert memory.tasks == list(range(5, 15))
    assert sorted(memory.items().task.tolist()) == list(range(5, 15))
    empty = EpisodicMemory(memory_size=0)
    empty.offer(make_batch(6), rng)
    assert len(empty) == 0 and empty.tasks == []


def test_exemplar_sets_are_herding_picks_and_shrink_to_a_prefix():
    sets = ExemplarSets(memory_size=12)
    X = torch.randn(40, 5, generator=torch.Generator().manual_seed(0))
    batch = Batch(X, torch.zeros(40, dtype=torch.long), None, torch.zeros(40, dtype=torch.long))
    sets.update({0: (batch, X), 1: (batch._replace(y=torch.ones(40, dtype=torch.long)), X)})
    phi = torch.nn.functional.normalize(X, dim=1).contiguous()
    first = herding(phi, 6)
    assert torch.equal(sets.exemplars(0).X, X[first])
    assert torch.equal(herding_selection(X, 6), first)
    sets.update({2: (batch._replace(y=torch.full((40,), 2)), X)})
    assert sets.counts() == {0: 4, 1: 4, 2: 4}
    assert torch.equal(sets.exemplars(0).X, X[first[:4]])
    assert len(sets) <= 12
    assert concat_batches(*(sets.exemplars(c) for c in sets.classes)).X.shape == (12, 5)


def test_buffers_pickle_and_keep_the_device():
    rng = np.random.default_rng(0)
    for buffer in (ReservoirBuffer(5), ClassBalancedBuffer(5), EpisodicMemory(5)):
        buffer.offer(make_batch(12), rng)
        clone = pickle.loads(pickle.dumps(buffer))
        assert torch.equal(clone.items().X, buffer.items().X)
        assert clone.items().X.device == buffer.items().X.device
        assert not clone.offer(make_batch(12), rng)  # remembers what it was offered


def test_sample_store_is_unchanged_for_its_users():
    store = SampleStore()
    batch = make_batch(4)
    assert store.add(batch)
    assert not store.add(batch)
    assert len(store) == 4


# ------------------------------------------------------------------ estimators


@pytest.mark.parametrize("cls, params", MEMORY_ESTIMATORS,
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_memory_never_exceeds_memory_size_over_a_50_task_stream(cls, params):
    clf = cls(memory_size=30, **params, **SMALL)
    for t, X, y in stream_of_tasks(50):
        clf.partial_fit(X, y, task_id=t)
        clf.partial_fit(X, y, task_id=t)
        memory = clf.exemplars_ if cls is ICaRLClassifier else clf.memory_
        assert len(memory) <= 30
    clf.end_task()
    if cls is ICaRLClassifier:  # 100 classes, 30 exemplars: m = 30 // 100 = 0
        assert len(clf.exemplars_) == 0 and len(clf.exemplars_.counts()) == 100
    else:
        assert 0 < len(clf.memory_) <= 30


@pytest.mark.parametrize("cls, params", MEMORY_ESTIMATORS,
                         ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_pickle_round_trip_gives_identical_predictions(cls, params):
    clf = cls(memory_size=20, **params, **SMALL)
    tasks = list(stream_of_tasks(3, n_per_task=20))
    for t, X, y in tasks[:2]:
        clf.partial_fit(X, y, task_id=t)
    clf.end_task()
    t, X, y = tasks[2]
    clf.partial_fit(X, y, task_id=t)  # leave a task open: its state must pickle too
    X_all = np.vstack([X for _, X, _ in tasks])
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.decision_function(X_all), clf.decision_function(X_all))
    clone.partial_fit(X, y, task_id=t)
    clf.partial_fit(X, y, task_id=t)
    np.testing.assert_array_equal(clone.predict(X_all), clf.predict(X_all))
