"""The CUDA twins of skcl's kernels equal the same references as the CPU ones.

Skipped cleanly where no CUDA device is usable or skcl._C_cuda was not built.
"""

import numpy as np
import pytest
import torch
from test_kernels import (
    assert_close_rel,
    conv_net,
    gem_problem,
    gem_reference,
    herding_reference,
    importance_loop,
    mlp,
)

from skcl import _fisher, kernels
from skcl.kernels import (
    agem_project,
    fisher_diagonal,
    gem_project,
    herding,
    last_backend,
    mas_importance,
)

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and kernels.backend_info()["cuda"]["available"]),
    reason="needs a CUDA device and skcl._C_cuda",
)

CUDA = torch.device("cuda")


@pytest.mark.parametrize(("n", "d", "m"), [(1, 1, 1), (50, 7, 20), (300, 64, 300), (2000, 130, 50)])
def test_herding_cuda_equals_paper_loop(n, d, m):
    F = np.random.default_rng(n + d).standard_normal((n, d)).astype(np.float32)
    got = herding(torch.from_numpy(F).to(CUDA), m)
    assert got.device.type == "cuda" and got.dtype == torch.int64
    assert last_backend() == "cuda"
    np.testing.assert_array_equal(got.cpu().numpy(), herding_reference(F, m))


def test_herding_cuda_ties_edges_and_errors():
    F = np.repeat(np.random.default_rng(3).standard_normal((6, 5)), 3, axis=0)
    got = herding(torch.from_numpy(F.astype(np.float32)).to(CUDA), 18)
    np.testing.assert_array_equal(got.cpu().numpy(), herding_reference(F, 18))
    assert herding(torch.zeros(5, 3, device=CUDA), 0).shape == (0,)
    np.testing.assert_array_equal(herding(torch.zeros(4, 0, device=CUDA), 2).cpu(), [0, 1])
    offset = torch.randn(41 * 8 + 1, device=CUDA)[1:].view(41, 8)  # rows not 16-byte aligned
    np.testing.assert_array_equal(
        herding(offset, 9).cpu().numpy(), herding_reference(offset.cpu().numpy(), 9)
    )
    bad = torch.ones(4, 3, device=CUDA)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError):
        herding(bad, 2)
    with pytest.raises(ValueError):
        herding(torch.ones(3, 4, device=CUDA).t(), 1)
    with pytest.raises(TypeError):
        herding(torch.ones(3, 4, device=CUDA, dtype=torch.float16), 1)


@pytest.mark.parametrize(("t", "P"), [(1, 50), (5, 1000), (20, 30001), (70, 3000)])
def test_gem_cuda_equals_quadprog(t, P):
    G, g = gem_problem(np.random.default_rng(t), t, P)
    G_dev, g_dev = torch.from_numpy(G).to(CUDA), torch.from_numpy(g).to(CUDA)
    got, v = gem_project(G_dev, g_dev, return_dual=True)
    assert got.device.type == "cuda" and last_backend() == "cuda"
    v_ref, g_ref = gem_reference(G, g)
    assert_close_rel(v, v_ref, 1e-5)
    assert_close_rel(got.cpu().numpy(), g_ref, 1e-5)


def test_gem_cuda_passthrough_and_errors():
    G = torch.rand(4, 30, device=CUDA)
    g = torch.rand(30, device=CUDA)
    out = gem_project(G, g)
    assert out is not g and out.device.type == "cuda" and torch.equal(out, g)
    bad = g.clone()
    bad[3] = float("inf")
    with pytest.raises(ValueError):
        gem_project(G, -bad)
    with pytest.raises(ValueError):
        gem_project(G, torch.rand(31, device=CUDA))
    with pytest.raises(ValueError):
        gem_project(G, g.cpu().cuda()[:29])
    with pytest.raises((ValueError, TypeError)):
        gem_project(G.cpu(), g)


