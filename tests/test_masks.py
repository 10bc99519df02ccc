"""PackNet, Piggyback and SupSup: tasks isolated by binary masks inside one network; and
task inference (per sample or per batch) of the whole masks-and-gates family."""

import copy
import pickle

import numpy as np
import pytest
import torch
from conftest import PROTOCOL, SMALL

from skcl import (
    CPGClassifier,
    HATClassifier,
    PackNetClassifier,
    PiggybackClassifier,
    SupSupClassifier,
)
from skcl.datasets import load_permuted_digits
from skcl.nn import (
    ScoreMaskLinear,
    SupermaskLinear,
    Superposition,
    TaskMaskLinear,
    min_entropy_heads,
    softmax_entropy,
)
from skcl.strategies.masks._common import OneShotTaskInference

METHODS = [PackNetClassifier, PiggybackClassifier, SupSupClassifier]
FAMILY = [*METHODS, HATClassifier, CPGClassifier]
OPTIMIZERS = [dict(optimizer="sgd", momentum=0.9), dict(optimizer="sgd", momentum=0.0),
              dict(optimizer="adam", learning_rate=0.005)]


@pytest.fixture(scope="module")
def permuted():
    return load_permuted_digits(n_experiences=3)


def small(cls, **extra):
    params = {**SMALL, **({"n_tasks": 3} if cls is PackNetClassifier else {}), **extra}
    return cls(**params)


def learn(clf, exp, epochs=2):
    for _ in range(epochs):
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    return clf


def backbone(clf):
    return {name: p.detach().clone() for name, p in clf.network_.named_parameters()
            if name.endswith(("weight", "bias")) and "heads" not in name}


# ------------------------------------------------------------------ the layers


def test_a_masked_layer_computes_each_sample_under_its_own_tasks_mask():
    torch.manual_seed(0)
    layer = TaskMaskLinear(5, 4)
    masks = [torch.rand(4, 5) > 0.5 for _ in range(2)]
    for task, mask in enumerate(masks):
        layer.set_mask(task, mask)
    x, tasks = torch.randn(6, 5), torch.tensor([1, 0, 0, 1, 1, 0])
    out = layer(x, tasks)
    for i in range(6):
        expected = x[i] @ (layer.weight * masks[int(tasks[i])]).T + layer.bias
        torch.testing.assert_close(out[i], expected)


def test_a_superposition_mixes_the_outputs_of_the_tasks_masks():
    torch.manual_seed(0)
    layer = SupermaskLinear(5, 4)
    for task in range(3):
        layer.new_scores(task, seed=task)
    layer.freeze_scores()
    x, alpha = torch.randn(2, 5), torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    out = layer(x, Superposition(alpha, (0, 1, 2)))
    expected = sum(alpha[:, [t]] * layer(x, t) for t in range(3))
    torch.testing.assert_close(out, expected)


