"""Column methods: progressive networks and Progress & Compress."""

import pickle

import numpy as np
import pytest
import torch
from conftest import SMALL, shared_objects

from skcl import ProgressCompressClassifier, ProgressiveClassifier
from skcl.evaluation import evaluate_stream
from skcl.nn import ColumnNetwork

CLASSES = [ProgressiveClassifier, ProgressCompressClassifier]


def fitted(cls, tasks, epochs=2, end=True, **params):
    clf = cls(**{**SMALL, **params})
    for exp in tasks:
        for _ in range(epochs):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    if end:
        clf.end_task()
    return clf


def column_state(clf, index):
    return {n: p.detach().clone() for n, p in clf.network_.columns[index].named_parameters()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ------------------------------------------------------------------ progressive


def test_progressive_bwt_is_exactly_zero_task_incremental(stream):
    clf = ProgressiveClassifier(**SMALL)
    result = evaluate_stream(clf, stream, scenario="task", epochs=2)
    R = result.R
    assert result.bwt == 0.0
    for j in range(len(stream)):
        assert np.all(R[j:, j] == R[j, j])
    assert R.diagonal().min() > 0.8


def test_progressive_freezes_earlier_columns_and_their_heads(stream):
    clf = fitted(ProgressiveClassifier, stream[:1])
    before = column_state(clf, 0)
    X = stream[0].X_test
    proba = clf.predict_proba(X, task_id=0)
    fitted_more = clf
    for exp in stream[1:3]:
        for _ in range(2):
            fitted_more.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    assert_same(before, column_state(fitted_more, 0))
    np.testing.assert_array_equal(proba, fitted_more.predict_proba(X, task_id=0)[:, :2])


def test_progressive_task_met_again_trains_its_head_alone(stream):
    clf = fitted(ProgressiveClassifier, stream[:2])
    columns = [column_state(clf, i) for i in range(2)]
    proba = clf.predict_proba(stream[1].X_test, task_id=1)
    head = clf.network_.columns[0].heads["0"].weight.detach().clone()
    for _ in range(2):
        clf.partial_fit(stream[0].X_train, stream[0].y_train, task_id=0)
    clf.end_task()
    now = [column_state(clf, i) for i in range(2)]
    for before, after in zip(columns, now, strict=True):
        for name in before:
            assert torch.equal(before[name], after[name]) == (name != "heads.0.weight"
                                                              and name != "heads.0.bias"), name
    assert not torch.equal(head, clf.network_.columns[0].heads["0"].weight)
    np.testing.assert_array_equal(proba, clf.predict_proba(stream[1].X_test, task_id=1))


def test_progressive_trains_its_column_when_later_tasks_are_registered_ahead(stream):
    clf = ProgressiveClassifier(**SMALL)
    for exp in stream[:3]:
        clf._register(exp.X_train, exp.y_train, task_id=exp.task_id)
    before = column_state(clf, 0)
    clf.partial_fit(stream[0].X_train, stream[0].y_train, task_id=0)
    assert all(not torch.equal(v, before[n]) for n, v in column_state(clf, 0).items())


def test_progressive_parameters_grow_linearly_plus_adapters(stream):
    d, (w1, w2) = stream[0].X_train.shape[1], (16, 8)
    clf = ProgressiveClassifier(**{**SMALL, "hidden_layer_sizes": (w1, w2)})
    own = d * w1 + w1 + w1 * w2 + w2 + 2 * w2 + 2  # layers + a two-class head
    for k, exp in enumerate(stream[:4]):
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
        counts = clf.parameter_counts_
        tasks = k + 1
        assert counts["columns"] == tasks * own
        # Column j reads j earlier columns: w1*w2 per earlier column into layer 2, and
        # w2 per earlier column and class into its head.
        assert counts["adapters"] == sum(j * (w1 * w2 + 2 * w2) for j in range(tasks))
        assert sum(counts.values()) == sum(p.numel() for p in clf.network_.parameters())


def test_progressive_without_task_id_takes_the_most_confident_head(stream):
    clf = fitted(ProgressiveClassifier, stream[:3])
    X = np.vstack([exp.X_test[:20] for exp in stream[:3]])
    entropies, labels = [], []
    for task in range(3):
        proba = clf.predict_proba(X, task_id=task)
        p = proba[:, np.isin(clf.classes_, clf.task_classes_[task])]
        entropies.append(-(p * np.log(p)).sum(axis=1))
        labels.append(clf.classes_[proba.argmax(axis=1)])
    chosen = np.argmin(entropies, axis=0)
    expected = np.choose(chosen, labels)
    np.testing.assert_array_equal(clf.predict(X), expected)


def test_column_network_adds_nothing_to_an_earlier_column():
    net = ColumnNetwork(5, (6, 4))
    net.add_units(task=0, n_new=3, seed=0)
    x = torch.randn(7, 5)
    before = net(x, task=0)
    net.add_units(task=1, n_new=2, seed=1)
    assert torch.equal(net(x, task=0)[:, :3], before)
    assert net.n_frozen == 1 and net.task_column == {0: 0, 1: 1}


def test_column_network_from_precomputed_earlier_columns_equals_forward():
    net = ColumnNetwork(5, (6, 4, 3))
    for task in range(3):
        net.add_units(task=task, n_new=2, seed=task)
    x = torch.randn(9, 5)
    for task in (1, 2):
        earlier = net.earlier(x, net.task_column[task])
        assert earlier.shape == (9, task * (6 + 4 + 3)) and not earlier.requires_grad
        torch.testing.assert_close(net.forward_from(x, earlier, task), net(x, task=task))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_backbone_is_refused_with_a_clear_error(cls, stream):
    clf = cls(backbone=lambda n: torch.nn.Linear(n, 4), device="cpu")
    with pytest.raises(ValueError, match="cannot take a backbone"):
        clf.partial_fit(stream[0].X_train, stream[0].y_train)


# ------------------------------------------------------------------ progress & compress


def kb(clf):
    return column_state(clf, ProgressCompressClassifier.KNOWLEDGE_BASE)


def active(clf):
    return column_state(clf, ProgressCompressClassifier.ACTIVE)


def test_pnc_knowledge_base_changes_only_when_compressing(stream):
    clf = ProgressCompressClassifier(**SMALL)
    for exp in stream[:3]:
        base = None
        for _ in range(2):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
            if base is None:
                base = kb(clf)
            assert_same(base, kb(clf))  # progress: the active column learns alone
        trained = active(clf)
        clf.end_task()
        changed = kb(clf)
        assert any(not torch.equal(base[n], changed[n]) for n in base if n.startswith("trunk."))
        reset = active(clf)
        assert all(not torch.equal(trained[n], reset[n]) for n in trained
                   if "laterals" in n or n.startswith("trunk."))


def test_pnc_active_column_is_reinitialised_not_carried(stream):
    """Two runs that differ only in task 1's labels end it with different knowledge bases
    and the same, freshly initialised, active column."""
    first, second = stream[0], stream[1]
    runs = []
    for flip in (False, True):
        clf = fitted(ProgressCompressClassifier, [first], end=False)
        y = second.y_train[::-1] if flip else second.y_train
        for _ in range(2):
            clf.partial_fit(second.X_train, y, task_id=second.task_id)
        clf.end_task()
        runs.append(clf)
    assert_same(active(runs[0]), active(runs[1]))
    assert any(not torch.equal(a, b) for a, b in zip(kb(runs[0]).values(),
                                                     kb(runs[1]).values(), strict=True))


def test_pnc_online_ewc_fisher_on_the_knowledge_base_accumulates_with_gamma(stream):
    clf = ProgressCompressClassifier(**{**SMALL, "gamma": 0.5})
    history = []
    for exp in stream[:3]:
        for _ in range(2):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
        clf.end_task()
        history.append(({n: v.clone() for n, v in clf.penalty_.importance.items()},
                        {n: v.clone() for n, v in clf.fisher_.items()}))
    # The knowledge base's layers; its per-task heads are trained in their task alone.
    assert history[-1][0] and all(n.startswith("columns.0.trunk.") for n in history[-1][0])
    assert any(n.startswith("columns.0.heads.") for n in history[-1][1])
    (old, _), (new, fisher) = history[1], history[2]
    for name in (n for n in fisher if n.startswith("columns.0.trunk.")):
        torch.testing.assert_close(new[name], 0.5 * old[name] + fisher[name], rtol=0, atol=0)
        assert fisher[name].abs().sum() > 0


def test_pnc_penalty_holds_the_knowledge_base_in_compression(stream):
    """A stiff online-EWC penalty keeps the knowledge base nearer its anchor."""
    distances = []
    for ewc_lambda in (0.0, 1e4):
        clf = fitted(ProgressCompressClassifier, stream[:1], ewc_lambda=ewc_lambda)
        anchor = kb(clf)
        for _ in range(2):
            clf.partial_fit(stream[1].X_train, stream[1].y_train, task_id=1)
        clf.end_task()
        now = kb(clf)
        distances.append(sum(float((now[n] - anchor[n]).norm()) for n in anchor
                             if n.startswith("trunk.")))
    assert distances[1] < 0.9 * distances[0]


def test_pnc_compress_penalty_term_carries_the_penalty_force(stream):
    """The autograd term compress trains with has online EWC's value and force."""
    clf = fitted(ProgressCompressClassifier, stream[:2])
    penalty, network = clf.penalty_, clf.network_
    with torch.no_grad():
        for name, p in network.named_parameters():
            if name.startswith("columns.0.trunk."):
                p.add_(0.01)
    network.zero_grad(set_to_none=True)
    term = penalty.term(network)
    term.backward()
    torch.testing.assert_close(term.detach(), penalty.value(network))
    grads = dict(network.named_parameters())
    forces = penalty.forces()
    assert forces and all(n.startswith("columns.0.") for n in forces)
    for name, force in forces.items():
        torch.testing.assert_close(grads[name].grad, force)


# ------------------------------------------------------------------ both


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_pickle_mid_task_trains_on_identically(cls, stream):
    clf = fitted(cls, stream[:2], epochs=1, end=False)
    twin = pickle.loads(pickle.dumps(clf))
    for model in (clf, twin):
        model.partial_fit(stream[1].X_train, stream[1].y_train, task_id=1)
        model.partial_fit(stream[2].X_train, stream[2].y_train, task_id=2).end_task()
    X = stream[2].X_test
    np.testing.assert_array_equal(clf.predict_proba(X), twin.predict_proba(X))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_same_seed_same_predictions(cls, stream):
    a, b = (fitted(cls, stream[:3]) for _ in range(2))
    c = fitted(cls, stream[:3], random_state=1)
    X = np.vstack([exp.X_test for exp in stream[:3]])
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def entropies_and_labels(clf, X):
    """Each task's head's softmax entropy over its classes and its label, per row."""
    entropies, labels = [], []
    for task in clf.tasks_seen_:
        proba = clf.predict_proba(X, task_id=task)
        p = proba[:, np.isin(clf.classes_, clf.task_classes_[task])]
        entropies.append(-(p * np.log(p)).sum(axis=1))
        labels.append(clf.classes_[proba.argmax(axis=1)])
    return np.array(entropies), np.array(labels)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_batch_task_inference_answers_a_call_with_its_least_uncertain_task(cls, stream):
    clf = fitted(cls, stream[:3], task_inference="batch")
    for exp in stream[:3]:
        X = exp.X_test[:30]
        entropies, labels = entropies_and_labels(clf, X)
        best = np.argmin(entropies.sum(axis=1))
        np.testing.assert_array_equal(clf.predict(X), labels[best])
    # Per sample, rows of one call may take different heads.
    X = np.vstack([exp.X_test[:20] for exp in stream[:3]])
    entropies, labels = entropies_and_labels(clf, X)
    per_sample = clf.set_params(task_inference="sample").predict(X)
    np.testing.assert_array_equal(per_sample, np.choose(entropies.argmin(axis=0), labels))
    assert len(np.unique(entropies.argmin(axis=0))) > 1


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_task_inference_is_checked_at_fit_and_at_predict(cls, stream):
    exp = stream[0]
    with pytest.raises(ValueError, match="task_inference"):
        cls(task_inference="row", **SMALL).partial_fit(exp.X_train, exp.y_train)
    clf = fitted(cls, stream[:2]).set_params(task_inference="row")
    with pytest.raises(ValueError, match="task_inference must be one of"):
        clf.predict(exp.X_test)
    with pytest.raises(ValueError, match="task_inference must be one of"):
        clf.predict(exp.X_test, task_id=0)
    assert clf.set_params(task_inference="sample").predict(exp.X_test).shape == (len(exp.X_test),)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_failed_call_leaves_the_parts_its_checkpoint_shares_as_they_were(cls, stream):
    clf = fitted(cls, stream[:3])
    # Frozen columns' layers and the other tasks' heads are shared, not copied, per call.
    shared = {id(part) for part in shared_objects(clf)}
    heads = [(column, head) for column in clf.network_.columns for head in column.heads.values()]
    assert heads and all(id(head) in shared or id(column) in shared for column, head in heads)
    before = {n: p.detach().clone() for n, p in clf.network_.named_parameters()}
    X = np.vstack([exp.X_test for exp in stream[:3]])
    proba = clf.predict_proba(X)
    # One call: task 0 met again (its head trains, and P&C compresses into it when the
    # call moves on), then a new task whose outliers make training diverge.
    X_bad = stream[3].X_train.copy()
    X_bad[:10, 5] = 1e30
    X_call = np.vstack([stream[0].X_train, X_bad])
    y_call = np.concatenate([stream[0].y_train, stream[3].y_train])
    tasks = np.repeat([0, 3], [len(stream[0].y_train), len(stream[3].y_train)])
    with pytest.raises(FloatingPointError, match="diverged"):
        clf.partial_fit(X_call, y_call, task_id=tasks)
    assert_same(before, {n: p.detach() for n, p in clf.network_.named_parameters()})
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


def unshared_parameters(clf):
    """The network's parameters a call's checkpoint copies (not shared with it)."""
    parts = [part for part in shared_objects(clf) if isinstance(part, torch.nn.Module)]
    shared = {id(p) for part in parts for p in part.parameters()}
    return [p for p in clf.network_.parameters() if id(p) not in shared]


def test_a_progressive_call_copies_only_the_open_tasks_column(stream):
    for n_tasks in (2, 4):
        clf = fitted(ProgressiveClassifier, stream[:n_tasks], end=False)
        column = clf.network_.columns[clf.network_.task_column[clf.current_task_]]
        assert {id(p) for p in unshared_parameters(clf)} == {id(p) for p in column.parameters()}


def test_a_pnc_call_copies_as_much_after_many_tasks_as_after_few(stream):
    copied = [sum(p.numel() for p in unshared_parameters(
        fitted(ProgressCompressClassifier, stream[:n_tasks], end=False))) for n_tasks in (2, 4)]
    assert copied[0] == copied[1] > 0
