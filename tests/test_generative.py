"""Generative replay (DGR) and generative negative replay (GNR), and their VAE component."""

import pickle

import numpy as np
import pytest
import torch
from conftest import SMALL

from skcl import GenerativeNegativeReplayClassifier, GenerativeReplayClassifier
from skcl._batch import GENERATED, STREAM
from skcl.generator import GenerativeMemory, replay_weights
from skcl.memory import concat_batches
from skcl.nn import VAE

METHODS = [GenerativeReplayClassifier, GenerativeNegativeReplayClassifier]


def trained(cls, stream, n_tasks=3, epochs=2, **extra):
    small = {**SMALL, "latent_dim": 8} if cls in METHODS else SMALL
    clf = cls(**{**small, **extra})
    for exp in stream[:n_tasks]:
        for _ in range(epochs):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    return clf


def tensors_in(obj, seen=None):
    """Every tensor reachable from ``obj`` (attributes, containers, modules, optimizers)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, torch.nn.Module):
        yield from obj.state_dict().values()
        yield from tensors_in(vars(obj), seen)
    elif isinstance(obj, torch.optim.Optimizer):
        yield from tensors_in(obj.state_dict(), seen)
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value, seen)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("skcl"):
        yield from tensors_in(vars(obj), seen)


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_no_real_sample_of_an_old_task_is_stored(cls, stream):
    clf = trained(cls, stream, n_tasks=3)
    old = np.vstack([exp.X_train for exp in stream[:2]]).astype(np.float32)
    # No tensor reachable from the estimator holds a row (or a 64-value run) of old inputs.
    for tensor in tensors_in(vars(clf)):
        flat = tensor.detach().cpu().reshape(-1)
        if flat.dtype != torch.float32 or flat.numel() < old.shape[1]:
            continue
        rows = flat[: flat.numel() // old.shape[1] * old.shape[1]].reshape(-1, old.shape[1])
        matches = (rows.numpy()[:, None, :] == old[None, :, :]).all(axis=2)
        assert not matches.any()
    # Nor does its pickle: the bytes of no old row appear in it.
    blob = pickle.dumps(clf)
    assert not any(row.tobytes() in blob for row in old)
    # The check can fail: a replay buffer's pickle does contain them.
    from skcl import ReplayClassifier
    replay = trained(ReplayClassifier, stream, n_tasks=1, memory_size=50)
    replay_blob = pickle.dumps(replay)
    assert any(row.tobytes() in replay_blob for row in stream[0].X_train.astype(np.float32))


def test_vae_samples_are_reproducible_from_a_seed_and_follow_the_data_range(stream):
    memory = GenerativeMemory(64, (32,), 4, learning_rate=1e-3, seed=0, device="cpu")
    X = torch.as_tensor(stream[0].X_train, dtype=torch.float32)
    memory.observe(X * 3.0 + 2.0)  # a range no constant of the VAE knows
    a, b, c = (memory.vae.sample(50, seed=s) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool((a >= 2.0).all() and (a <= 2.0 + 3.0 * float(X.max())).all())
    # Sampling leaves torch's global generator alone.
    state = torch.random.get_rng_state()
    memory.vae.sample(5, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())


def test_vae_accepts_any_width_and_learns():
    rng = np.random.default_rng(0)
    for width in (3, 100):
        X = torch.as_tensor(rng.normal(size=(256, width)) @ rng.normal(size=(width, width)),
                            dtype=torch.float32)
        memory = GenerativeMemory(width, (32,), 2, learning_rate=3e-3, seed=0, device="cpu")
        memory.observe(X)
        batch = GenerativeReplayClassifier(batch_size=32, verbose=0)
        samples = concat_batches(_stream_batch(X))
        before = VAE.loss(memory.vae.eval()(X)).item()
        for epoch in range(10):
            memory.train_epoch(batch, samples, epoch)
        after = VAE.loss(memory.vae.eval()(X)).item()
        assert after < before


def _stream_batch(X):
    zeros = torch.zeros(X.shape[0], dtype=torch.long)
    from skcl.base import Batch
    return Batch(X, zeros, None, zeros)


def test_replay_weights_give_one_over_t_of_the_mean_to_current_data():
    w_current, w_replay = replay_weights(32, 64, tasks_seen=3)
    assert np.isclose(w_current * 32 / 96, 1 / 3) and np.isclose(w_replay * 64 / 96, 2 / 3)


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_batches_join_generated_samples_labelled_by_the_previous_solver(cls, stream):
    clf = trained(cls, stream, n_tasks=2, epochs=1)
    seen = []
    original = clf._loss

    def spy(logits, batch):
        seen.append(batch)
        return original(logits, batch)

    clf._loss = spy
    exp = stream[1]
    clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    batch = seen[0]
    generated = batch.origin == GENERATED
    assert generated.any() and (batch.origin == STREAM).any()
    with torch.no_grad():
        labels = clf.previous_network_(batch.X[generated]).argmax(dim=1)
    assert torch.equal(batch.y[generated], labels)
    assert int(batch.y[generated].max()) < clf.previous_network_.n_units  # old units only
    # Two tasks seen: the generated half and the current half each weigh 1/2 of the mean.
    n = batch.n
    assert np.isclose(float(batch.weight[~generated].sum()) / n, 0.5)
    assert np.isclose(float(batch.weight[generated].sum()) / n, 0.5)


def test_dgr_and_gnr_differ_only_in_how_generated_samples_enter_the_loss(stream):
    dgr = trained(GenerativeReplayClassifier, stream, n_tasks=2, epochs=1, labels="hard")
    gnr = GenerativeNegativeReplayClassifier(**{**SMALL, "latent_dim": 8})
    gnr.__dict__.update(pickle.loads(pickle.dumps(dgr.__dict__)))  # same state, same network
    exp = stream[1]
    X = torch.as_tensor(exp.X_train[:16])
    fake = dgr._generate(16, torch.tensor(exp.task_id))
    real = _stream_batch(X)._replace(
        y=torch.as_tensor(dgr.output_units_.encode(1, *np.unique(exp.y_train[:16],
                                                                 return_inverse=True))),
        task=torch.full((16,), exp.task_id))
    batch = concat_batches(real._replace(weight=torch.ones(16)), fake._replace(
        weight=torch.full((16,), 2.0)))
    grads = []
    for clf in (dgr, gnr):
        logits = clf.network_(batch.X).detach().requires_grad_(True)
        clf._loss(logits, batch).backward()
        grads.append(logits.grad)
    gen = batch.origin == GENERATED
    current = torch.zeros(dgr.network_.n_units, dtype=torch.bool)
    current[[dgr.output_units_.of(c) for c in dgr.task_classes_[exp.task_id]]] = True
    # Stream rows: identical. Generated rows: the same on the current task's units, which
    # are negatives (pushed down), and nothing at all through any other unit in GNR.
    torch.testing.assert_close(grads[0][~gen], grads[1][~gen], rtol=0, atol=0)
    torch.testing.assert_close(grads[0][gen][:, current], grads[1][gen][:, current])
    assert bool((grads[1][gen][:, current] > 0).all())
    assert bool((grads[1][gen][:, ~current] == 0).all())
    assert bool((grads[0][gen][:, ~current] != 0).any())


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_same_seed_same_predictions_and_pickling_mid_task(cls, stream):
    a = trained(cls, stream, n_tasks=2, epochs=1)
    b = trained(cls, stream, n_tasks=2, epochs=1)
    X = stream[2].X_test
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    copy = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(copy.predict_proba(X), a.predict_proba(X))
    exp = stream[2]
    for clf in (a, copy):
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    np.testing.assert_array_equal(copy.predict_proba(X), a.predict_proba(X))


def test_soft_labels_remember_better_than_naive_on_split_digits(stream):
    from skcl import NaiveClassifier
    from skcl.evaluation import evaluate_stream
    dgr = evaluate_stream(GenerativeReplayClassifier(**{**SMALL, "hidden_layer_sizes": (64,)}),
                          stream, scenario="class", epochs=3)
    naive = evaluate_stream(NaiveClassifier(**{**SMALL, "hidden_layer_sizes": (64,)}),
                            stream, scenario="class", epochs=3)
    assert dgr.bwt > naive.bwt + 0.2
    assert dgr.acc > naive.acc + 0.1


@pytest.mark.parametrize("epochs", [1, 3])
def test_the_generator_trains_generator_epochs_per_classifier_epoch(stream, epochs):
    clf = GenerativeReplayClassifier(**{**SMALL, "generator_epochs": epochs})
    calls = []
    clf.partial_fit(stream[0].X_train, stream[0].y_train)  # builds the generator
    original = clf.generator_.train_epoch
    clf.generator_.train_epoch = lambda est, samples, epoch: (calls.append(epoch),
                                                               original(est, samples, epoch))
    for _ in range(2):
        clf.partial_fit(stream[0].X_train, stream[0].y_train)
    assert calls == list(range(epochs, 3 * epochs))  # numbered on from the first call's
