"""Consolidated heads: CWR* and AR1 / AR1*."""

import pickle

import numpy as np
import pytest
import torch
from conftest import SMALL

from skcl import AR1Classifier, CWRStarClassifier

CLASSES = [CWRStarClassifier, AR1Classifier]


def train(clf, tasks, epochs=2, end=True):
    for exp in tasks:
        for _ in range(epochs):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    if end:
        clf.end_task()
    return clf


def trunk(clf):
    return {n: p.detach().clone() for n, p in clf.network_.trunk.named_parameters()}


def test_output_layer_has_no_bias(stream):
    clf = train(CWRStarClassifier(**SMALL), stream[:1])
    names = [n for n, _ in clf.network_.named_parameters()]
    assert "head.weight" in names and not any(n.startswith("head.b") for n in names)


def test_absent_classes_keep_their_consolidated_weights_bit_for_bit(stream):
    clf = train(CWRStarClassifier(**SMALL), stream[:2])
    head = clf.network_.head
    cw, past = head.cw.clone(), head.past.clone()
    old = [clf.output_units_.of(c) for c in (*stream[0].classes, *stream[1].classes)]
    train(clf, stream[2:3])
    new = [clf.output_units_.of(c) for c in stream[2].classes]
    assert torch.equal(head.cw[old], cw[old]) and torch.equal(head.past[old], past[old])
    assert (head.cw[new] != 0).any(dim=1).all()
    # The task's classes were loaded from cw into zeroed temporary weights.
    assert head.weight[old].abs().sum() == 0


