"""Speed of skcl's compiled kernels against their references and their floors.

Each kernel is timed against the reference code it replaces and against a
floor (the memory traffic or arithmetic it cannot avoid), all in the same run
and round-robin (every repeat times every method once, so drifts in machine
load hit all alike); the figure is the median of the repeats (methods
under 0.2 s are timed three times per repeat).

- GEM projection (t memory gradients of P parameters): the paper's path
  (float64 numpy G G^T and G g, quadprog, numpy projection), a plain torch
  version (one mm for the Gram matrix, quadprog on t x t, one addmv), and the
  floor of reading G twice (two torch mv's over G).
- Herding (n samples, d features, m picks): the paper's rule as a numpy loop,
  an incremental numpy loop (running F mu and F S), and the floor of one
  product F f per pick (m torch mv's).
- Fisher diagonal (MLP 784-256-256-10, N samples, batches of 256): a
  per-sample autograd loop, torch.func vmap of grad, the output-gradient hook
  method with torch matmuls on squared copies, and the floor of one forward
  and backward over the same batches.

Usage::

    python benchmarks/bench_kernels.py [--quick] [--device auto|cpu|cuda] [--repeats 5]

Writes ``benchmarks/results/kernels_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

# numpy's OpenBLAS, which the reference paths use, keeps its worker threads
# spinning for about 2**28 cycles after each call; in a round robin they would
# take a core from whichever method is timed next. 2**4 cycles lets them sleep
# at once. It must be set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402
import quadprog
import torch
from torch import nn
from torch.nn import functional as F

from skcl import kernels

RESULTS = Path(__file__).parent / "results"
GOALS = {
    "cpu": {
        "gem": "t=20, P=1e6: >= 20x faster than the paper path, <= 1.5x the floor",
        "herding": "n=5000, d=512, m=200: >= 30x faster than the paper loop",
        "fisher": "N=10000: >= 30x faster than the per-sample loop, <= 1.3x the floor",
    },
    "cuda": {
        "gem": "t=20, P=1e6: <= 1.5x the floor",
        "herding": "n=50000, d=2048: <= 1.5x the floor",
        "fisher": "N=10000: <= 1.5x the floor",
    },
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def time_round_robin(methods: dict[str, Callable], repeats: int, device) -> dict[str, dict]:
    """Median seconds of each method, timing every method in turn in each round.

    Each method first runs once to warm up (lazy imports, allocator, caches); a
    warm-up that took over a second is steady state already and counts as a
    repeat. A method whose warm-up took under 0.2 s is timed three times per
    round: the fast methods (skcl and the floor, whose ratio is a goal) get
    three times the samples against the jitter of a shared machine.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    per_round: dict[str, int] = {}
    for name, fn in methods.items():
        elapsed = _timed(fn, device)
        per_round[name] = 3 if elapsed < 0.2 else 1
        if elapsed > 1.0:
            times[name].append(elapsed)
    for _ in range(repeats):
        for name, fn in methods.items():
            for _ in range(per_round[name]):
                if len(times[name]) < repeats * per_round[name]:
                    times[name].append(_timed(fn, device))
    return {name: {"median_s": float(np.median(ts)), "times_s": ts} for name, ts in times.items()}


# --------------------------------------------------------------------------- GEM


def gem_paper(
    G: torch.Tensor, g: torch.Tensor, margin=0.5, eps=1e-3, row_ridge=False
) -> torch.Tensor:
    """The paper's project2cone2: float64 numpy on the CPU, quadprog. With
    ``row_ridge`` the ridge is eps ||G_k||^2 per row, the dual skcl solves."""
    memories = G.cpu().double().numpy()
    gradient = g.cpu().double().numpy()
    t = memories.shape[0]
    P = memories @ memories.T
    ridge = np.diag(np.diag(P)) if row_ridge else np.eye(t)
    P = 0.5 * (P + P.T) + ridge * eps
    q = -(memories @ gradient)
    v = quadprog.solve_qp(P, q, np.eye(t), np.zeros(t) + margin)[0]
    return torch.from_numpy(v @ memories + gradient).float().to(g.device)


