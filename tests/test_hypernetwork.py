"""Continual learning with hypernetworks (von Oswald et al., ICLR 2020)."""

import io
import pickle

import numpy as np
import pytest
import torch
from conftest import PROTOCOL, SMALL

from skcl import HyperNetworkClassifier
from skcl.datasets import load_permuted_digits
from skcl.evaluation import evaluate_stream
from skcl.nn import GeneratedNetworks, HyperMLP

FAST = {**SMALL, "embedding_dim": 8, "hyper_hidden_sizes": (16,), "chunk_size": 512,
        "chunk_embedding_dim": 4}


@pytest.fixture(scope="module")
def permuted():
    return load_permuted_digits()


def train(clf, stream, n_tasks, epochs=2, rows=300):
    for exp in stream[:n_tasks]:
        for _ in range(epochs):
            clf.partial_fit(exp.X_train[:rows], exp.y_train[:rows], task_id=exp.task_id)
    return clf


def relative_drift(clf, task, reference):
    with torch.no_grad():
        now = clf.network_.generate([task])[0]
    return float((now - reference).norm() / reference.norm())


def test_old_tasks_generated_weights_drift_less_than_the_bound(permuted):
    """After task 0, three more tasks move the weights generated for task 0 by less than
    10% (relative L2) with beta = 0.01; without the regulariser they move over 5x more
    (measured: 0.079 and 0.55)."""
    drifts = {}
    for beta in (0.01, 0.0):
        clf = train(HyperNetworkClassifier(beta=beta, **FAST), permuted, 1)
        clf.end_task()
        with torch.no_grad():
            reference = clf.network_.generate([0])[0]
        train(clf, permuted[1:], 3)
        drifts[beta] = relative_drift(clf, 0, reference)
    assert drifts[0.01] < 0.10
    assert drifts[0.0] > 5 * drifts[0.01]


def penalties_during_a_call(clf, exp, probe):
    """``(probe(), penalty)`` at every step of one ``partial_fit`` call on ``exp``, ``probe``
    run just before the step's penalty."""
    seen, original = [], clf._penalty

    def spy():
        with torch.no_grad():
            before = probe()
        value = original()
        seen.append((before, float(value.detach())))
        return value

    clf._penalty = spy
    clf.partial_fit(exp.X_train[:300], exp.y_train[:300], task_id=exp.task_id)
    del clf._penalty
    return seen


def test_the_regulariser_is_beta_times_the_mean_squared_distance_to_the_last_task_end(
        permuted):
    clf = train(HyperNetworkClassifier(beta=0.5, **FAST), permuted, 2, epochs=1)
    clf.end_task()
    with torch.no_grad():
        targets = clf.network_.generate([0, 1])  # h*(e_k): as task 1 ended
    train(clf, permuted[2:], 1, epochs=1)
    steps = penalties_during_a_call(clf, permuted[2], lambda: clf.network_.generate([0, 1]))
    expected = [0.5 * float((now - targets).square().sum(dim=1).mean()) for now, _ in steps]
    assert min(expected) > 1e-3  # the weights moved, so the targets are not simply today's
    np.testing.assert_allclose([value for _, value in steps], expected, rtol=1e-5)


def test_reg_tasks_regularises_a_random_subset_of_the_earlier_tasks_per_step(permuted):
    clf = train(HyperNetworkClassifier(beta=0.5, reg_tasks=2, **FAST), permuted, 3, epochs=1)
    clf.end_task()
    train(clf, permuted[3:], 1, epochs=1)  # task 3 open: tasks 0-2 are regularised

    def per_task():
        now, then = (clf.network_.generate([0, 1, 2], hnet=h) for h in (None,
                                                                         clf.previous_hnet_))
        return (now - then).square().sum(dim=1)

    matched = []
    for distances, value in penalties_during_a_call(clf, permuted[3], per_task):
        pairs = [0.5 * float(distances[[i, j]].mean()) for i, j in ((0, 1), (0, 2), (1, 2))]
        matched.append(tuple(np.isclose(value, pairs, rtol=1e-5)))
    assert all(any(row) for row in matched)  # each step: the mean over two of the three
    assert len(set(matched)) > 1  # different pairs on different steps


def test_the_state_grows_by_an_embedding_and_a_head_per_task_only(permuted):
    """No per-task snapshot of generated weights: every tensor that pickling writes,
    besides the embeddings, the heads and the unit bookkeeping, has the same size after 3
    and after 9 tasks (storage bytes as pickled, so a view of a larger tensor counts whole)."""

    def pickled_bytes(clf):
        net, units = clf.network_, clf.output_units_
        grows = {t.data_ptr() for t in [*net.embeddings.values(), *net.heads.parameters(),
                                        net.unit_task, units.unit_class, units.class_unit]
                 if t is not None}
        sizes = []

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, torch.Tensor) and obj.data_ptr() not in grows:
                    sizes.append(obj.untyped_storage().nbytes())
                return None

        Pickler(io.BytesIO()).dump(clf)
        return sum(sizes)

    clf = HyperNetworkClassifier(**FAST)
    sizes = []
    for n_tasks in (3, 9):
        for exp in permuted[len(clf.tasks_seen_) if sizes else 0:n_tasks]:
            clf.partial_fit(exp.X_train[:64], exp.y_train[:64], task_id=exp.task_id)
        clf.end_task()
        sizes.append(pickled_bytes(clf))
    assert sizes[0] > 0 and sizes[0] == sizes[1]


