"""Exactness and robustness of skcl's compiled CPU kernels (skcl.kernels).

Each kernel is compared with the plain definition it replaces: herding with a
numpy loop of the iCaRL rule, GEM with quadprog on the same dual, A-GEM with
its closed form, the Fisher and MAS importances with a per-sample autograd
loop. Hypothesis throws odd inputs at every entry point: the answer is a
correct result or a clean ValueError/TypeError, never a crash.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import quadprog
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from skcl import _C, _backend, kernels
from skcl.kernels import (
    agem_project,
    fisher_diagonal,
    gem_project,
    herding,
    importance_diagonal,
    last_backend,
    mas_importance,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- references


def herding_reference(F, m):
    """The iCaRL rule, literally: argmin_i ||mu - (S + f_i) / k|| over rows not picked."""
    F = np.asarray(F, dtype=np.float32).astype(np.float64)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    mu = F.mean(axis=0)
    S = np.zeros(F.shape[1])
    picked = []
    for k in range(1, m + 1):
        dist = np.linalg.norm(mu - (S + F) / k, axis=1)
        dist[picked] = np.inf
        i = int(np.argmin(dist))
        picked.append(i)
        S += F[i]
    return np.array(picked, dtype=np.int64)


def assert_herding_rule(F, picks):
    """Each pick is a row not picked before whose distance ||mu - (S + f_i) / k|| is the
    smallest up to rounding (rows tied in exact arithmetic may be ranked either way by
    rounding, so the literal loop is no oracle for them)."""
    F = np.asarray(F, dtype=np.float32).astype(np.float64)
    if len(picks) == 0:
        return
    mu, S, seen = F.mean(axis=0), np.zeros(F.shape[1]), set()
    for k, i in enumerate(picks, start=1):
        assert i not in seen
        dist = np.linalg.norm(mu - (S + F) / k, axis=1)
        dist[list(seen)] = np.inf
        assert dist[i] <= dist.min() + 1e-9 * (1.0 + dist.min())
        seen.add(i)
        S += F[i]


def gem_reference(G, g, margin=0.5, eps=1e-3):
    """GEM's dual as the paper's code poses it, with the ridge relative to each row
    (eps ||G_k||^2 instead of eps), solved by quadprog in float64."""
    Gd = np.asarray(G, dtype=np.float64)
    gd = np.asarray(g, dtype=np.float64)
    Q = Gd @ Gd.T
    Q = Q + eps * np.diag(np.diag(Q))
    t = Gd.shape[0]
    v = quadprog.solve_qp(Q, -(Gd @ gd), np.eye(t), np.full(t, margin))[0]
    return v, Gd.T @ v + gd


def gem_problem(rng, t, P):
    """Correlated memory gradients and a g opposed to a third of them, so that
    some dual variables sit at the margin and others above it."""
    G = 0.3 * rng.standard_normal(P) + rng.standard_normal((t, P))
    g = -2.0 * G[: max(1, t // 3)].sum(axis=0) + rng.standard_normal(P)
    return G.astype(np.float32), g.astype(np.float32)


def importance_loop(model, X, y, power):
    """Per-sample autograd: one backward per sample, |grad|^power averaged."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # single-sample ops are too small to share out
    try:
        return _importance_loop(model, X, y, power)
    finally:
        torch.set_num_threads(threads)


def _importance_loop(model, X, y, power):
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters() if p.requires_grad}
    model.eval()
    for i in range(len(X)):
        model.zero_grad()
        out = model(X[i : i + 1])
        if power == 2:
            loss = nn.functional.cross_entropy(out, y[i : i + 1])
        else:
            loss = out.pow(2).sum()
        loss.backward()
        for n in acc:
            acc[n] += model.get_parameter(n).grad.abs() ** power
    return {n: a / len(X) for n, a in acc.items()}


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(12, 16), nn.ReLU(inplace=True), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 5)
    )


def conv_net():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),
    )


