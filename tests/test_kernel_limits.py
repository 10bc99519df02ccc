"""Kernel edge cases: herding's parallel path and its takeover, GEM rows of very
different scales, GEM's size limit and scratch memory, A-GEM with tiny references,
and float32 results that are never the caller's input."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from test_kernels import herding_reference

from skcl import _C
from skcl.kernels import agem_project, gem_project

needs_openmp = pytest.mark.skipif(not _C.build_info()["openmp"], reason="built without OpenMP")


def _run_python(code: str, threads: int) -> dict:
    """Run ``code`` in a fresh interpreter with OMP_NUM_THREADS=threads; return the JSON
    object it prints last."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_openmp
def test_herding_parallel_path_with_forced_takeover_equals_the_loop():
    """n * d >= 2^20 on two threads runs the parallel picks; takeover_at hands every row
    to thread 0 after a given pick, as the contention guard does on a busy machine."""
    n, d, m = 2048, 512, 40
    F = np.random.default_rng(11).standard_normal((n, d)).astype(np.float32)
    expected = herding_reference(F, m)
    got = _run_python(
        f"""
        import json, numpy as np
        from skcl import _C
        F = np.random.default_rng(11).standard_normal(({n}, {d})).astype(np.float32)
        picks = {{str(k): _C.herding(F, {m}, takeover_at=k).tolist() for k in (0, 1, 2, 7, 39)}}
        print(json.dumps({{"threads": _C.build_info()["max_threads"], "picks": picks}}))
        """,
        threads=2,
    )
    assert got["threads"] == 2 and n * d >= 2**20
    for k, picks in got["picks"].items():
        assert len(set(picks)) == m, f"duplicate pick with takeover at {k}"
        np.testing.assert_array_equal(picks, expected, err_msg=f"takeover at {k}")
    with pytest.raises(ValueError, match="takeover_at"):
        _C.herding(F[:4], 2, takeover_at=-1)


def _rows_spanning(span: float, t: int = 6, P: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((t, P))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    g = -G.sum(axis=0) + 0.1 * rng.standard_normal(P)
    G *= np.logspace(-np.log10(span) / 2, np.log10(span) / 2, t)[:, None]
    return G.astype(np.float32), g.astype(np.float32)


@pytest.mark.parametrize("span", [1e4, 1e6, 1e8])
@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_gem_keeps_the_constraints_of_small_rows(span, margin):
    G, g = _rows_spanning(span)
    out, v = gem_project(G, g, margin=margin, return_dual=True)
    Gd, od = G.astype(np.float64), out.astype(np.float64)
    cosine = Gd @ od / np.linalg.norm(Gd, axis=1) / np.linalg.norm(od)
    # KKT: G_k g' = lambda_k - eps ||G_k||^2 v_k, so cos >= -eps ||G_k|| v_k / ||g'||.
    bound = 1e-3 * np.linalg.norm(Gd, axis=1) * v / np.linalg.norm(od)
    assert (cosine >= -bound - 1e-5).all() and cosine.min() > -1e-2


def test_gem_zero_rows_constrain_nothing():
    G, g = _rows_spanning(1.0, t=4)
    G[1] = 0.0
    out, v = gem_project(G, g, return_dual=True)
    kept = np.delete(G, 1, axis=0)
    out_kept, v_kept = gem_project(kept, g, return_dual=True)
    np.testing.assert_allclose(out, out_kept, rtol=1e-6, atol=1e-6)
    assert v[1] == 0.5 and np.allclose(np.delete(v, 1), v_kept)


def test_gem_rejects_more_rows_than_its_limit():
    limit = _C.gem_max_tasks
    assert limit == 4096
    G = np.ones((limit + 1, 3), np.float32)
    with pytest.raises(ValueError, match="at most 4096"):
        gem_project(G, -np.ones(3, np.float32))
    with pytest.raises(ValueError, match="at most 4096"):
        _C.gem_gram(G, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="at most 4096"):
        _C.gem_solve_dual(np.eye(limit + 2), 0.5, 1e-3)


@needs_openmp
@pytest.mark.skipif(sys.platform != "linux", reason="reads ru_maxrss in KiB (Linux)")
def test_gem_gram_scratch_memory_is_capped():
    """t = 4096 on two threads: the Gram matrix is 128 MiB and the partial sums may add
    at most gem_scratch_bytes (256 MiB); without the cap they were 16 Gram matrices."""
    got = _run_python(
        """
        import json, resource, numpy as np
        from skcl import _C
        G = np.ones((4096, 64), np.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        gram = _C.gem_gram(G, np.ones(64, np.float32))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"grew_kib": after - before, "corner": float(gram[0, 0]),
                          "cap": _C.gem_scratch_bytes}))
        """,
        threads=2,
    )
    assert got["corner"] == 64.0
    gram_kib = 4097**2 * 8 / 1024
    assert got["grew_kib"] <= gram_kib + got["cap"] / 1024 + 64 * 1024


def test_agem_with_a_tiny_or_huge_reference_projects_exactly():
    for scale in (1e-23, 1e-40, 1e25):
        got = agem_project(-np.ones(32, np.float32), np.full(32, scale, np.float32))
        assert np.isfinite(got).all() and np.abs(got).max() <= 1e-6, scale
    g = np.array([-1.0, 2.0, 0.5], np.float32)
    r = np.array([3e-30, -1e-30, 0.0], np.float32)
    rd = r.astype(np.float64) * 1e30
    expected = g - (g @ rd) / (rd @ rd) * rd
    np.testing.assert_allclose(agem_project(g, r), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        agem_project(torch.from_numpy(g), torch.from_numpy(r)).numpy(), expected, rtol=1e-6
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_projections_return_new_float32_arrays(dtype):
    g = np.array([1, 2, 3], dtype=dtype)
    G = np.array([[1, 0, 0]], dtype=dtype)
    for out in (gem_project(G, g), agem_project(g, G[0])):
        assert out is not g and out.dtype == np.float32 and not np.shares_memory(out, g)
        np.testing.assert_array_equal(out, g.astype(np.float32))