def test_only_the_hypernetwork_the_open_tasks_embedding_and_head_train(permuted):
    clf = train(HyperNetworkClassifier(**FAST), permuted, 2, epochs=1)
    net = clf.network_
    trained = {id(p) for p in clf._optimizer_.param_groups[0]["params"]}
    assert {id(p) for p in net.hnet.parameters()} <= trained
    assert id(net.embeddings["1"]) in trained and id(net.embeddings["0"]) not in trained
    assert not {id(p) for p in net.heads["0"].parameters()} & trained
    # The trunk has no weights of its own: they are generated.
    assert {n.split(".")[0] for n, _ in net.named_parameters()} == {"hnet", "embeddings",
                                                                      "heads"}


def test_task_inference_picks_the_task_whose_head_is_least_uncertain():
    torch.manual_seed(0)
    net = HyperMLP(6, (8,), 3, (5,), None, 2)
    for task in range(3):
        net.add_units(task, 4, seed=task)
    scorer = GeneratedNetworks(net)
    x = torch.randn(20, 6)
    scores = scorer(x)
    entropies = []
    for task in range(3):
        p = torch.softmax(scorer(x, task)[:, net.unit_task == task], dim=1)
        entropies.append(-(p * p.log()).sum(dim=1))
    chosen = torch.stack(entropies, dim=1).argmin(dim=1)
    for task in range(3):
        rows = chosen == task
        units = net.unit_task == task
        torch.testing.assert_close(scores[rows][:, units], scorer(x[rows], task)[:, units])
        assert bool(torch.isinf(scores[rows][:, ~units]).all())
    assert len(set(chosen.tolist())) > 1  # the test can fail: more than one task answers


def test_batch_task_inference_picks_one_task_per_call_and_can_pick_the_wrong_one(permuted):
    clf = train(HyperNetworkClassifier(learning_rate=0.01, **FAST), permuted, 3)
    unit_task = clf.network_.unit_task.numpy()

    def answering_tasks(X):
        """The task whose units score finite, per row."""
        finite = np.isfinite(clf.decision_function(X))
        return np.array([unit_task[np.flatnonzero(row)[0]] for row in finite])

    def total_entropy(X, task):
        p = torch.softmax(torch.as_tensor(clf.decision_function(X, task_id=task)), dim=1)
        return float(torch.special.entr(p).sum())

    clf.set_params(task_inference="batch")
    for exp in permuted[:3]:
        chosen = answering_tasks(exp.X_test)
        assert len(set(chosen)) == 1  # one task for the whole call: the least uncertain
        assert chosen[0] == np.argmin([total_entropy(exp.X_test, t) for t in range(3)])
    # A call that mixes two tasks' rows still gets one task: wrong for half of them.
    mixed = np.vstack([permuted[0].X_test[:40], permuted[2].X_test[:40]])
    assert (answering_tasks(mixed) != np.repeat([0, 2], 40)).sum() >= 40


def test_task_inference_is_validated(permuted):
    with pytest.raises(ValueError, match="task_inference"):
        train(HyperNetworkClassifier(task_inference="task", **FAST), permuted, 1, epochs=1)
    clf = train(HyperNetworkClassifier(**FAST), permuted, 1, epochs=1)
    clf.task_inference = "per-row"  # set after fitting: predict checks it
    with pytest.raises(ValueError, match="task_inference must be one of"):
        clf.predict(permuted[0].X_test)


def test_same_seed_same_predictions_and_pickling_mid_task(permuted):
    a = train(HyperNetworkClassifier(**FAST), permuted, 2, epochs=1)
    b = train(HyperNetworkClassifier(**FAST), permuted, 2, epochs=1)
    X = permuted[1].X_test
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    copy = pickle.loads(pickle.dumps(a))
    exp = permuted[1]
    for clf in (a, copy):
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    np.testing.assert_array_equal(copy.predict_proba(X), a.predict_proba(X))
    np.testing.assert_array_equal(copy.predict_proba(X, task_id=1),
                                  a.predict_proba(X, task_id=1))


def test_a_backbone_is_refused(permuted):
    clf = HyperNetworkClassifier(backbone=lambda n: torch.nn.Linear(n, 4), **FAST)
    with pytest.raises(ValueError, match="cannot take a backbone"):
        clf.partial_fit(permuted[0].X_train, permuted[0].y_train)


@pytest.mark.slow
def test_task_incremental_bwt_on_permuted_digits_at_protocol_size(permuted):
    params = {k: v for k, v in PROTOCOL.items() if k not in ("learning_rate", "momentum")}
    result = evaluate_stream(HyperNetworkClassifier(**params), permuted, scenario="task",
                             epochs=5)
    assert result.bwt >= -0.02
    assert result.acc >= 0.9
