"""The one per-sample gradient implementation (skcl._per_sample), its users
(Fisher, MAS, GEM) and the checks at their doors."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from test_kernels import importance_loop
from torch import nn
from torch.nn import functional as F

from skcl import _fisher
from skcl._per_sample import linear_backward, linear_layers
from skcl.base import Batch
from skcl.kernels import fisher_diagonal, importance_diagonal, mas_importance
from skcl.nn import SharedHead
from skcl.strategies.gradient import per_task_gradients

PACKAGE = Path(__file__).parents[1] / "skcl"


def inplace_mlp_head():
    """A 5-8-3 MLP whose hidden ReLU works in place, as a single-head network."""
    torch.manual_seed(0)
    net = SharedHead(lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=True)), n_features=5)
    net.add_units(task=-1, n_new=3, seed=0)
    return net


def per_task_autograd(network, params, batch, bounds):
    network.eval()
    rows = []
    for start, stop in bounds:
        loss = F.cross_entropy(network(batch.X[start:stop]), batch.y[start:stop])
        grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    network.train()
    return torch.stack(rows)


def test_gem_memory_gradients_with_inplace_relu_equal_autograd():
    net = inplace_mlp_head()
    params = list(net.parameters())
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(12, 5, generator=g), torch.randint(0, 3, (12,), generator=g)
    batch = Batch(X, y, None, torch.zeros(12, dtype=torch.long))
    bounds = [(0, 4), (4, 12)]
    got = per_task_gradients(net, params, batch, bounds)
    expected = per_task_autograd(net, params, batch, bounds)
    assert expected.norm() > 0.1
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_fisher_and_mas_with_inplace_relu_equal_the_loop():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))
    X, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    for power, got in ((2, fisher_diagonal(model, X, y)), (1, mas_importance(model, X))):
        ref = importance_loop(model, X, y, power)
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-7)


def test_linear_backward_taps_once_used_linear_layers_and_reports_the_rest():
    torch.manual_seed(4)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(inplace=True), shared, nn.Linear(4, 2))
    model[3].bias.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    layers = linear_layers(model, params)
    assert list(layers) == [shared, model[3]] and layers[model[3]][1] is None
    X = torch.randn(6, 4)
    result = linear_backward(layers, lambda: model(X).pow(2).sum(1), 6, params)
    assert list(result.grads) == [model[3]]
    assert [id(p) for p in result.rest] == [id(shared.weight), id(shared.bias)]
    a, delta = result.grads[model[3]]
    assert a.shape == (6, 4) and delta.shape == (6, 2) and not delta.requires_grad
    torch.testing.assert_close(delta, 2 * model(X).detach())
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        linear_backward(layers, lambda: model(X).sum(), 6, params)


def _module_imports(path: Path) -> set[str]:
    """skcl modules imported at module level (not inside functions) by one file."""
    name = "skcl." + path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(name.split(".")[: -node.level] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {m.removesuffix(".__init__") for m in found if m.startswith("skcl")}


def test_kernel_modules_have_no_import_cycle():
    """Walk the module-level imports of the package: no cycle passes through the kernel
    modules (kernels, _backend, _fisher, _per_sample)."""
    modules = {
        "skcl." + p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", "."): p
        for p in PACKAGE.rglob("*.py")
    }
    modules = {k.removesuffix(".__init__"): v for k, v in modules.items()}
    # The package's __init__ imports its submodules; that is no cycle, so edges to it are
    # left out.
    graph = {
        m: {d for d in _module_imports(p) if d in modules and d not in (m, "skcl")}
        for m, p in modules.items()
    }
    for start in ("skcl.kernels", "skcl._backend", "skcl._fisher", "skcl._per_sample"):
        stack, seen = list(graph[start]), set()
        while stack:
            m = stack.pop()
            assert m != start, f"{start} imports itself through {sorted(seen)}"
            if m not in seen:
                seen.add(m)
                stack.extend(graph[m])


# --------------------------------------------------------------------------- checks at the door


def test_importance_rejects_a_loss_that_is_not_per_sample():
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    X = torch.randn(64, 4)
    with pytest.raises(ValueError, match="one loss per sample"):
        importance_diagonal(model, X, lambda out, _: out.pow(2).sum(1).mean(), batch_size=64)
    with pytest.raises(ValueError, match="one loss per sample"):
        importance_diagonal(model, X, lambda out, _: out.pow(2), batch_size=8)
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten())
    with pytest.raises(ValueError, match="one loss per sample"):
        importance_diagonal(conv, torch.randn(5, 1, 6), lambda out, _: out.sum())


def test_fisher_rejects_inputs_and_outputs_of_the_wrong_shape():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"cannot run on X's samples of shape \(5,\)"):
        fisher_diagonal(model, np.ones((6, 5)), np.zeros(6, dtype=int))
    flat = nn.Sequential(nn.Linear(4, 3), nn.Flatten(0))
    with pytest.raises(ValueError, match=r"logits of shape \(n_samples, n_classes\)"):
        fisher_diagonal(flat, np.ones((6, 4)), np.zeros(6, dtype=int))
    with pytest.raises(ValueError, match="at least 2 axes"):
        mas_importance(flat, np.ones((6, 4)))


def test_accumulation_door_checks_dtype_contiguity_and_shape():
    out = torch.zeros(3, 4)
    delta, a = torch.randn(5, 3), torch.randn(5, 4)
    with pytest.raises(TypeError, match="float32"):
        _fisher._accumulate_outer(delta, a.half(), out, "square")
    with pytest.raises(TypeError, match="float32"):
        _fisher._accumulate_rows(delta.bfloat16(), torch.zeros(3), "square")
    with pytest.raises(ValueError, match="contiguous"):
        _fisher._accumulate_outer(delta, torch.randn(4, 5).T, out, "square")
    with pytest.raises(ValueError, match="shape"):
        _fisher._accumulate_outer(delta, a[:4], out, "square")
    _fisher._accumulate_outer(delta, a, out, "square")
    torch.testing.assert_close(out, (delta**2).T @ a**2)


def test_fisher_under_autocast_converts_activations_to_float32():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    X, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    exact = fisher_diagonal(model, X, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = fisher_diagonal(model, X, y)
    for name, value in exact.items():
        assert mixed[name].dtype == torch.float32
        torch.testing.assert_close(mixed[name], value, rtol=0.1, atol=0.1 * value.abs().max())