def test_piggyback_scores_pass_their_gradient_straight_through_the_threshold():
    layer = ScoreMaskLinear(3, 2, bias=False, threshold=5e-3)
    layer.add_scores(0, torch.tensor([[1e-2, 1e-3, 1e-2], [1e-3, 1e-2, 1e-2]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    layer(x, 0).sum().backward()
    # d/ds of sum(x (W * M)^T) is x_j W_ij, for masked-out entries too.
    torch.testing.assert_close(layer.scores["0"].grad, layer.weight.detach() * x)
    assert layer.mask(0).tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]


def test_supermasks_keep_the_density_fraction_of_largest_scores():
    layer = SupermaskLinear(10, 8, density=0.25)
    layer.new_scores(0, seed=0)
    mask = layer.mask(0).bool()
    assert int(mask.sum()) == 20
    scores = layer.scores["0"].detach().abs()
    assert scores[mask].min() > scores[~mask].max()
    assert torch.equal(layer.weight.abs(), torch.full_like(layer.weight, (2 / 10) ** 0.5))


def test_supermasks_select_the_top_k_scores_ties_included():
    torch.manual_seed(0)
    layer = SupermaskLinear(64, 256, density=0.5)
    tied = torch.tensor([[3.0, 1.0, 2.0, 2.0], [2.0, 0.0, 2.0, 5.0]])  # 4 of 8 kept, 2s tie
    for ranked in [torch.rand(256, 64) for _ in range(3)] + [tied]:
        keep = ranked.numel() // 2
        expected = torch.zeros(ranked.numel(), dtype=torch.bool)
        expected[ranked.flatten().topk(keep).indices] = True
        mask = layer.select(ranked)
        assert int(mask.sum()) == keep
        assert torch.equal(mask.flatten(), expected)


# ------------------------------------------------------------------ what they must show


@pytest.mark.parametrize("settings", OPTIMIZERS, ids=lambda s: f"{s['optimizer']}-"
                         f"{s.get('momentum', 'default')}")
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_task_predictions_are_bit_identical_after_every_later_task(cls, settings, permuted):
    clf = small(cls, **settings)
    seen = {}
    for exp in permuted:
        learn(clf, exp)
        clf.end_task()
        seen[exp.task_id] = clf.predict_proba(exp.X_test, task_id=exp.task_id)
        for old in permuted[:exp.task_id]:
            np.testing.assert_array_equal(
                clf.predict_proba(old.X_test, task_id=old.task_id), seen[old.task_id])
        assert clf.score(exp.X_test, exp.y_test, task_id=exp.task_id) > 0.5


@pytest.mark.parametrize("settings", OPTIMIZERS[:1] + OPTIMIZERS[2:],
                         ids=lambda s: s["optimizer"])
def test_packnet_masks_partition_the_weights_each_task_trained(settings, permuted):
    clf = small(PackNetClassifier, **settings)
    owned = []
    for exp in permuted:
        learn(clf, exp)
        clf.end_task()
        owned.append([(layer.weight.detach().clone(), owner == exp.task_id)
                      for layer, owner in zip(clf.masked_layers(), clf.owner_, strict=True)])
    for i, layer in enumerate(clf.masked_layers()):
        previous = torch.zeros_like(layer.weight, dtype=torch.bool)
        union = torch.zeros_like(previous)
        for task, snapshots in enumerate(owned):
            mask = layer.stored_mask(task)
            own = mask & ~previous
            assert torch.equal(own, clf.owner_[i] == task)
            assert not (own & union).any()  # disjoint from every earlier task's
            union |= own
            assert torch.equal(mask, union)  # a task predicts with its own and older weights
            # a fair share: 1/3 of the layer each (n_tasks=3)
            assert abs(own.float().mean().item() - 1 / 3) < 0.01
            # what a task trained never moves again
            weight, _ = snapshots[i]
            assert torch.equal(layer.weight[own], weight[own])
            previous = mask
        assert union.all()  # the last expected task takes every free weight


@pytest.mark.parametrize("cls", [PiggybackClassifier, SupSupClassifier],
                         ids=lambda c: c.__name__)
@pytest.mark.parametrize("settings", OPTIMIZERS[:1] + OPTIMIZERS[2:],
                         ids=lambda s: s["optimizer"])
def test_the_backbone_is_bit_identical_after_every_task(cls, settings, permuted):
    clf = small(cls, **settings)
    first = None
    if cls is SupSupClassifier:
        clf._register(permuted[0].X_train, permuted[0].y_train, task_id=0)
        first = backbone(clf)
    for exp in permuted:
        learn(clf, exp)
        clf.end_task()
        first = first or backbone(clf)
        now = backbone(clf)
        assert now.keys() == first.keys() and now
        for name in first:
            assert torch.equal(now[name], first[name]), name


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_predictions_without_a_task_use_the_inferred_task(cls, permuted):
    clf = small(cls)
    for exp in permuted:
        learn(clf, exp)
    X = np.vstack([exp.X_test[:40] for exp in permuted])
    inferred = clf.infer_task(X)
    assert set(np.unique(inferred)) <= {0, 1, 2}
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(X, task_id=inferred))
    truth = np.repeat([0, 1, 2], 40)
    assert clf.task_inference_score(X, truth) == np.mean(inferred == truth)


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_a_mid_task_pickle_trains_on_identically(cls, permuted):
    clf = learn(small(cls), permuted[0])
    clf.partial_fit(permuted[1].X_train, permuted[1].y_train, task_id=1)
    twin = pickle.loads(pickle.dumps(clf))
    for model in (clf, twin):
        learn(model, permuted[1], epochs=1)
        learn(model, permuted[2])
    X = permuted[2].X_test
    np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))
    np.testing.assert_array_equal(clf.predict_proba(X, task_id=1),
                                  twin.predict_proba(X, task_id=1))


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.__name__)
def test_a_backbone_is_refused(cls, permuted):
    clf = small(cls, backbone=lambda n: torch.nn.Linear(n, 8))
    with pytest.raises(ValueError, match="cannot take a backbone"):
        learn(clf, permuted[0], epochs=1)


def test_piggyback_trains_the_backbone_on_the_first_task_then_only_masks(permuted):
    clf = learn(small(PiggybackClassifier), permuted[0])
    assert clf.backbone_task_ == 0
    learn(clf, permuted[1], epochs=1)
    names = {n for n, p in clf.network_.named_parameters()
             if any(p is q for q in clf._optimizer_.param_groups[0]["params"])}
    assert names == {"trunks.shared.0.scores.1", "heads.1.weight", "heads.1.bias"}


# ------------------------------------------------------------------ task inference