def gem_torch(G: torch.Tensor, g: torch.Tensor, margin=0.5, eps=1e-3) -> torch.Tensor:
    """Plain torch: one mm for the Gram matrix, quadprog on t x t, one addmv."""
    gram = torch.mm(G, G.t()).double().cpu().numpy()
    Gg = torch.mv(G, g).double().cpu().numpy()
    t = gram.shape[0]
    if not (Gg < 0).any():
        return g
    v = quadprog.solve_qp(gram + eps * np.eye(t), -Gg, np.eye(t), np.full(t, margin))[0]
    return torch.addmv(g, G.t(), torch.from_numpy(v).float().to(g.device))


def bench_gem(device, ts, Ps, repeats, log) -> list[dict]:
    rows = []
    for P in Ps:
        for t in ts:
            gen = torch.Generator(device=device).manual_seed(t)
            G = torch.randn(t, P, generator=gen, device=device)
            g = torch.randn(P, generator=gen, device=device) - 2.0 * G[0]
            v = torch.randn(t, generator=gen, device=device)
            methods = {
                "skcl": lambda G=G, g=g: kernels.gem_project(G, g),
                "paper": lambda G=G, g=g: gem_paper(G, g),
                "torch": lambda G=G, g=g: gem_torch(G, g),
                "floor": lambda G=G, g=g, v=v: (torch.mv(G, g), torch.mv(G.t(), v)),
            }
            res = time_round_robin(methods, repeats, device)
            ours = kernels.gem_project(G, g).cpu().double()
            same_dual = gem_paper(G, g, row_ridge=True).cpu().double()
            err = float((ours - same_dual).norm() / ours.norm())
            rows.append(
                {
                    "t": t,
                    "P": P,
                    "methods": res,
                    "rel_diff_vs_quadprog_same_dual": err,
                    "backend": kernels.last_backend(),
                }
            )
            log(f"gem t={t:<3d} P={P:.0e}: " + _summary(res, ("paper", "torch")))
            del G, g
    return rows


# --------------------------------------------------------------------------- herding


def herding_paper_loop(F_np: np.ndarray, m: int) -> np.ndarray:
    """argmin_i ||mu - (S + f_i) / k|| over rows not picked, evaluated literally."""
    mu = F_np.mean(axis=0)
    S = np.zeros_like(mu)
    picked = np.zeros(F_np.shape[0], dtype=bool)
    out = np.empty(m, dtype=np.int64)
    for k in range(1, m + 1):
        dist = np.linalg.norm(mu - (S + F_np) / k, axis=1)
        dist[picked] = np.inf
        i = int(np.argmin(dist))
        out[k - 1], picked[i] = i, True
        S += F_np[i]
    return out


def herding_incremental(F_np: np.ndarray, m: int) -> np.ndarray:
    """The same rule with running F mu, ||f_i||^2 and F S (one F f_j per pick)."""
    mu = F_np.mean(axis=0)
    f_mu = F_np @ mu
    norm2 = np.einsum("ij,ij->i", F_np, F_np)
    s_f = np.zeros(F_np.shape[0], dtype=F_np.dtype)
    out = np.empty(m, dtype=np.int64)
    for k in range(1, m + 1):
        score = norm2 - 2 * k * f_mu + 2 * s_f
        score[out[: k - 1]] = np.inf
        j = int(np.argmin(score))
        out[k - 1] = j
        s_f += F_np @ F_np[j]
    return out


def bench_herding(device, ns, ds, ms, repeats, budget_s, log) -> list[dict]:
    rows = []
    for n in ns:
        for d in ds:
            gen = torch.Generator(device=device).manual_seed(n + d)
            Ft = torch.randn(n, d, generator=gen, device=device)
            F_np = Ft.cpu().numpy()
            for m in ms:
                if m > n:
                    continue
                row = {"n": n, "d": d, "m": m}
                per_pick = _per_pick_seconds(partial(herding_floor, Ft), m)
                if per_pick * m * 3 * (repeats + 1) > budget_s:
                    row["skipped"] = f"over the {budget_s:.0f} s budget of a grid point"
                    rows.append(row)
                    log(f"herding n={n} d={d} m={m}: skipped ({row['skipped']})")
                    continue
                methods = {
                    "skcl": partial(kernels.herding, Ft, m),
                    "incremental": partial(herding_incremental, F_np, m),
                    "floor": partial(herding_floor, Ft, m),
                }
                paper_s = _per_pick_seconds(partial(herding_paper_loop, F_np), m) * m
                if paper_s <= 20.0:
                    methods["paper"] = partial(herding_paper_loop, F_np, m)
                else:
                    row["paper_skipped"] = f"paper loop estimated at {paper_s:.0f} s per run"
                row["methods"] = time_round_robin(methods, repeats, device)
                ours = kernels.herding(Ft, m).cpu().numpy()
                row["agrees_with_incremental"] = bool(
                    np.array_equal(ours, herding_incremental(F_np, m))
                )
                row["backend"] = kernels.last_backend()
                rows.append(row)
                log(
                    f"herding n={n:<5d} d={d:<4d} m={m:<4d}: "
                    + _summary(row["methods"], ("paper", "incremental"))
                )
    return rows