def assert_close_rel(a, b, rel):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(b).max(initial=0.0), 1e-30)
    assert np.abs(a - b).max(initial=0.0) <= rel * scale


# --------------------------------------------------------------------------- herding


@pytest.mark.parametrize(("n", "d", "m"), [(1, 1, 1), (50, 7, 20), (120, 33, 120), (400, 64, 60)])
def test_herding_equals_paper_loop(n, d, m):
    F = np.random.default_rng(n + d).standard_normal((n, d)).astype(np.float32)
    np.testing.assert_array_equal(herding(F, m), herding_reference(F, m))
    assert last_backend() == "cpu"


def test_herding_ties_go_to_lowest_index():
    F = np.repeat(np.random.default_rng(3).standard_normal((6, 5)), 3, axis=0)
    got = herding(F, 18)
    np.testing.assert_array_equal(got, herding_reference(F, 18))
    assert sorted(got) == list(range(18))


def test_herding_torch_and_float64_inputs():
    F = np.random.default_rng(4).standard_normal((40, 9))
    got = herding(torch.from_numpy(F.astype(np.float32)), 10)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), herding(F, 10))
    assert herding(F, 0).shape == (0,)
    assert herding(np.zeros((0, 3)), 0).shape == (0,)
    np.testing.assert_array_equal(herding(np.zeros((4, 0)), 3), [0, 1, 2])


@pytest.mark.parametrize(
    ("features", "m", "error"),
    [
        (np.ones((3, 2)), 4, ValueError),
        (np.ones((3, 2)), -1, ValueError),
        (np.ones((3, 2)), 1.0, TypeError),
        (np.ones((3, 2)), True, TypeError),
        (np.ones(3), 1, ValueError),
        (np.ones((2, 2, 2)), 1, ValueError),
        (np.array([[1.0, np.nan]]), 1, ValueError),
        (np.array([[np.inf, 0.0]]), 1, ValueError),
        (np.array([[1e300, 0.0]]), 1, ValueError),
        (np.ones((3, 2), dtype=complex), 1, TypeError),
        (np.array([["a", "b"]]), 1, TypeError),
        (torch.ones(3, 2, dtype=torch.float64), 1, TypeError),
        (torch.ones(2, 3).t(), 1, ValueError),
    ],
)
def test_herding_rejects_bad_input(features, m, error):
    with pytest.raises(error):
        herding(features, m)


@FAST
@given(
    F=hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12),
        elements=st.one_of(st.floats(-1e3, 1e3), st.sampled_from([np.nan, np.inf, 0.0, 1.0])),
    ),
    m=st.integers(-1, 14),
)
def test_herding_hypothesis(F, m):
    F32 = F.astype(np.float32)
    if m < 0 or m > F.shape[0] or (m > 0 and not np.isfinite(F32).all()):
        with pytest.raises(ValueError):
            herding(F, m)
        return
    picks = herding(F, m)
    assert picks.shape == (m,) and picks.dtype == np.int64
    assert_herding_rule(F32, picks)


@FAST
@given(data=st.data(), n=st.integers(1, 30), d=st.integers(1, 20))
def test_herding_hypothesis_noncontiguous(data, n, d):
    F = np.random.default_rng(n * 31 + d).standard_normal((d, n)).astype(np.float32).T
    m = data.draw(st.integers(0, n))
    np.testing.assert_array_equal(herding(F, m), herding_reference(F, m))


# --------------------------------------------------------------------------- GEM / A-GEM


@pytest.mark.parametrize(("t", "P"), [(1, 50), (5, 1000), (20, 3001), (60, 500), (200, 4000)])
def test_gem_equals_quadprog(t, P):
    G, g = gem_problem(np.random.default_rng(t), t, P)
    got, v = gem_project(G, g, return_dual=True)
    v_ref, g_ref = gem_reference(G, g)
    assert (v > 0.5 + 1e-3).any(), "the test problem should leave some constraints inactive"
    assert_close_rel(v, v_ref, 1e-5)
    assert_close_rel(got, g_ref, 1e-5)
    assert got.dtype == np.float32


