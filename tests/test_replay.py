"""Must-show properties of the replay family (METHODS.md): Replay, GDumb, MIR, latent replay."""

import copy

import numpy as np
import pytest
import torch
from conftest import SMALL
from torch.nn import functional as F

from skcl import GDumbClassifier, LatentReplayClassifier, MIRClassifier, ReplayClassifier
from skcl.base import Batch, Step
from skcl.memory import ClassBalancedBuffer


def train(clf, stream, epochs=1, tasks=None):
    for exp in stream if tasks is None else [stream[t] for t in tasks]:
        for _ in range(epochs):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    return clf


def test_replay_joins_each_batch_with_a_replay_batch_and_keeps_memory_size(stream):
    clf = ReplayClassifier(memory_size=50, replay_batch_size=12, policy="reservoir",
                           admission="after_call", **SMALL)
    clf.partial_fit(stream[0].X_train, stream[0].y_train, task_id=0)
    assert len(clf.memory_) == 50
    batch = Batch(*(t[:16] for t in (clf.memory_.items().X, clf.memory_.items().y)), None,
                  torch.zeros(16, dtype=torch.long))
    joined = clf._training_batch(batch, Step(0, 0, 1))
    assert joined.X.shape[0] == 16 + 12
    train(clf, stream, epochs=2)
    assert len(clf.memory_) == 50
    # Each class seen is in the memory (reservoir keeps a uniform sample of 1257 samples).
    assert len(torch.unique(clf.memory_.items().y)) == 10


def test_class_balanced_replay_keeps_samples_of_every_class_seen(stream):
    clf = ReplayClassifier(memory_size=20, policy="class_balanced", admission="after_call",
                           **SMALL)
    for exp in stream:
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
        counts = clf.memory_.class_counts()
        assert len(clf.memory_) <= 20
        assert len(counts) == 2 * (exp.task_id + 1)
        assert min(counts.values()) >= 2
    result_units = torch.unique(clf.memory_.items().y).tolist()
    assert sorted(result_units) == list(range(10))


def test_replay_beats_naive_forgetting_on_split_digits(stream):
    clf = train(ReplayClassifier(memory_size=100, **SMALL), stream, epochs=2)
    first = clf.score(stream[0].X_test, stream[0].y_test)
    assert first > 0.5  # Naive forgets task 0 completely (accuracy ~0) in this setting


def test_gdumb_does_not_train_during_partial_fit(stream):
    clf = GDumbClassifier(memory_size=40, gdumb_epochs=2, **SMALL)
    clf.partial_fit(stream[0].X_train, stream[0].y_train, task_id=0)
    before = copy.deepcopy(clf.network_.state_dict())
    clf.partial_fit(stream[0].X_train[:100], stream[0].y_train[:100], task_id=0)
    after = clf.network_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # With the task open, predictions come from a network trained on the memory ...
    proba = clf.predict_proba(stream[0].X_test)
    assert all(torch.equal(before[k], v) for k, v in clf.network_.state_dict().items())
    # ... which the end of the task makes the estimator's own: the same predictions.
    clf.end_task()
    assert not torch.equal(before["head.weight"], clf.network_.head.weight)
    np.testing.assert_array_equal(clf.predict_proba(stream[0].X_test), proba)


def test_gdumb_predictions_depend_only_on_the_memory_content(stream):
    X_test = np.vstack([exp.X_test for exp in stream])
    once = train(GDumbClassifier(memory_size=60, gdumb_epochs=3, **SMALL), stream)
    # Other epochs, an extra call of leftovers, a prediction in between: same memory?
    other = GDumbClassifier(memory_size=60, gdumb_epochs=3, **SMALL)
    train(other, stream, epochs=3, tasks=[0, 1])
    other.predict(X_test[:5])
    train(other, stream, tasks=[2, 3, 4])
    other.end_task()
    once.end_task()
    assert torch.equal(once.memory_.items().X, other.memory_.items().X)
    np.testing.assert_array_equal(once.decision_function(X_test), other.decision_function(X_test))
    # The same samples stored in another order give the same model.
    items = once.memory_.items()
    shuffled = ClassBalancedBuffer(60)
    perm = torch.from_numpy(np.random.default_rng(1).permutation(60))
    shuffled.offer(Batch(items.X[perm], items.y[perm], None, items.task[perm]),
                   np.random.default_rng(0))
    assert not torch.equal(shuffled.items().X, items.X)
    other.memory_, other._trained_version_ = shuffled, -1
    np.testing.assert_array_equal(once.decision_function(X_test), other.decision_function(X_test))
    # Different content, different model.
    other.memory_, other._trained_version_ = ClassBalancedBuffer(60), -1
    other.memory_.offer(Batch(items.X[:40], items.y[:40], None, items.task[:40]),
                        np.random.default_rng(0))
    assert not np.array_equal(once.decision_function(X_test), other.decision_function(X_test))


def test_gdumb_learns_from_its_class_balanced_memory(stream):
    X = np.vstack([exp.X_train for exp in stream])
    y = np.concatenate([exp.y_train for exp in stream])
    clf = GDumbClassifier(memory_size=100, gdumb_epochs=15, **SMALL).partial_fit(X, y)
    assert set(clf.memory_.class_counts().values()) == {10}
    X_test = np.vstack([exp.X_test for exp in stream])
    y_test = np.concatenate([exp.y_test for exp in stream])
    assert clf.score(X_test, y_test) > 0.75