def test_consolidation_follows_the_cwr_star_update(stream):
    clf = CWRStarClassifier(**SMALL)
    train(clf, stream[:1])
    # A task that brings back class 1 (seen) with class 2 (new).
    X = np.vstack([stream[0].X_train[stream[0].y_train == 1], stream[1].X_train])
    y = np.concatenate([stream[0].y_train[stream[0].y_train == 1], stream[1].y_train])
    keep = np.isin(y, [1, 2])
    X, y = X[keep], y[keep]
    head = clf.network_.head
    for _ in range(2):
        clf.partial_fit(X, y, task_id=7)
    cw_before, past_before = head.cw.clone().double(), head.past.clone().double()
    tw = head.weight.detach().double()
    units = torch.tensor([clf.output_units_.of(1), clf.output_units_.of(2)])
    cur = torch.tensor([(y == 1).sum(), (y == 2).sum()], dtype=torch.float64)
    w_past = (past_before[units] / cur).sqrt().unsqueeze(1)
    mean = tw[units].mean(dim=0)
    expected = (cw_before[units] * w_past + tw[units] - mean) / (w_past + 1)
    clf.end_task()
    torch.testing.assert_close(head.cw[units].double(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(head.past[units].double(), past_before[units] + cur)
    assert past_before[units[0]] > 0 == past_before[units[1]]


def test_lower_layers_frozen_after_the_first_task(stream):
    clf = train(CWRStarClassifier(**{**SMALL, "lower_lr_factor": 0.0}), stream[:1])
    after_first = trunk(clf)
    train(clf, stream[1:3])
    for name, value in trunk(clf).items():
        assert torch.equal(value, after_first[name]), name
    slowed = train(CWRStarClassifier(**{**SMALL, "lower_lr_factor": 0.1}), stream[:3])
    assert any(not torch.equal(v, after_first[n]) for n, v in trunk(slowed).items())


def test_open_task_predicts_with_the_consolidated_weights_it_would_get(stream):
    clf = train(CWRStarClassifier(**SMALL), stream[:2], end=False)
    X = np.vstack([exp.X_test for exp in stream[:2]])
    open_proba = clf.predict_proba(X)
    tw = clf.network_.head.weight.detach().clone()
    clf.end_task()
    np.testing.assert_array_equal(open_proba, clf.predict_proba(X))
    assert not torch.equal(clf.network_.head.cw, tw)  # predictions read cw, not tw


@pytest.mark.parametrize("lower_lr_factor", [0.0, 0.5, 1.0])
def test_ar1_without_si_or_replay_is_cwr_star_bit_for_bit(stream, lower_lr_factor):
    params = {**SMALL, "lower_lr_factor": lower_lr_factor}
    ar1 = train(AR1Classifier(si_c=0.0, latent_replay=False, **params), stream[:3])
    cwr = train(CWRStarClassifier(**params), stream[:3])
    for (n, a), (m, b) in zip(ar1.network_.state_dict().items(),
                              cwr.network_.state_dict().items(), strict=True):
        assert n == m and torch.equal(a, b), n
    X = np.vstack([exp.X_test for exp in stream[:3]])
    np.testing.assert_array_equal(ar1.predict_proba(X), cwr.predict_proba(X))


def test_ar1_si_covers_the_lower_layers_only_and_acts(stream):
    ar1 = train(AR1Classifier(si_c=10.0, **SMALL), stream[:3])
    cwr = train(CWRStarClassifier(lower_lr_factor=1.0, **SMALL), stream[:3])
    assert ar1.penalty_.importance and all(n.startswith("trunk.")
                                           for n in ar1.penalty_.importance)
    assert any(float(v.abs().sum()) > 0 for v in ar1.penalty_.importance.values())
    assert any(not torch.equal(a, trunk(cwr)[n]) for n, a in trunk(ar1).items())


def test_ar1_star_stores_latents_of_the_latent_width(stream):
    clf = AR1Classifier(latent_replay=True, lower_lr_factor=0.0, memory_size=50,
                        **{**SMALL, "hidden_layer_sizes": (24, 16)})
    train(clf, stream[:2])
    stored = clf.memory_.items()
    assert stored.X.shape == (50, 24) and stored.X.shape[1] != stream[0].X_train.shape[1]
    # Frozen below the latent layer after the first task: the stored latents stay exact.
    lower = clf.network_.trunk.lower
    first = torch.tensor(stream[0].X_train, dtype=torch.float32)
    latent = lower(first).detach()
    assert any(torch.equal(row, latent[i]) for row in stored.X[:5] for i in range(len(latent)))


def test_ar1_star_replayed_classes_are_trained_and_consolidated(stream):
    params = {**SMALL, "hidden_layer_sizes": (24, 16), "lower_lr_factor": 0.0}
    star = train(AR1Classifier(latent_replay=True, **params), stream[:2])
    plain = train(AR1Classifier(latent_replay=False, **params), stream[:2])
    old = [star.output_units_.of(c) for c in stream[0].classes]
    # Without replay task 1 leaves task 0's cw alone; with replay they are consolidated.
    assert star.network_.head.past[old].min() > plain.network_.head.past[old].max()
    assert not torch.equal(star.network_.head.cw[old], plain.network_.head.cw[old])


@pytest.mark.parametrize("cls, extra", [(CWRStarClassifier, {}), (AR1Classifier, {}),
                                        (AR1Classifier, {"latent_replay": True})],
                         ids=["CWRStar", "AR1", "AR1*"])
def test_pickle_mid_task_trains_on_identically(cls, extra, stream):
    clf = train(cls(**SMALL, **extra), stream[:2], epochs=1, end=False)
    twin = pickle.loads(pickle.dumps(clf))
    for model in (clf, twin):
        model.partial_fit(stream[1].X_train, stream[1].y_train, task_id=1)
        model.partial_fit(stream[2].X_train, stream[2].y_train, task_id=2).end_task()
    X = stream[2].X_test
    np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_same_seed_same_predictions(cls, stream):
    a, b = (train(cls(**SMALL), stream[:3]) for _ in range(2))
    c = train(cls(**{**SMALL, "random_state": 1}), stream[:3])
    X = np.vstack([exp.X_test for exp in stream[:3]])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def test_ar1_default_lower_rate_is_0_3_and_ar1_star_freezes_below_the_latent_layer(stream):
    X = np.vstack([exp.X_test for exp in stream[:3]])
    default = train(AR1Classifier(**SMALL), stream[:3])
    explicit = train(AR1Classifier(lower_lr_factor=0.3, **SMALL), stream[:3])
    np.testing.assert_array_equal(default.predict_proba(X), explicit.predict_proba(X))
    star = train(AR1Classifier(latent_replay=True, memory_size=40, **SMALL), stream[:1])
    lower = {n: p.detach().clone() for n, p in star.network_.trunk.lower.named_parameters()}
    train(star, stream[1:3])
    for name, value in star.network_.trunk.lower.named_parameters():
        assert torch.equal(value, lower[name]), name


def test_ar1_star_classes_trained_on_replay_alone_take_their_trained_weights(stream):
    params = {**SMALL, "hidden_layer_sizes": (24, 16), "lower_lr_factor": 0.0}
    clf = train(AR1Classifier(latent_replay=True, memory_size=40, **params), stream[:2],
                end=False)
    head = clf.network_.head
    present = clf._counts_.nonzero().flatten()
    old = torch.tensor([clf.output_units_.of(c) for c in stream[0].classes])
    new = torch.tensor([clf.output_units_.of(c) for c in stream[1].classes])
    assert set(present.tolist()) == set(old.tolist()) | set(new.tolist())
    tw = head.weight.detach().clone()
    past_before = head.past.clone()
    shifted = tw[old] - tw[present].mean(dim=0)
    clf.end_task()
    torch.testing.assert_close(head.cw[old], shifted, rtol=1e-6, atol=1e-7)
    assert torch.all(head.past[old] > past_before[old])  # their stored latents counted