@pytest.mark.parametrize("t", [1, 3, 20])
def test_gem_constraints_hold_after_projection(t):
    G, g = gem_problem(np.random.default_rng(10 + t), t, 800)
    tol = 1e-6 * np.linalg.norm(g) * np.linalg.norm(G, axis=1)
    exact = gem_project(G, g, margin=0.0, eps=0.0)
    assert (G.astype(np.float64) @ exact >= -tol).all()
    # With a ridge the KKT conditions give G_k g' = lambda_k - eps ||G_k||^2 v_k.
    got, v = gem_project(G, g, return_dual=True)
    norms2 = np.linalg.norm(G.astype(np.float64), axis=1) ** 2
    assert (G.astype(np.float64) @ got >= -1e-3 * norms2 * v - tol).all()


def test_gem_no_violation_returns_a_float32_copy_of_g():
    G = np.abs(np.random.default_rng(0).standard_normal((4, 30))).astype(np.float32)
    g = np.abs(np.random.default_rng(1).standard_normal(30)).astype(np.float32)
    out, v = gem_project(G, g, return_dual=True)
    assert out is not g and v is None
    np.testing.assert_array_equal(out, g)
    assert gem_project(np.zeros((0, 30), np.float32), g) is not g
    out64 = gem_project(G.astype(np.float64), g.astype(np.float64))
    assert out64.dtype == np.float32
    np.testing.assert_array_equal(out64, g)
    g_t = torch.from_numpy(g)
    out_t = gem_project(torch.from_numpy(G), g_t)
    assert out_t is not g_t and out_t.data_ptr() != g_t.data_ptr()
    assert torch.equal(out_t, g_t)


def test_gem_torch_input_matches_numpy():
    G, g = gem_problem(np.random.default_rng(5), 6, 700)
    got = gem_project(torch.from_numpy(G), torch.from_numpy(g))
    assert isinstance(got, torch.Tensor) and last_backend() == "cpu"
    np.testing.assert_array_equal(got.numpy(), gem_project(G, g))


@pytest.mark.parametrize(
    ("G", "g", "kwargs", "error"),
    [
        (np.ones((2, 3)), np.ones(4), {}, ValueError),
        (np.ones(3), np.ones(3), {}, ValueError),
        (np.ones((2, 3)), np.ones((3, 1)), {}, ValueError),
        (np.array([[np.nan, 1.0]]), -np.ones(2), {}, ValueError),
        (np.ones((1, 2)), np.array([np.inf, 0.0]), {}, ValueError),
        (np.ones((1, 2)), -np.ones(2), {"margin": -1.0}, ValueError),
        (np.ones((1, 2)), -np.ones(2), {"eps": float("nan")}, ValueError),
        (np.ones((1, 2)), -np.ones(2), {"margin": "big"}, TypeError),
        (np.ones((1, 2)), torch.ones(2), {}, TypeError),
        (torch.ones(1, 2), torch.ones(2, dtype=torch.float64), {}, TypeError),
        (torch.ones(2, 4)[:, ::2], torch.ones(2), {}, ValueError),
    ],
)
def test_gem_rejects_bad_input(G, g, kwargs, error):
    with pytest.raises(error):
        gem_project(G, g, **kwargs)