def test_agem_cuda():
    rng = np.random.default_rng(2)
    r = rng.standard_normal(5000).astype(np.float32)
    g = (rng.standard_normal(5000) - r).astype(np.float32)
    got = agem_project(torch.from_numpy(g).to(CUDA), torch.from_numpy(r).to(CUDA))
    assert_close_rel(got.cpu().numpy(), agem_project(g, r), 1e-5)
    h = torch.from_numpy(np.abs(g)).to(CUDA)
    out = agem_project(h, torch.from_numpy(np.abs(r)).to(CUDA))
    assert out is not h and torch.equal(out, h)
    tiny = agem_project(-torch.ones(32, device=CUDA), torch.full((32,), 1e-23, device=CUDA))
    assert tiny.abs().max().item() <= 1e-6


@pytest.mark.parametrize("make", [mlp, conv_net])
@pytest.mark.parametrize("power", [2, 1])
def test_importance_cuda_equals_per_sample_loop(make, power):
    model = make()
    shape = (70, 12) if make is mlp else (70, 2, 6, 6)
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(7))
    y = torch.randint(0, 5, (70,), generator=torch.Generator().manual_seed(8))
    ref = importance_loop(model, X, y, power)
    model = model.to(CUDA)
    if power == 2:
        got = fisher_diagonal(model, X, y, batch_size=32)
    else:
        got = mas_importance(model, X.to(CUDA), batch_size=32)
    assert last_backend() == "cuda"
    for name in ref:
        assert got[name].device.type == "cuda"
        assert_close_rel(got[name].cpu().numpy(), ref[name].numpy(), 1e-5)


@pytest.mark.parametrize(("B", "O", "I"), [(0, 3, 4), (1, 1, 1), (37, 65, 129), (300, 10, 784)])
@pytest.mark.parametrize("mode", ["square", "abs"])
def test_accumulate_cuda(B, O, I, mode):
    D = torch.randn(B, O, device=CUDA)
    A = torch.randn(B, I, device=CUDA)
    C = torch.ones(O, I, device=CUDA)
    out = torch.zeros(O, device=CUDA)
    _fisher._accumulate_outer(D, A, C, mode)
    _fisher._accumulate_rows(D, out, mode)
    op = torch.square if mode == "square" else torch.abs
    ref = 1.0 + op(D.double()).t() @ op(A.double())
    assert_close_rel(C.cpu().numpy(), ref.cpu().numpy(), 1e-5)
    assert_close_rel(out.cpu().numpy(), op(D.double()).sum(0).cpu().numpy(), 1e-5)


def test_accumulate_cuda_rejects_half_and_non_contiguous_operands():
    C = torch.zeros(3, 4, device=CUDA)
    D, A = torch.randn(5, 3, device=CUDA), torch.randn(5, 4, device=CUDA)
    with pytest.raises(TypeError, match="float32"):
        _fisher._accumulate_outer(D, A.half(), C, "square")
    with pytest.raises(ValueError, match="contiguous"):
        _fisher._accumulate_outer(D, torch.randn(4, 5, device=CUDA).T, C, "square")
    with pytest.raises(ValueError, match="cpu"):
        _fisher._accumulate_outer(D, A.cpu(), C, "square")
    with pytest.raises(TypeError, match="float32"):
        _fisher._accumulate_rows(D.half(), torch.zeros(3, device=CUDA), "square")


def test_fisher_cuda_under_autocast_is_close_to_float32():
    torch.manual_seed(5)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    ).to(CUDA)
    X, y = torch.randn(40, 6, device=CUDA), torch.randint(0, 3, (40,), device=CUDA)
    exact = fisher_diagonal(model, X, y)
    with torch.autocast("cuda", dtype=torch.float16):
        mixed = fisher_diagonal(model, X, y)
    for name, value in exact.items():
        assert mixed[name].dtype == torch.float32
        assert_close_rel(mixed[name].cpu().numpy(), value.cpu().numpy(), 0.05)
