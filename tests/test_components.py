"""Components (skcl.components): each mechanism alone, and two of them combined in one
small estimator without a copied loop."""

import pickle

import numpy as np
import pytest
import torch

from skcl import ReplayClassifier
from skcl.base import Batch, Step
from skcl.components import (
    FrozenSnapshot,
    PathIntegral,
    QuadraticPenalty,
    scoped_parameters,
    sum_terms,
)
from skcl.kernels import fisher_diagonal
from skcl.nn import SharedHead, make_mlp
from skcl.strategies.importance import TaskSample, network_importance

SMALL = dict(hidden_layer_sizes=(32, 32), batch_size=32, device="cpu", random_state=0)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def network(n_units=3, seed=0):
    torch.manual_seed(seed)
    net = SharedHead(lambda: make_mlp(4, (5, 5)), n_features=4)
    net.add_units(task=0, n_new=n_units, seed=seed)
    return net


def random_importance(net, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=generator) for n, p in net.named_parameters()}


def nudge(net, scale=0.1, seed=2):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


# ---------------------------------------------------------------- QuadraticPenalty


@pytest.mark.parametrize("scope", [None, "trunk.0.", lambda name, p: p.dim() == 1],
                         ids=["all", "prefix", "callable"])
def test_penalty_value_and_force_are_those_of_autograd_on_the_scoped_parameters(scope):
    net = network()
    omega = random_importance(net)
    penalty = QuadraticPenalty(scope=scope)
    penalty.consolidate(omega, dict(net.named_parameters()))
    scoped = {n for n, _ in scoped_parameters(net, scope)}
    assert set(penalty.importance) == set(penalty.anchor) == scoped
    penalty.stiffen(3.0)
    anchors = {n: a.clone() for n, a in penalty.anchor.items()}
    nudge(net)
    value = penalty.value(net)
    penalty.add_gradient(net)
    closed_form = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    params = dict(net.named_parameters())
    reference = sum(0.5 * (3.0 * omega[n] * (params[n] - anchors[n]).square()).sum()
                    for n in scoped)
    reference.backward()
    torch.testing.assert_close(value, reference.detach())
    assert set(closed_form) == scoped
    for n in scoped:
        torch.testing.assert_close(closed_form[n], params[n].grad)


def test_stiffness_is_clipped_and_never_negative():
    net = network()
    omega = {n: torch.linspace(-1.0, 100.0, p.numel()).reshape(p.shape)
             for n, p in net.named_parameters()}
    penalty = QuadraticPenalty()
    penalty.consolidate(omega, dict(net.named_parameters()))
    penalty.stiffen(2.0, limit=50.0)
    for n, k in penalty.stiffness.items():
        torch.testing.assert_close(k, (2.0 * omega[n]).clamp(0.0, 50.0))


def test_bad_scope_is_refused():
    with pytest.raises(TypeError, match="scope must be"):
        QuadraticPenalty(scope=3)


def test_consolidate_decays_sums_or_replaces_the_importance():
    net = network()
    theta = dict(net.named_parameters())
    first, second = random_importance(net, 1), random_importance(net, 2)
    for decay in (1.0, 0.5, 0.0):
        penalty = QuadraticPenalty()
        penalty.consolidate(first, theta)
        penalty.consolidate(second, theta, decay=decay)
        for n, omega in penalty.importance.items():
            torch.testing.assert_close(omega, decay * first[n] + second[n])
            assert torch.equal(penalty.anchor[n], theta[n].detach())
            assert not penalty.anchor[n].requires_grad


def test_add_term_has_the_gradient_of_one_quadratic_per_term():
    net = network()
    terms = []
    penalty = QuadraticPenalty()
    for seed in range(3):
        nudge(net, seed=seed)
        omega = random_importance(net, seed)
        terms.append((omega, {n: p.detach().clone() for n, p in net.named_parameters()}))
        penalty.add_term(omega, dict(net.named_parameters()))
    penalty.stiffen(1.0)
    nudge(net, seed=9)
    penalty.value(net)
    penalty.add_gradient(net)
    for n, p in net.named_parameters():
        expected = sum(omega[n] * (p.detach() - star[n]) for omega, star in terms)
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-6)


def test_grown_output_layer_is_penalised_only_on_the_anchored_rows_after_parameters_changed():
    net = network(n_units=2)
    penalty = QuadraticPenalty(scope="head.")
    penalty.consolidate({n: torch.ones_like(p) for n, p in net.named_parameters()},
                        dict(net.named_parameters()))
    penalty.stiffen(1.0)
    penalty.value(net)  # caches the parameter list
    net.add_units(task=1, n_new=2, seed=1)  # replaces the head's parameters
    penalty.parameters_changed()
    with torch.no_grad():
        net.head.weight.add_(1.0)
    value = penalty.value(net)
    penalty.add_gradient(net)
    assert value.item() == pytest.approx(0.5 * 2 * net.head.in_features)
    torch.testing.assert_close(net.head.weight.grad[:2], torch.ones(2, net.head.in_features))
    assert torch.all(net.head.weight.grad[2:] == 0.0)


def test_sum_terms_keeps_the_penalties_that_exist():
    assert sum_terms() is None
    assert sum_terms(None, torch.tensor(1.0)).item() == 1.0


# ---------------------------------------------------------------- PathIntegral


