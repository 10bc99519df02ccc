"""HAT and CPG: gates and masks over one network (skcl.strategies.gates, skcl.nn.gated)."""

import pickle

import numpy as np
import pytest
import torch
from conftest import SMALL

from skcl.datasets import load_permuted_digits
from skcl.evaluation import evaluate_stream
from skcl.nn import GateContext, GatedLinear, min_entropy_heads
from skcl.nn.picking import FREE
from skcl.strategies.gates import CPGClassifier, HATClassifier


@pytest.fixture(scope="module")
def permuted():
    return load_permuted_digits(n_experiences=3)


def fit_tasks(clf, stream, epochs=2):
    for exp in stream:
        for _ in range(epochs):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    return clf.end_task()


# ------------------------------------------------------------------ the gated layer


def test_gated_linear_multiplies_each_unit_by_its_task_gate():
    layer = GatedLinear(3, 4)
    layer.add_task(5, seed=0)
    layer.add_task(2, seed=1)
    x = torch.randn(6, 3)
    task = torch.tensor([5, 2, 2, 5, 2, 5])
    dense = torch.nn.functional.linear(x, layer.weight, layer.bias)
    expected = dense * torch.sigmoid(3.0 * layer.embedding[[0, 1, 1, 0, 1, 0]])
    torch.testing.assert_close(layer(x, GateContext(task, 3.0)), expected)
    torch.testing.assert_close(layer(x, None), dense)
    assert layer.tasks == [5, 2]


def test_min_entropy_heads_takes_the_most_confident_head_per_sample():
    inf = float("inf")
    logits = torch.tensor([
        [[4.0, 0.0, -inf, -inf], [0.0, 0.1, -inf, -inf]],
        [[-inf, -inf, 1.0, 0.9], [-inf, -inf, 0.0, 6.0]],
    ])
    out = min_entropy_heads(logits)
    assert out[0].tolist() == [4.0, 0.0, -inf, -inf]
    assert out[1].tolist() == [-inf, -inf, 0.0, 6.0]


# ------------------------------------------------------------------ HAT


def test_hat_slope_anneals_within_each_epoch_from_1_over_smax_to_smax(permuted):
    slopes = []

    class Recording(HATClassifier):
        def _forward(self, batch, step):
            out = super()._forward(batch, step)
            slopes.append((step.epoch, self._slope_))
            return out

    exp = permuted[0]
    clf = Recording(**SMALL, s_max=50.0)
    for _ in range(2):
        clf.partial_fit(exp.X_train, exp.y_train, task_id=0)
    for epoch in (0, 1):
        s = [v for e, v in slopes if e == epoch]
        assert s[0] == pytest.approx(1 / 50.0) and s[-1] == pytest.approx(50.0)
        assert np.all(np.diff(s) > 0)


def test_hat_gradients_of_units_old_tasks_use_are_zero(permuted):
    grads = []

    class Recording(HATClassifier):
        def _after_backward(self, batch, step):
            super()._after_backward(batch, step)
            if self.current_task_ == 1:
                grads.append([(l.weight.grad.clone(), l.bias.grad.clone())
                              for l in self.network_.gated_layers])

    clf = Recording(**{**SMALL, "hidden_layer_sizes": (32, 32)})
    fit_tasks(clf, permuted[:1])
    before = [(l.weight.detach().clone(), l.bias.detach().clone())
              for l in clf.network_.gated_layers]
    fit_tasks(clf, permuted[1:2])
    old = clf.task_gates_[0]
    used = [g == 1.0 for g in old]
    assert all(u.any() and not u.all() for u in used)  # neither vacuous nor saturated
    for step in grads:
        below = None
        for (gw, gb), u in zip(step, used, strict=True):
            frozen = (u.unsqueeze(1) if below is None
                      else u.unsqueeze(1) & below.unsqueeze(0)).expand_as(gw)
            assert torch.all(gw[frozen] == 0) and torch.all(gb[u] == 0)
            below = u
    assert any(bool(gw[~used[0]].abs().sum() > 0) for (gw, _), *_ in grads)
    # Those weights never moved, even with momentum 0.9 (the default).
    after = [(l.weight.detach(), l.bias.detach()) for l in clf.network_.gated_layers]
    below = None
    for (w0, b0), (w1, b1), u in zip(before, after, used, strict=True):
        frozen = (u.unsqueeze(1) if below is None
                  else u.unsqueeze(1) & below.unsqueeze(0)).expand_as(w0)
        assert torch.equal(w0[frozen], w1[frozen]) and torch.equal(b0[u], b1[u])
        below = u


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_hat_old_tasks_keep_their_predictions_under_sgd_and_adam(permuted, optimizer):
    lr = 0.05 if optimizer == "sgd" else 1e-3
    clf = HATClassifier(**{**SMALL, "hidden_layer_sizes": (64,)}, optimizer=optimizer,
                        learning_rate=lr)
    fit_tasks(clf, permuted[:1], epochs=3)
    X0 = permuted[0].X_test
    before = clf.predict_proba(X0, task_id=0)
    fit_tasks(clf, permuted[1:], epochs=3)
    changed = np.abs(clf.predict_proba(X0, task_id=0) - before).max()
    assert changed < 1e-3


