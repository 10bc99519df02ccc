"""Must-show properties of GEM and A-GEM (METHODS.md), tested through the estimators."""

import numpy as np
import pytest
import torch
from conftest import SMALL
from torch.nn import functional as F

from skcl import AGEMClassifier, GEMClassifier, NaiveClassifier, kernels
from skcl.base import Batch
from skcl.nn import SharedHead, make_mlp
from skcl.strategies.gradient import _GEM_EPS, per_task_gradients


def flat_grad(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
    return torch.cat([g.reshape(-1) for g in grads])


def per_task_reference(network, params, batch, bounds):
    """One backward pass per task, as the GEM paper's code does."""
    network.eval()
    rows = []
    for start, stop in bounds:
        losses = F.cross_entropy(network(batch.X[start:stop]), batch.y[start:stop],
                                 reduction="none")
        if batch.weight is not None:
            losses = losses * batch.weight[start:stop]
        rows.append(flat_grad(losses.mean(), params))
    network.train()
    return torch.stack(rows)


def random_batch(n, n_features, n_units, seed, weighted=False):
    g = torch.Generator().manual_seed(seed)
    weight = torch.rand(n, generator=g) + 0.5 if weighted else None
    X = torch.randn(n, n_features, generator=g)
    y = torch.randint(0, n_units, (n,), generator=g)
    return Batch(X, y, weight, torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("weighted", [False, True])
def test_batched_memory_gradients_equal_per_task_autograd_gradients(weighted):
    torch.manual_seed(0)
    net = SharedHead(lambda: make_mlp(6, (16, 8)), n_features=6)
    net.add_units(task=-1, n_new=4, seed=0)
    params = list(net.parameters())
    batch = random_batch(23, 6, 4, seed=1, weighted=weighted)
    bounds = [(0, 5), (5, 6), (6, 17), (17, 23)]
    G = per_task_gradients(net, params, batch, bounds)
    expected = per_task_reference(net, params, batch, bounds)
    assert G.shape == (4, sum(p.numel() for p in params)) and G.is_contiguous()
    torch.testing.assert_close(G, expected, rtol=1e-5, atol=1e-6)


def test_batched_memory_gradients_cover_layers_that_are_not_linear():
    torch.manual_seed(0)
    shared = torch.nn.Linear(5, 5)

    def trunk():  # LayerNorm parameters and a linear layer applied twice
        return torch.nn.Sequential(shared, torch.nn.LayerNorm(5), torch.nn.ReLU(), shared,
                                   torch.nn.Tanh())

    net = SharedHead(trunk, n_features=5)
    net.add_units(task=-1, n_new=3, seed=0)
    params = list(net.parameters())
    batch = random_batch(12, 5, 3, seed=2)
    bounds = [(0, 4), (4, 12)]
    torch.testing.assert_close(per_task_gradients(net, params, batch, bounds),
                               per_task_reference(net, params, batch, bounds),
                               rtol=1e-5, atol=1e-6)


def test_gem_memory_gradients_take_one_forward_pass_over_the_memory(stream):
    clf = GEMClassifier(memory_size=60, **SMALL)
    for exp in stream[:4]:
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    clf._optimizer_ = clf._make_optimizer()
    calls = []
    handle = clf.network_.register_forward_hook(lambda *args: calls.append(1))
    G = clf.memory_gradients([0, 1, 2])
    handle.remove()
    assert len(calls) == 1
    items = clf.memory_.items([0, 1, 2])
    bounds = [(s, e) for _, s, e in clf.memory_.segments([0, 1, 2])]
    torch.testing.assert_close(G, per_task_reference(clf.network_, clf._params(), items, bounds),
                               rtol=1e-4, atol=1e-6)


class GEMSpy(GEMClassifier):
    """Records, at every projected step, <g', g_k> with g_k from per-task autograd."""

    def _initialize(self):
        super()._initialize()
        self.records_ = []

    def _after_backward(self, batch, step):
        tasks = [t for t in self.memory_.tasks if t != self.current_task_]
        params = self._params()
        g = torch.cat([p.grad.reshape(-1) for p in params]).clone()
        super()._after_backward(batch, step)
        if not tasks:
            return
        g_proj = torch.cat([p.grad.reshape(-1) for p in params])
        bounds = [(s, e) for _, s, e in self.memory_.segments(tasks)]
        G = per_task_reference(self.network_, params, self.memory_.items(tasks), bounds)
        _, v = kernels.gem_project(G, g, margin=self.memory_strength, eps=_GEM_EPS,
                                   return_dual=True)
        self.records_.append((G @ g, G @ g_proj, v, G.pow(2).sum(1)))


def test_gem_projected_gradient_keeps_every_old_task_loss_from_rising(stream):
    clf = GEMSpy(memory_size=60, **SMALL)
    for exp in stream[:3]:
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    projected = [r for r in clf.records_ if r[2] is not None]
    assert len(projected) > 5  # constraints were violated and the kernel projected
    for before, after, v, norms2 in clf.records_:
        if v is None:  # no violation: g itself, <g, g_k> >= 0 already
            assert (before >= 0).all()
            assert torch.equal(before, after)
        else:
            # KKT of the dual with the row-scaled ridge eps diag(G G^T):
            # G g' = lambda - eps |g_k|^2 v >= -eps |g_k|^2 v (0 slack when eps = 0)
            bound = -_GEM_EPS * torch.as_tensor(v, dtype=after.dtype) * norms2
            assert (after >= bound - 1e-4 * before.abs().max()).all()
            assert (before < 0).any()
    assert sum((r[1] < 0).any().item() for r in clf.records_) < len(clf.records_)


def test_gem_remembers_better_than_naive(stream):
    gem, naive = GEMClassifier(memory_size=100, **SMALL), NaiveClassifier(**SMALL)
    for exp in stream[:3]:
        for _ in range(2):
            gem.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
            naive.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    X0, y0 = stream[0].X_test, stream[0].y_test
    assert gem.score(X0, y0) > naive.score(X0, y0) + 0.3


class AGEMSpy(AGEMClassifier):
    """Records <g, g_ref> and <g', g_ref> with the reference gradient the estimator used."""

    def _initialize(self):
        super()._initialize()
        self.records_ = []

    def reference_gradient(self, sample):
        self.g_ref_ = super().reference_gradient(sample)
        return self.g_ref_

    def _after_backward(self, batch, step):
        self.g_ref_ = None
        params = self._params()
        g = torch.cat([p.grad.reshape(-1) for p in params]).clone()
        super()._after_backward(batch, step)
        if self.g_ref_ is not None:
            g_proj = torch.cat([p.grad.reshape(-1) for p in params])
            self.records_.append((g @ self.g_ref_, g_proj @ self.g_ref_,
                                  self.g_ref_ @ self.g_ref_))


def test_agem_projected_gradient_does_not_conflict_with_the_reference(stream):
    clf = AGEMSpy(memory_size=60, sample_size=20, **SMALL)
    for exp in stream[:3]:
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    assert len(clf.records_) > 10
    assert sum(before < 0 for before, _, _ in clf.records_) > 5
    for before, after, norm in clf.records_:
        assert after >= -1e-5 * norm
        if before >= 0:
            assert after == before


def test_agem_reference_gradient_is_the_mean_loss_gradient_on_old_memories(stream):
    clf = AGEMClassifier(memory_size=40, sample_size=15, **SMALL)
    for exp in stream[:2]:
        clf.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    sample = clf.memory_.sample(15, np.random.default_rng(0), tasks=[0])
    assert (sample.task == 0).all() and sample.y.shape == (15,)
    params = clf._params()
    expected = flat_grad(F.cross_entropy(clf.network_(sample.X), sample.y), params)
    torch.testing.assert_close(clf.reference_gradient(sample), expected)