def test_path_integral_is_minus_the_task_gradient_times_the_steps_in_scope():
    """With a penalty: what is integrated is the task loss's gradient, not the penalty's."""
    net = network()
    penalty = QuadraticPenalty()
    penalty.consolidate(random_importance(net), dict(net.named_parameters()))
    penalty.stiffen(5.0)
    nudge(net)
    path = PathIntegral(scope="trunk.")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    X, y = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 3
    expected = {n: torch.zeros_like(p) for n, p in scoped_parameters(net, "trunk.")}
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(X), y).backward()
        task_grad = {n: p.grad.clone() for n, p in net.named_parameters()}
        penalty.value(net)
        penalty.add_gradient(net)
        path.after_backward(net)
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        optimizer.step()
        path.after_step(penalty)
        for n, p in net.named_parameters():
            if n in expected:
                expected[n] -= task_grad[n] * (p.detach() - before[n])
    assert set(path.omega) == set(expected)
    for n, omega in path.omega.items():
        torch.testing.assert_close(omega, expected[n], rtol=1e-4, atol=1e-7)
    params = dict(net.named_parameters())
    importance = path.close(net, xi=0.1)
    for n, omega in expected.items():
        change = params[n].detach() - start[n]
        torch.testing.assert_close(importance[n], omega / (change.square() + 0.1),
                                   rtol=1e-4, atol=1e-6)
    assert path.omega == {}


# ---------------------------------------------------------------- FrozenSnapshot


def test_frozen_snapshot_answers_as_the_network_did_when_refreshed():
    net = network()
    X = torch.randn(6, 4)
    net(X).sum().backward()
    snapshot = FrozenSnapshot()
    assert snapshot.network is None and snapshot.n_units == 0
    snapshot.refresh(net)
    before = net(X).detach()
    nudge(net)
    net.add_units(task=1, n_new=2, seed=1)
    out = snapshot(X)
    assert torch.equal(out, before) and not out.requires_grad
    assert snapshot.n_units == 3 and not snapshot.network.training
    assert all(not p.requires_grad and p.grad is None for p in snapshot.network.parameters())
    assert pickle.loads(pickle.dumps(snapshot)).n_units == 3


# ---------------------------------------------------------------- composing two mechanisms


class LowerEWCReplay(ReplayClassifier):
    """Experience replay plus EWC on the first trunk layer only (a hybrid in ~30 lines)."""

    ewc_lambda = 100.0
    fisher_samples = 64

    def _initialize(self):
        super()._initialize()
        self.ewc_ = QuadraticPenalty(scope="trunk.0.")
        self.task_sample_ = TaskSample(0)

    def _before_task(self, task):
        super()._before_task(task)
        self.task_sample_ = TaskSample(self.fisher_samples)
        self.ewc_.stiffen(self.ewc_lambda)

    def _observe(self, samples):
        self.task_sample_.add(samples.X, samples.y, samples.weight)
        super()._observe(samples)

    def _penalty(self):
        return sum_terms(super()._penalty(), self.ewc_.value(self.network_))

    def _after_backward(self, batch, step):
        super()._after_backward(batch, step)
        self.ewc_.add_gradient(self.network_)

    def _parameters_changed(self):
        self.ewc_.parameters_changed()
        super()._parameters_changed()

    def _after_task(self, task):
        super()._after_task(task)
        X, y = self.task_sample_.tensors()
        fisher = network_importance(fisher_diagonal, self.network_, X, y)
        self.ewc_.consolidate(fisher, dict(self.network_.named_parameters()))


def test_scoped_penalty_and_replay_combine_without_a_copied_loop(stream):
    clf = LowerEWCReplay(memory_size=100, **SMALL)
    for exp in stream[:3]:
        for _ in range(2):
            clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    assert sorted(clf.ewc_.importance) == ["trunk.0.bias", "trunk.0.weight"]
    assert 0 < len(clf.memory_) <= 100
    assert clf._penalty().item() > 0
    X, y = stream[0].X_test, stream[0].y_test
    assert clf.score(X, y, task_id=0) > 0.8

    # One batch of the open task joined by replayed samples: with and without the penalty.
    exp = stream[2]
    n = 32
    units = torch.from_numpy(clf.output_units_.encode(
        exp.task_id, *np.unique(exp.y_train[:n], return_inverse=True)))
    batch = Batch(torch.from_numpy(exp.X_train[:n]), units, None,
                  torch.full((n,), exp.task_id))
    step = Step(epoch=0, batch=0, n_batches=1)
    batch = clf._training_batch(batch, step)
    assert int((batch.origins() != 0).sum()) > 0

    def gradients(with_penalty):
        clf.network_.zero_grad(set_to_none=True)
        loss = clf._loss(clf._forward(batch, step), batch)
        if with_penalty:
            loss = loss + clf._penalty()
        loss.backward()
        if with_penalty:
            clf._after_backward(batch, step)
        return {name: p.grad.clone() for name, p in clf.network_.named_parameters()}

    plain, combined = gradients(False), gradients(True)
    params = dict(clf.network_.named_parameters())
    for name in plain:
        if name.startswith("trunk.0."):
            force = clf.ewc_.stiffness[name] * (params[name].detach() - clf.ewc_.anchor[name])
            assert force.abs().sum() > 0
            torch.testing.assert_close(combined[name] - plain[name], force)
        else:
            assert torch.equal(combined[name], plain[name]), name