def test_hat_bwt_is_near_zero_task_incremental(permuted):
    clf = HATClassifier(**{**SMALL, "hidden_layer_sizes": (128,), "batch_size": 32})
    result = evaluate_stream(clf, permuted, scenario="task", epochs=3)
    assert abs(result.bwt) <= 0.01
    assert np.diag(result.R).min() > 0.85  # it learned every task


def test_hat_class_incremental_prediction_is_the_min_entropy_head(permuted):
    clf = fit_tasks(HATClassifier(**SMALL), permuted[:2])
    X = permuted[1].X_test[:50]
    per_task = np.stack([clf.decision_function(X, task_id=t) for t in (0, 1)])
    proba = [np.exp(s - s.max(1, keepdims=True)) for s in per_task]
    entropy = np.stack([-(np.where(p > 0, p / p.sum(1, keepdims=True), 1)
                          * np.log(np.where(p > 0, p / p.sum(1, keepdims=True), 1))).sum(1)
                        for p in proba])
    chosen = per_task[entropy.argmin(0), np.arange(len(X))]
    np.testing.assert_allclose(clf.decision_function(X), chosen)


def test_hat_embeddings_stay_clamped_and_the_regulariser_makes_gates_sparse(permuted):
    dense = fit_tasks(HATClassifier(**SMALL, c=0.0), permuted[:1])
    sparse = fit_tasks(HATClassifier(**SMALL, c=5.0), permuted[:1])
    for clf in (dense, sparse):
        assert all(l.embedding.abs().max() <= clf.thres_emb for l in clf.network_.gated_layers)
    assert sparse.task_gates_[0][0].sum() < dense.task_gates_[0][0].sum()


@pytest.mark.parametrize("cls", [HATClassifier, CPGClassifier], ids=lambda c: c.__name__)
def test_gates_reject_a_backbone(cls, permuted):
    clf = cls(backbone=lambda n: torch.nn.Linear(n, 4), device="cpu")
    with pytest.raises(ValueError, match="cannot take a backbone"):
        clf.partial_fit(permuted[0].X_train, permuted[0].y_train)


@pytest.mark.parametrize("cls", [HATClassifier, CPGClassifier], ids=lambda c: c.__name__)
def test_pickle_mid_task_then_identical_further_training(cls, permuted):
    settings = {**SMALL, **(cls._unit_test_params() if cls is CPGClassifier else {}),
                "max_epochs": 2}
    clf = cls(**settings)
    fit_tasks(clf, permuted[:1])
    exp = permuted[1]
    clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    copy = pickle.loads(pickle.dumps(clf))
    for model in (clf, copy):
        model.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
        fit_tasks(model, permuted[2:])
    X = np.vstack([e.X_test for e in permuted])
    np.testing.assert_array_equal(clf.predict_proba(X), copy.predict_proba(X))
    twin = fit_tasks(cls(**settings), permuted[:1])
    twin.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    twin.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    fit_tasks(twin, permuted[2:])
    np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))