@FAST
@given(
    t=st.integers(0, 6),
    P=st.integers(0, 40),
    seed=st.integers(0, 2**16),
    poison=st.sampled_from([None, np.nan, np.inf, -np.inf]),
    dtype=st.sampled_from([np.float32, np.float64]),
    strided=st.booleans(),
)
def test_gem_hypothesis(t, P, seed, poison, dtype, strided):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((P, t)).astype(dtype).T if strided else rng.standard_normal((t, P))
    G = G.astype(dtype, copy=False)
    g = (rng.standard_normal(P) - G.sum(axis=0)).astype(dtype)
    if poison is not None and P > 0:
        g[rng.integers(P)] = poison
        with pytest.raises(ValueError):
            gem_project(G, g)
        return
    got, v = gem_project(G, g, return_dual=True)
    assert got is not g and got.dtype == np.float32
    if v is None:
        np.testing.assert_array_equal(got, g.astype(np.float32))
        return
    # KKT of the dual in float64: r = Q v + G g >= 0, r_k = 0 where v_k > margin.
    Gd, gd = G.astype(np.float32).astype(np.float64), g.astype(np.float32).astype(np.float64)
    Q = Gd @ Gd.T
    Q = Q + 1e-3 * np.diag(np.diag(Q))
    r = Q @ v + Gd @ gd
    tol = 1e-5 * (np.abs(Q).max() * np.abs(v).max() + np.abs(Gd @ gd).max())
    assert (v >= 0.5 - 1e-12).all() and (r >= -tol).all()
    assert (np.abs(r[v > 0.5 + 1e-9]) <= tol).all()
    if np.linalg.cond(Q) < 1e3:
        v_ref, g_ref = gem_reference(Gd, gd)
        assert_close_rel(v, v_ref, 1e-5)
        # g' = G^T v + g may cancel: compare with the size of its terms.
        terms = np.abs(gd) + np.abs(Gd).T @ np.abs(v)
        assert (np.abs(got - g_ref) <= 1e-5 * terms.max(initial=0.0)).all()


def test_agem_projection_and_passthrough():
    rng = np.random.default_rng(2)
    g_ref = rng.standard_normal(500).astype(np.float32)
    g = (rng.standard_normal(500) - g_ref).astype(np.float32)
    got = agem_project(g, g_ref)
    gd, rd = g.astype(np.float64), g_ref.astype(np.float64)
    assert_close_rel(got, gd - (gd @ rd) / (rd @ rd) * rd, 1e-6)
    assert got.astype(np.float64) @ rd >= -1e-6 * np.linalg.norm(gd) * np.linalg.norm(rd)
    h = np.abs(g)
    for ref in (np.abs(g_ref), np.zeros(500, np.float32)):
        out_h = agem_project(h, ref)
        assert out_h is not h
        np.testing.assert_array_equal(out_h, h)
    out64 = agem_project(h.astype(np.float64), np.abs(g_ref))
    assert out64.dtype == np.float32 and np.array_equal(out64, h)
    out = agem_project(torch.from_numpy(g), torch.from_numpy(g_ref))
    np.testing.assert_array_equal(out.numpy(), got)


@FAST
@given(
    g=hnp.arrays(np.float64, st.integers(0, 30), elements=st.floats(-1e6, 1e6)),
    seed=st.integers(0, 100),
    poison=st.booleans(),
)
def test_agem_hypothesis(g, seed, poison):
    g_ref = np.random.default_rng(seed).standard_normal(g.shape[0])
    if poison and g.shape[0]:
        g_ref[0] = np.nan
        with pytest.raises(ValueError):
            agem_project(g, g_ref)
        return
    got = np.asarray(agem_project(g, g_ref)).astype(np.float32).astype(np.float64)
    g32, r32 = g.astype(np.float32).astype(np.float64), g_ref.astype(np.float32).astype(np.float64)
    assert got @ r32 >= -1e-5 * np.linalg.norm(g32) * np.linalg.norm(r32)
    with pytest.raises(ValueError):
        agem_project(g, np.ones(g.shape[0] + 1))


# --------------------------------------------------------------------------- Fisher / MAS


@pytest.mark.parametrize("make", [mlp, conv_net])
@pytest.mark.parametrize("power", [2, 1])
def test_importance_equals_per_sample_loop(make, power):
    model = make()
    shape = (70, 12) if make is mlp else (70, 2, 6, 6)
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
    y = torch.randint(0, 5, (70,), generator=torch.Generator().manual_seed(8))
    if power == 2:
        got = fisher_diagonal(model, X, y, batch_size=32)
    else:
        got = mas_importance(model, X.numpy(), batch_size=32)
    ref = importance_loop(model, X, y, power)
    assert got.keys() == ref.keys()
    for name in ref:
        assert got[name].shape == ref[name].shape
        assert_close_rel(got[name].numpy(), ref[name].numpy(), 1e-5)
    assert last_backend() == "cpu"