def herding_floor(Ft: torch.Tensor, m: int) -> None:
    """One product F f per pick, nothing else."""
    for j in range(m):
        torch.mv(Ft, Ft[j % Ft.shape[0]])


def _per_pick_seconds(run: Callable[[int], object], m: int) -> float:
    k = max(1, min(m, 3))
    start = time.perf_counter()
    run(k)
    return (time.perf_counter() - start) / k


# --------------------------------------------------------------------------- Fisher


def make_mlp(device) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    ).to(device)


def fisher_loop(model, X, y) -> dict:
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(X.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(X[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad**2
    return {n: a / X.shape[0] for n, a in acc.items()}


def fisher_vmap(model, X, y, batch=256) -> dict:
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, x, t):
        return F.cross_entropy(functional_call(model, p, (x.unsqueeze(0),)), t.unsqueeze(0))

    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in range(0, X.shape[0], batch):
        grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, X[s : s + batch], y[s : s + batch])
        for n, g in grads.items():
            acc[n] += (g**2).sum(0)
    return {n: a / X.shape[0] for n, a in acc.items()}


def fisher_hook_matmul(model, X, y, batch=256) -> dict:
    """Output-gradient hooks, then torch matmuls on squared copies (no compiled kernel)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    acc = {m: (torch.zeros_like(m.weight), torch.zeros_like(m.bias)) for m in layers}
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0], o))) for m in layers]
    for s in range(0, X.shape[0], batch):
        seen.clear()
        loss = F.cross_entropy(model(X[s : s + batch]), y[s : s + batch], reduction="sum")
        deltas = torch.autograd.grad(loss, [o for _, _, o in seen])
        for (m, a, _), delta in zip(seen, deltas, strict=True):
            acc[m][0].addmm_(delta.square().t(), a.detach().square())
            acc[m][1].add_(delta.square().sum(0))
    for h in handles:
        h.remove()
    return acc


def fisher_floor(model, X, y, batch=256) -> None:
    for s in range(0, X.shape[0], batch):
        model.zero_grad()
        F.cross_entropy(model(X[s : s + batch]), y[s : s + batch], reduction="sum").backward()


def bench_fisher(device, Ns, repeats, log) -> list[dict]:
    rows = []
    model = make_mlp(device)
    for N in Ns:
        gen = torch.Generator(device=device).manual_seed(N)
        X = torch.randn(N, 784, generator=gen, device=device)
        y = torch.randint(0, 10, (N,), generator=gen, device=device)
        methods = {
            "skcl": lambda X=X, y=y: kernels.fisher_diagonal(model, X, y, batch_size=256),
            "per_sample_loop": lambda X=X, y=y: fisher_loop(model, X, y),
            "vmap": lambda X=X, y=y: fisher_vmap(model, X, y),
            "hook_torch_matmul": lambda X=X, y=y: fisher_hook_matmul(model, X, y),
            "floor": lambda X=X, y=y: fisher_floor(model, X, y),
        }
        res = time_round_robin(methods, repeats, device)
        ours = kernels.fisher_diagonal(model, X, y)
        ref = fisher_vmap(model, X, y)
        err = max(float((ours[n] - ref[n]).abs().max() / ref[n].abs().max()) for n in ref)
        rows.append(
            {"N": N, "methods": res, "max_rel_diff_vs_vmap": err, "backend": kernels.last_backend()}
        )
        log(f"fisher N={N}: " + _summary(res, ("per_sample_loop", "vmap", "hook_torch_matmul")))
    return rows


# --------------------------------------------------------------------------- report


def _summary(res: dict, refs: tuple[str, ...]) -> str:
    ours = res["skcl"]["median_s"]
    parts = [f"skcl {ours * 1e3:.2f} ms"]
    for name in refs:
        if name in res:
            parts.append(f"{name} {res[name]['median_s'] / ours:.1f}x slower")
    parts.append(f"skcl/floor {ours / res['floor']['median_s']:.2f}")
    return ", ".join(parts)


def _ms(res: dict, name: str) -> str:
    return f"{res[name]['median_s'] * 1e3:.2f}" if name in res else "-"


def _ratio(res: dict, name: str, inverse=False) -> str:
    if name not in res:
        return "-"
    a, b = res[name]["median_s"], res["skcl"]["median_s"]
    return f"{(b / a if inverse else a / b):.2f}"


def _table(rows, keys, refs, fmt_key) -> list[str]:
    head = [
        *keys,
        "skcl ms",
        *(f"{r} ms" for r in refs),
        "floor ms",
        *(f"{r}/skcl" for r in refs),
        "skcl/floor",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [fmt_key(k, row[k]) for k in keys]
        if "methods" not in row:
            lines.append("| " + " | ".join(cells) + f" | skipped: {row['skipped']} |")
            continue
        res = row["methods"]
        cells += [_ms(res, "skcl"), *(_ms(res, r) for r in refs), _ms(res, "floor")]
        cells += [*(_ratio(res, r) for r in refs), _ratio(res, "floor", inverse=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _find(rows, **where):
    for row in rows:
        if all(row.get(k) == v for k, v in where.items()) and "methods" in row:
            return row["methods"]
    return None


def goal_lines(report: dict) -> list[str]:
    dev = report["device"]
    lines = ["## Goals", ""]
    r = report.get("gem") and _find(report["gem"], t=20, P=10**6)
    h = report.get("herding") and _find(report["herding"], n=5000, d=512, m=200)
    f = report.get("fisher") and _find(report["fisher"], N=10000)
    if dev == "cpu":
        checks = [
            ("gem", r, [("paper", 20, ">="), ("floor", 1.5, "<=")]),
            ("herding", h, [("paper", 30, ">=")]),
            ("fisher", f, [("per_sample_loop", 30, ">="), ("floor", 1.3, "<=")]),
        ]
    else:
        big = report.get("herding") and next(
            (
                x["methods"]
                for x in report["herding"]
                if x.get("n") == 50000 and x.get("d") == 2048 and "methods" in x
            ),
            None,
        )
        checks = [
            ("gem", r, [("floor", 1.5, "<=")]),
            ("herding", big, [("floor", 1.5, "<=")]),
            ("fisher", f, [("floor", 1.5, "<=")]),
        ]
    for kernel, res, tests in checks:
        verdicts = []
        for name, bound, kind in tests:
            if res is None or name not in res:
                verdicts.append(f"{name}: not measured in this run")
                continue
            if kind == ">=":
                value = res[name]["median_s"] / res["skcl"]["median_s"]
                met = "met" if value >= bound else "NOT met"
                verdict = f"{value:.1f}x faster than {name} ({met}"
                if value < bound and "floor" in res:
                    # How fast the reference is against the floor bounds any speed-up.
                    ceiling = res[name]["median_s"] / res["floor"]["median_s"]
                    if ceiling < bound:
                        verdict += (f": {name} itself is only {ceiling:.1f}x the floor here, "
                                    f"so {bound}x would need skcl {bound / ceiling:.2f}x "
                                    "faster than the floor")
                verdicts.append(verdict + ")")
            else:
                value = res["skcl"]["median_s"] / res[name]["median_s"]
                met = "met" if value <= bound else "NOT met"
                verdicts.append(f"{value:.2f}x the {name} ({met})")
        lines.append(f"- **{kernel}** ({GOALS[dev][kernel]}): " + "; ".join(verdicts))
    return lines


def write_markdown(report: dict, path: Path) -> None:
    env = report["environment"]
    lines = [
        f"# skcl kernel benchmarks ({report['device']})",
        "",
        f"{env['cpu']}, {env['threads']} threads, torch {env['torch']}, "
        f"{env['gpu'] or 'no GPU'}; load average {env['load_before']} before, "
        f"{env['load_after']} after. Median of {report['repeats']} round-robin repeats "
        "(methods under 0.2 s: three timings per repeat)"
        + (" (quick grid)." if report["quick"] else "."),
        "",
        "Ratios: `ref/skcl` > 1 means skcl is faster than that reference; "
        "`skcl/floor` is skcl's time over the floor's.",
        "",
    ]
    lines += goal_lines(report) + [""]
    fmt = lambda k, v: f"{v:.0e}" if k == "P" else str(v)  # noqa: E731
    if report.get("gem"):
        lines += [
            "## GEM projection",
            "",
            "Floor: two torch mv's over G. Paper: float64 numpy "
            "+ quadprog. torch: mm Gram + quadprog + addmv.",
            "",
        ]
        lines += _table(report["gem"], ["t", "P"], ["paper", "torch"], fmt) + [""]
    if report.get("herding"):
        lines += [
            "## Herding",
            "",
            "Floor: m torch mv's F f. Paper: the rule evaluated "
            "literally each pick (skipped where a run would exceed ~20 s: `-`). "
            "incremental: numpy with running F mu and F S.",
            "",
        ]
        lines += _table(report["herding"], ["n", "d", "m"], ["paper", "incremental"], fmt) + [""]
        skipped = [r for r in report["herding"] if "paper_skipped" in r]
        for r in skipped:
            lines.append(f"- n={r['n']} d={r['d']} m={r['m']}: {r['paper_skipped']}, not run.")
        if skipped:
            lines.append("")
    if report.get("fisher"):
        lines += [
            "## Fisher diagonal (MLP 784-256-256-10, batches of 256)",
            "",
            "Floor: one forward + backward over the same batches.",
            "",
        ]
        lines += _table(
            report["fisher"], ["N"], ["per_sample_loop", "vmap", "hook_torch_matmul"], fmt
        ) + [""]
    lines += report.get("notes", [])
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid, for a smoke run")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="gem,herding,fisher")
    parser.add_argument(
        "--budget",
        type=float,
        default=40.0,
        help="seconds one herding grid point may take; larger points are skipped",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.device == "auto":
        cuda_ok = torch.cuda.is_available() and kernels.backend_info()["cuda"]["available"]
        args.device = "cuda" if cuda_ok else "cpu"
    device = torch.device(args.device)
    only = set(args.only.split(","))

    def log(msg: str) -> None:
        print(msg, flush=True)

    env = {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "backend_info": kernels.backend_info(),
    }
    report = {
        "device": device.type,
        "quick": args.quick,
        "repeats": args.repeats,
        "environment": env,
        "notes": [],
    }
    start = time.perf_counter()
    if "gem" in only:
        ts, Ps = [1, 5, 20, 50], [10**5, 10**6, 10**7]
        if args.quick:
            ts, Ps = [1, 20], [10**5, 10**6]
        report["gem"] = bench_gem(device, ts, Ps, args.repeats, log)
    if "herding" in only:
        grid = (
            ([500, 5000], [64, 512], [20, 200])
            if args.quick
            else ([500, 5000, 50000], [64, 512, 2048], [20, 200, 2000])
        )
        report["herding"] = bench_herding(device, *grid, args.repeats, args.budget, log)
        trimmed = [r for r in report["herding"] if "skipped" in r]
        if trimmed:
            report["notes"].append(
                f"Trimmed: {len(trimmed)} herding grid point(s) whose floor alone would take more "
                f"than the {args.budget:.0f} s per-point budget (see the table) to keep the full "
                "run under ~8 minutes."
            )
    if "fisher" in only:
        report["fisher"] = bench_fisher(
            device, [1000] if args.quick else [1000, 10000], args.repeats, log
        )
    if device.type == "cpu":
        report["notes"].append(
            "GPU goals, for the record: " + "; ".join(GOALS["cuda"].values()) + ". GPU figures "
            "pending: this run had no CUDA device. The same script on a CUDA machine (device "
            "auto-detected) writes kernels_cuda.json and kernels_cuda.md."
        )
    env["load_after"] = [round(x, 2) for x in os.getloadavg()]
    env["total_s"] = round(time.perf_counter() - start, 1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    base = args.out_dir / f"kernels_{device.type}"
    base.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    write_markdown(report, base.with_suffix(".md"))
    log(f"wrote {base}.json and .md in {env['total_s']} s")


if __name__ == "__main__":
    main()