def test_mir_replays_the_top_k_candidates_by_loss_increase(stream):
    clf = MIRClassifier(memory_size=80, n_candidates=30, k=7, **SMALL)
    train(clf, stream, tasks=[0, 1])
    exp = stream[2]
    clf.partial_fit(exp.X_train, exp.y_train, task_id=2)
    X = torch.from_numpy(exp.X_train[:16])
    y = torch.tensor([clf.output_units_.of(label) for label in exp.y_train[:16]])
    batch = Batch(X, y, None, torch.full((16,), 2))
    rng_state = copy.deepcopy(clf._rng_)
    chosen = clf._replay(batch)
    # Reference: draw the same candidates, take a real SGD step on a copy, rank by loss rise.
    candidates = clf.memory_.sample(30, rng_state)
    net = copy.deepcopy(clf.network_)
    before = F.cross_entropy(net(candidates.X), candidates.y, reduction="none").detach()
    step = torch.optim.SGD(net.parameters(), lr=clf.learning_rate)
    F.cross_entropy(net(X), y).backward()
    step.step()
    after = F.cross_entropy(net(candidates.X), candidates.y, reduction="none").detach()
    top = torch.topk(after - before, 7).indices
    assert torch.equal(chosen.X, candidates.X[top])
    assert torch.equal(chosen.y, candidates.y[top])


def test_latent_replay_stores_latents_and_freezes_the_lower_layers(stream):
    clf = LatentReplayClassifier(memory_size=50, replay_layer=2,
                                 **{**SMALL, "hidden_layer_sizes": (48, 24)})
    train(clf, stream, tasks=[0])
    assert len(clf.memory_) == 0  # the task's latents are stored when it ends
    clf.end_task()
    lower = copy.deepcopy(clf.network_.trunk.lower.state_dict())
    stored = clf.memory_.items().X.clone()
    assert stored.shape == (50, 48)  # the first hidden layer's width, not the input's 64
    train(clf, stream, epochs=2, tasks=[1, 2])
    clf.end_task()
    assert all(torch.equal(lower[k], v) for k, v in clf.network_.trunk.lower.state_dict().items())
    assert clf.memory_.items().X.shape == (50, 48)
    # Latents are what the (frozen) lower layers compute for the stored samples' inputs.
    with torch.no_grad():
        latents = clf.network_.trunk.lower(torch.from_numpy(stream[0].X_train))
    for row in clf.memory_.items().X[clf.memory_.items().task == 0]:
        assert torch.isclose(latents, row).all(dim=1).any()
    assert clf.score(stream[0].X_test, stream[0].y_test) > 0.5


def test_latent_replay_with_a_slower_lower_learning_rate_keeps_training_them(stream):
    clf = LatentReplayClassifier(memory_size=30, lower_lr_factor=0.5, **SMALL)
    train(clf, stream, tasks=[0])
    clf.end_task()
    lower = copy.deepcopy(clf.network_.trunk.lower.state_dict())
    train(clf, stream, tasks=[1])
    changed = [not torch.equal(lower[k], v)
               for k, v in clf.network_.trunk.lower.state_dict().items()]
    assert all(changed)


def test_latent_replay_needs_a_sequential_trunk_deep_enough(stream):
    exp = stream[0]
    with pytest.raises(ValueError, match="replay_layer=5 exceeds"):
        LatentReplayClassifier(replay_layer=5, **SMALL).fit(exp.X_train, exp.y_train)

    class Net(torch.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.fc = torch.nn.Linear(n, 4)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(TypeError, match="Sequential"):
        LatentReplayClassifier(backbone=Net, **SMALL).fit(exp.X_train, exp.y_train)


# ---------------------------------------------------------------- admission and balance


def _tasks_in(buffer) -> set[int]:
    return set(torch.unique(buffer.items().task).tolist()) if len(buffer) else set()


def test_task_end_admission_keeps_the_current_task_out_of_the_buffer_until_it_ends(stream):
    clf = ReplayClassifier(memory_size=40, admission="task_end", **SMALL)
    replayed = []

    def spy(batch):
        drawn = ReplayClassifier._replay(clf, batch)
        replayed.append((int(batch.task[0]), set(drawn.task.tolist())))
        return drawn

    clf._replay = spy
    for exp in list(stream)[:3]:
        for _ in range(2):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
            assert exp.task_id not in _tasks_in(clf.memory_)
        clf.end_task()
        assert _tasks_in(clf.memory_) == set(range(exp.task_id + 1))
        assert len(clf.memory_) <= 40
    assert replayed and all(current not in tasks for current, tasks in replayed)


def test_after_call_admission_offers_each_call_once_its_epoch_is_done(stream):
    clf = ReplayClassifier(memory_size=40, admission="after_call", **SMALL)
    train(clf, stream, tasks=[0])
    clf.partial_fit(stream[1].X_train, stream[1].y_train, task_id=1)
    assert 1 in _tasks_in(clf.memory_)


def test_experience_balanced_policy_gives_every_task_an_equal_share(stream):
    clf = ReplayClassifier(memory_size=40, policy="experience_balanced", admission="task_end",
                           **SMALL)
    for exp in stream:
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
        clf.end_task()
    counts = torch.bincount(clf.memory_.items().task).tolist()
    assert counts == [8] * 5


@pytest.mark.parametrize("admission", ["after_call", "task_end"])
def test_replay_pickled_mid_task_trains_on_identically(admission, stream):
    import pickle

    clf = ReplayClassifier(memory_size=30, admission=admission, **SMALL)
    train(clf, stream, tasks=[0])
    clf.end_task()
    clf.partial_fit(stream[1].X_train, stream[1].y_train, task_id=1)
    twin = pickle.loads(pickle.dumps(clf))
    for c in (clf, twin):
        train(c, stream, tasks=[1, 2])
        c.end_task()
    X = stream[0].X_test
    np.testing.assert_array_equal(twin.predict_proba(X), clf.predict_proba(X))
    assert torch.equal(twin.memory_.items().X, clf.memory_.items().X)