# ------------------------------------------------------------------ CPG


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cpg_old_tasks_predict_bit_identically_after_every_later_task(permuted, optimizer):
    """BWT exactly 0 task-incrementally, through growth (the goal 0.99 makes it grow)."""
    lr = 0.05 if optimizer == "sgd" else 1e-3
    clf = CPGClassifier(**{**SMALL, "hidden_layer_sizes": (16, 16)}, optimizer=optimizer,
                        learning_rate=lr, accuracy_goal=0.99, max_grow=1, grow_units=8,
                        max_epochs=2, prune_steps=2)
    frozen = {}
    for exp in permuted:
        fit_tasks(clf, [exp])
        for task, (X, proba) in frozen.items():
            np.testing.assert_array_equal(clf.predict_proba(X, task_id=task), proba)
        frozen[exp.task_id] = (exp.X_test, clf.predict_proba(exp.X_test, task_id=exp.task_id))
    assert sum(clf.growth_.values()) >= 2
    assert clf.score(permuted[0].X_test, permuted[0].y_test, task_id=0) > 0.7


def test_cpg_grows_only_when_the_goal_is_missed(permuted):
    settings = dict(SMALL, accuracy_goal=0.8, max_grow=2, grow_units=8, max_epochs=2,
                    prune_steps=2)
    narrow = fit_tasks(CPGClassifier(**{**settings, "hidden_layer_sizes": (2,)}), permuted[:2])
    wide = fit_tasks(CPGClassifier(**{**settings, "hidden_layer_sizes": (64,)}), permuted[:2],
                     epochs=3)
    assert narrow.growth_[0] >= 1
    assert narrow.network_.pick_layers[0].out_features == 2 + 8 * sum(narrow.growth_.values())
    assert narrow.n_parameters_[0] > fit_tasks(
        CPGClassifier(**{**settings, "hidden_layer_sizes": (2,), "max_grow": 0}), permuted[:1]
    ).n_parameters_[0]
    assert wide.growth_ == {0: 0, 1: 0}
    assert min(wide.validation_accuracy_.values()) >= wide.accuracy_goal
    assert wide.network_.pick_layers[0].out_features == 64
    assert wide.n_parameters_[0] == wide.n_parameters_[1] - 10 * 64 - 10 - 64  # head, bias
    assert sorted(narrow.n_parameters_) == sorted(wide.n_parameters_) == [0, 1]


def test_cpg_compacts_releases_and_never_moves_old_weights(permuted):
    clf = CPGClassifier(**{**SMALL, "hidden_layer_sizes": (64,)}, compact_tolerance=0.05,
                        max_grow=0)
    fit_tasks(clf, permuted[:1], epochs=3)
    layer = clf.network_.pick_layers[0]
    assert clf.sparsity_[0] > 0
    released = layer.owner == FREE
    assert released.float().mean() == pytest.approx(clf.sparsity_[0], abs=0.01)
    assert torch.all(layer.weight[released] == 0)
    assert torch.equal(layer.stored_mask(0), ~released)  # task 0 owns all the rest
    kept = layer.weight.detach().clone()
    fit_tasks(clf, permuted[1:2])
    assert torch.equal(layer.weight[~released], kept[~released])
    assert not torch.equal(layer.weight[released], kept[released])  # task 1 took them
    mask1 = layer.stored_mask(1)
    assert bool(mask1[layer.owner == 1].all())  # its own weights, and picks among old ones
    assert bool(mask1[~released].any())


def test_cpg_validation_split_is_stable_and_never_trained_on(permuted):
    exp = permuted[0]
    clf = CPGClassifier(**SMALL, validation_fraction=0.2)
    clf.partial_fit(exp.X_train, exp.y_train, task_id=0)
    held = clf._held_out(torch.from_numpy(exp.X_train))
    order = np.random.default_rng(0).permutation(len(exp.X_train))
    assert np.array_equal(clf._held_out(torch.from_numpy(exp.X_train[order])), held[order])
    assert 0.15 < held.mean() < 0.25
    clf.partial_fit(exp.X_train[order], exp.y_train[order], task_id=0)
    val, train = clf._validation_store_.tensors(), clf._train_store_.tensors()
    assert val.n == 2 * held.sum() and train.n == 2 * (~held).sum()  # two calls, each once
    train_rows = {row.tobytes() for row in train.X.numpy()}
    assert not any(row.tobytes() in train_rows for row in exp.X_train[held])