def test_min_entropy_heads_per_batch_takes_the_head_of_least_summed_entropy():
    inf = float("inf")
    logits = torch.tensor([
        [[9.0, 0.0, -inf, -inf], [0.0, 0.0, -inf, -inf], [0.0, 0.1, -inf, -inf]],
        [[-inf, -inf, 0.0, 0.0], [-inf, -inf, 9.0, 0.0], [-inf, -inf, 5.0, 0.0]],
    ])
    entropy = softmax_entropy(logits)
    assert torch.isfinite(entropy).all()
    assert entropy.sum(dim=1).argmin() == 1 and entropy[:, 0].argmin() == 0
    # per sample: row 0 takes head 0, rows 1 and 2 head 1; per batch: head 1 for all
    per_sample = min_entropy_heads(logits)
    assert [torch.equal(per_sample[i], logits[h, i]) for i, h in enumerate([0, 1, 1])] == [True] * 3
    assert torch.equal(min_entropy_heads(logits, "batch"), logits[1])


@pytest.fixture(scope="module", params=FAMILY, ids=lambda c: c.__name__)
def fitted(request, permuted):
    clf = small(request.param)
    for exp in permuted:
        learn(clf, exp)
    return clf.end_task()


def mixed(permuted, n=20):
    """The first ``n`` test rows of every task, in task order."""
    return np.vstack([exp.X_test[:n] for exp in permuted])


def test_per_batch_inference_gives_every_row_of_a_call_one_task(fitted, permuted):
    clf = copy.deepcopy(fitted).set_params(task_inference="batch")
    X = mixed(permuted)
    free = clf.predict_proba(X)
    answers = [np.allclose(free, clf.predict_proba(X, task_id=t), rtol=1e-12, atol=0)
               for t in range(len(permuted))]
    assert sum(answers) == 1


def test_per_sample_inference_reads_each_row_on_its_own(fitted, permuted):
    clf = copy.deepcopy(fitted)
    assert clf.task_inference == "sample"  # the default
    X = mixed(permuted, n=3)
    np.testing.assert_allclose(clf.predict_proba(X),
                               np.vstack([clf.predict_proba(row[None]) for row in X]),
                               rtol=1e-12, atol=0)


def test_set_params_switches_the_task_inference_of_a_fitted_estimator(fitted, permuted):
    clf = copy.deepcopy(fitted)
    X = mixed(permuted)
    per_sample = clf.predict_proba(X)
    assert not np.array_equal(clf.set_params(task_inference="batch").predict_proba(X),
                              per_sample)
    np.testing.assert_array_equal(clf.set_params(task_inference="sample").predict_proba(X),
                                  per_sample)


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_an_unknown_task_inference_is_refused_at_fit_and_predict(cls, permuted):
    X, y = permuted[0].X_train[:64], permuted[0].y_train[:64]
    for train in ("fit", "partial_fit"):
        with pytest.raises(ValueError, match="task_inference"):
            getattr(small(cls, task_inference="rows"), train)(X, y)
    clf = small(cls).partial_fit(X, y)
    with pytest.raises(ValueError, match="task_inference"):
        clf.set_params(task_inference="rows").predict(X)


def test_one_shot_per_batch_follows_the_gradient_of_one_shared_alpha(permuted):
    clf = small(SupSupClassifier, inference_rule="one-shot")
    for exp in permuted:
        learn(clf, exp)
    network = clf._scoring_network().network
    x = torch.from_numpy(mixed(permuted)).double()
    alpha = torch.full((1, 3), 1 / 3, dtype=torch.float64, requires_grad=True)
    logits = network(x, Superposition(alpha.expand(x.shape[0], 3), (0, 1, 2)))
    (grad,) = torch.autograd.grad(softmax_entropy(logits).sum(), alpha)
    inferred = OneShotTaskInference(network, "batch").infer(x)
    assert inferred.tolist() == [int(grad.argmin())] * x.shape[0]
    with pytest.raises(ValueError, match="inference_rule"):
        clf.set_params(inference_rule="two-shot").predict(permuted[0].X_test)


@pytest.mark.slow
def test_supsup_infers_the_task_of_permuted_digits_per_batch():
    stream = load_permuted_digits()
    clf = SupSupClassifier(**{**PROTOCOL, "learning_rate": 0.2})  # its default
    for exp in stream:
        learn(clf, exp, epochs=5)
    # The paper's setting: batches of 128 rows of one task's test set, one task per batch.
    clf.set_params(task_inference="batch")
    batches = [(exp.X_test[i:i + 128], exp.task_id)
               for exp in stream for i in range(0, len(exp.X_test), 128)]
    per_batch = np.mean([clf.infer_task(X)[0] == task for X, task in batches])
    assert per_batch >= 0.9
    assert np.mean([clf.score(exp.X_test, exp.y_test) for exp in stream]) >= 0.85
    # Per sample, a row's task is its own: the same alone as among others.
    clf.set_params(task_inference="sample")
    X = np.vstack([exp.X_test for exp in stream])
    truth = np.concatenate([np.full(len(exp.X_test), exp.task_id) for exp in stream])
    inferred = clf.infer_task(X)
    np.testing.assert_array_equal(inferred[::97], [clf.infer_task(row[None])[0]
                                                   for row in X[::97]])
    assert clf.task_inference_score(X, truth) == np.mean(inferred == truth)