def test_importance_shared_and_frozen_layers():
    torch.manual_seed(2)
    shared = nn.Linear(6, 6)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared, self.head = shared, nn.Linear(6, 3)
            self.head.bias.requires_grad_(False)

        def forward(self, x):
            return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))

    model = Twice().train()
    X, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    got = fisher_diagonal(model, X, y, batch_size=7)
    assert "head.bias" not in got and model.training
    ref = importance_loop(model, X, y, 2)
    for name, value in got.items():
        assert_close_rel(value.numpy(), ref[name].numpy(), 1e-5)


def test_importance_custom_loss_and_errors():
    model = mlp()
    X = np.random.default_rng(0).standard_normal((9, 12))
    got = importance_diagonal(model, X, lambda out, _: out[:, 0], power=1, batch_size=4)
    assert set(got) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ValueError):
        fisher_diagonal(model, X, np.zeros(8, dtype=int))
    with pytest.raises(ValueError):
        fisher_diagonal(model, np.full((3, 12), np.nan), np.zeros(3, dtype=int))
    with pytest.raises(ValueError):
        fisher_diagonal(model, X[:0], np.zeros(0, dtype=int))
    with pytest.raises(ValueError):
        fisher_diagonal(model, X, None)
    with pytest.raises(TypeError):
        fisher_diagonal(model, X, np.full(9, 0.5))
    with pytest.raises(ValueError):
        importance_diagonal(model, X, lambda out, _: out[:, 0], power=3)
    with pytest.raises(ValueError):
        mas_importance(model, X, batch_size=0)
    with pytest.raises(TypeError):
        mas_importance(model.double(), X)
    with pytest.raises(ValueError):
        mas_importance(nn.Linear(1, 1), np.array([[1e30]]))
    assert importance_diagonal(nn.ReLU(), X, lambda out, _: out.sum(1)) == {}


@FAST
@given(
    N=st.integers(0, 9),
    labels=st.lists(st.integers(-1, 4), min_size=9, max_size=9),
    poison=st.sampled_from([None, np.nan, np.inf]),
    strided=st.booleans(),
    batch_size=st.integers(1, 5),
)
def test_fisher_hypothesis(N, labels, poison, strided, batch_size):
    torch.manual_seed(N)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    X = np.random.default_rng(N).standard_normal((3, N)).T if strided else np.ones((N, 3))
    y = np.array(labels[:N])
    if poison is not None and N:
        X = X.copy()
        X[-1, 1] = poison
    if N == 0 or poison is not None or (y < 0).any() or (y >= 3).any():
        with pytest.raises(ValueError):
            fisher_diagonal(model, X, y, batch_size=batch_size)
        return
    got = fisher_diagonal(model, X, y, batch_size=batch_size)
    ref = importance_loop(model, torch.from_numpy(X).float(), torch.from_numpy(y), 2)
    for name in ref:
        assert_close_rel(got[name].numpy(), ref[name].numpy(), 1e-5)


@FAST
@given(
    B=st.integers(0, 40),
    O=st.integers(1, 30),
    I=st.integers(1, 70),
    mode=st.sampled_from(["square", "abs"]),
    strided=st.booleans(),
)
def test_accumulate_kernels_hypothesis(B, O, I, mode, strided):
    rng = np.random.default_rng(B * 1000 + O * 10 + I)
    D = rng.standard_normal((B, O)).astype(np.float32)
    A = rng.standard_normal((I, B)).T if strided else rng.standard_normal((B, I))
    C = np.ones((O, I), np.float32)
    _C.accumulate_outer(D, A, C, mode)
    op = np.square if mode == "square" else np.abs
    assert_close_rel(C, 1.0 + op(D.astype(np.float64)).T @ op(A.astype(np.float32)), 1e-5)
    out = np.zeros(O, np.float32)
    _C.accumulate_rows(D, out, mode)
    assert_close_rel(out, op(D.astype(np.float64)).sum(axis=0), 1e-5)


@pytest.mark.parametrize(
    ("out", "error"),
    [
        (np.zeros((3, 4), np.float64), TypeError),
        (np.zeros((4, 3), np.float32).T, ValueError),
        (np.zeros((3, 5), np.float32), ValueError),
        (np.zeros(12, np.float32), ValueError),
    ],
)
def test_accumulate_rejects_bad_output(out, error):
    with pytest.raises(error):
        _C.accumulate_outer(np.ones((2, 3), np.float32), np.ones((2, 4), np.float32), out, "square")


def test_accumulate_rejects_readonly_mode_and_shape():
    out = np.zeros((3, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError):
        _C.accumulate_outer(np.ones((2, 3), np.float32), np.ones((2, 4), np.float32), out, "abs")
    with pytest.raises(ValueError):
        _C.accumulate_rows(np.ones((2, 3), np.float32), np.zeros(3, np.float32), "cube")
    with pytest.raises(ValueError):
        _C.accumulate_outer(
            np.ones((2, 3), np.float32),
            np.ones((5, 4), np.float32),
            np.zeros((3, 4), np.float32),
            "abs",
        )


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: _C.herding(np.ones(3, np.float32), 1), ValueError),
        (lambda: _C.herding(np.ones((3, 2), np.float32), 4), ValueError),
        (lambda: _C.herding(np.ones((3, 2), np.float32), 2**70), TypeError),
        (lambda: _C.gem_gram(np.ones((2, 3), np.float32), np.ones(4, np.float32)), ValueError),
        (
            lambda: _C.gem_apply(np.ones((2, 3), np.float32), np.ones(3, np.float32), np.ones(3)),
            ValueError,
        ),
        (lambda: _C.gem_solve_dual(np.full((2, 2), np.nan), 0.5, 1e-3), ValueError),
        (lambda: _C.gem_solve_dual(np.ones((2, 3)), 0.5, 1e-3), ValueError),
        (lambda: _C.gem_solve_dual(np.eye(2), -1.0, 1e-3), ValueError),
        (lambda: _C.gem_solve_dual(np.array([[0.0, 0.0], [0.0, 1.0]]), 0.5, 0.0), None),
    ],
)
def test_bindings_reject_bad_arguments(call, error):
    if error is None:
        np.testing.assert_array_equal(call(), [0.5])
        return
    with pytest.raises(error):
        call()


# --------------------------------------------------------------------------- backends, CUDA build


def test_backend_reporting_and_missing_cuda(monkeypatch):
    info = kernels.backend_info()
    assert info["cpu"]["compiled"] and "available" in info["cuda"]
    monkeypatch.setattr(_backend, "_C_cuda", None)
    assert not kernels.backend_info()["cuda"]["compiled"]
    with pytest.raises(RuntimeError, match="skcl._C_cuda"):
        _backend.cuda_module()


CUDA_SOURCES = sorted((Path(__file__).parents[1] / "csrc" / "cuda").glob("*.cu"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_sources_compile(tmp_path):
    """Every .cu file compiles (to PTX, warnings as errors); the files compile in parallel."""
    csrc = Path(__file__).parents[1] / "csrc"
    flags = ["-std=c++17", "-I", str(csrc), "-arch=compute_80", "-code=compute_80"]
    jobs = [
        subprocess.Popen(
            [
                "nvcc",
                "-c",
                str(src),
                "-o",
                str(tmp_path / (src.stem + ".o")),
                *flags,
                "-Werror",
                "all-warnings",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for src in CUDA_SOURCES
    ]
    for src, job in zip(CUDA_SOURCES, jobs, strict=True):
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, f"{src.name}: {err}"
    assert len(list(tmp_path.glob("*.o"))) == len(CUDA_SOURCES) > 0
