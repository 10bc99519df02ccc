"""The markdown report and figures of a benchmark grid (see :mod:`skcl.bench`).

Everything here reads the dictionary stored in ``results.json``, so a report
can be rebuilt from the file alone. Per stream and scenario the report holds
a table of mean ± sample standard deviation over seeds, a figure of the
accuracy matrix ``R`` of every method (mean over seeds) and a figure of the
accuracy on the first experience as training goes on. Rows tuned on test data
(``skcl bench --tune``'s oracle rows) are left out of those tables and
figures and shown after them in a table of their own, labelled as a
reference. Figures are built on :class:`matplotlib.figure.Figure`; pyplot's
global state is never touched.

Examples
--------
>>> from skcl.report import summarize
>>> cell = {"estimator": "naive", "stream": "toy", "scenario": "class", "seed": 0,
...         "status": "ok", "R": [[1.0, 0.0], [0.5, 1.0]], "acc": 0.75, "bwt": -0.5,
...         "fwt": 0.0, "mean_forgetting": 0.5, "train_seconds": 2.0}
>>> [row["acc"] for row in summarize({"cells": [cell]})]
[0.75]
"""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "RESULTS_FILE", "environment", "first_task_figure", "heatmap_figure", "read_results",
    "summarize", "write_report", "write_results",
]

RESULTS_FILE = "results.json"
FIGURES = "report"
_METRICS = ("acc", "bwt", "fwt", "mean_forgetting", "train_seconds", "task_inference")
_SCENARIO_TITLES = {"class": "class-incremental", "task": "task-incremental",
                    "domain": "domain-incremental"}


def environment() -> dict[str, Any]:
    """Versions of skcl, torch, scikit-learn, numpy and Python, and the machine.

    Returns
    -------
    env : dict
        Keys ``skcl``, ``torch``, ``sklearn``, ``numpy``, ``python``, ``host``,
        ``machine`` and ``cpus``.

    Examples
    --------
    >>> from skcl.report import environment
    >>> sorted(environment())[:3]
    ['cpus', 'host', 'machine']
    """
    import sklearn
    import torch

    import skcl

    return {"skcl": skcl.__version__, "torch": torch.__version__, "sklearn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "host": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count()}


def write_results(results: dict[str, Any], out: str | os.PathLike) -> Path:
    """Write ``out/results.json`` atomically: a reader sees the old file or the new one.

    Parameters
    ----------
    results : dict
        JSON-safe content (NaN is refused; :mod:`skcl.bench` stores it as null).
    out : str or path-like
        The folder, created if needed.

    Returns
    -------
    path : Path

    Examples
    --------
    >>> import tempfile
    >>> from skcl.report import read_results, write_results
    >>> with tempfile.TemporaryDirectory() as out:
    ...     _ = write_results({"cells": []}, out)
    ...     read_results(out)
    {'cells': []}
    """
    path = Path(out) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_results(out: str | os.PathLike) -> dict[str, Any]:
    """Read ``results.json`` from a folder (or the file itself).

    Parameters
    ----------
    out : str or path-like

    Returns
    -------
    results : dict

    Raises
    ------
    FileNotFoundError
        When there is no such file.

    Examples
    --------
    >>> import tempfile
    >>> from skcl.report import read_results, write_results
    >>> with tempfile.TemporaryDirectory() as out:
    ...     path = write_results({"cells": [{"id": "naive/toy/class/0"}]}, out)
    ...     read_results(path) == read_results(out)
    True
    """
    path = Path(out)
    if path.is_dir() or not path.suffix:
        path = path / RESULTS_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def _value(x) -> float:
    return float("nan") if x is None else float(x)


def _groups(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(stream, scenario) pairs in the order their cells appear."""
    return list(dict.fromkeys((c["stream"], c["scenario"]) for c in results["cells"]))


def _methods(results: dict[str, Any], stream: str, scenario: str) -> list[str]:
    return list(dict.fromkeys(c["estimator"] for c in results["cells"]
                              if (c["stream"], c["scenario"]) == (stream, scenario)))


def _label(results: dict[str, Any], name: str) -> str:
    return results.get("estimators", {}).get(name, {}).get("label", name)


def _is_oracle(results: dict[str, Any], name: str) -> bool:
    """Whether a row was tuned on test data (its cells' parameters chosen on the test splits)."""
    tuning = results.get("estimators", {}).get(name, {}).get("tuning") or {}
    return tuning.get("protocol") == "oracle"


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (stream, scenario, estimator): mean and spread over seeds.

    Parameters
    ----------
    results : dict
        The content of ``results.json`` (at least its ``'cells'``).

    Returns
    -------
    rows : list of dict
        Keys ``stream``, ``scenario``, ``estimator``, ``label``, ``oracle``
        (tuned on test data), ``n_ok``,
        ``n_cells``, ``R`` (mean accuracy matrix, or None), each of ``acc``,
        ``bwt``, ``fwt``, ``mean_forgetting``, ``train_seconds``,
        ``task_inference`` (the fraction of test rows whose task the method
        inferred right, where it infers one: NaN otherwise) with its
        ``<name>_std`` (sample standard deviation, NaN for one seed), and
        ``vs_naive``: mean training seconds over Naive's in the same
        stream and scenario, and ``n_parameters``: the mean over seeds of the
        numbers the estimator holds to predict at the end of the stream
        (:func:`skcl.bench.count_parameters`; NaN when not recorded).

    Examples
    --------
    >>> from skcl.report import summarize
    >>> cells = [{"estimator": name, "stream": "toy", "scenario": "task", "seed": seed,
    ...           "status": "ok", "R": [[1.0]], "acc": 1.0, "bwt": None, "fwt": None,
    ...           "mean_forgetting": 0.0, "train_seconds": secs}
    ...          for name, secs in (("naive", 1.0), ("ewc", 3.0)) for seed in (0, 1)]
    >>> [(row["estimator"], row["vs_naive"]) for row in summarize({"cells": cells})]
    [('naive', 1.0), ('ewc', 3.0)]
    """
    rows = []
    for stream, scenario in _groups(results):
        group = [c for c in results["cells"] if (c["stream"], c["scenario"]) == (stream, scenario)]
        naive = [_value(c["train_seconds"]) for c in group
                 if c["estimator"] == "naive" and c.get("status") == "ok"]
        naive_seconds = float(np.mean(naive)) if naive else float("nan")
        for name in _methods(results, stream, scenario):
            cells = [c for c in group if c["estimator"] == name]
            ok = [c for c in cells if c.get("status") == "ok"]
            row: dict[str, Any] = {
                "stream": stream, "scenario": scenario, "estimator": name,
                "label": _label(results, name), "oracle": _is_oracle(results, name),
                "n_ok": len(ok), "n_cells": len(cells),
                "R": np.mean([np.array(c["R"], dtype=float) for c in ok], axis=0) if ok else None,
            }
            for metric in _METRICS:
                values = np.array([_value(c.get(metric)) for c in ok], dtype=float)
                finite = values[np.isfinite(values)]
                row[metric] = float(finite.mean()) if finite.size else float("nan")
                row[f"{metric}_std"] = float(finite.std(ddof=1)) if finite.size > 1 \
                    else float("nan")
            row["vs_naive"] = row["train_seconds"] / naive_seconds
            counts = [c["n_parameters"] for c in ok if c.get("n_parameters") is not None]
            row["n_parameters"] = float(np.mean(counts)) if counts else float("nan")
            rows.append(row)
    return rows


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(parts)).strip("-")


def heatmap_figure(rows: list[dict[str, Any]], title: str = ""):
    """One heatmap of the mean accuracy matrix ``R`` per method.

    Parameters
    ----------
    rows : list of dict
        Rows of :func:`summarize` for one stream and scenario; rows without
        a successful cell are left out.
    title : str, optional
        Title of the figure.

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> from skcl.report import heatmap_figure
    >>> row = {"label": "Naive", "R": [[0.9, 0.1], [0.2, 0.8]], "acc": 0.5}
    >>> len(heatmap_figure([row, {**row, "label": "EWC"}]).axes)
    3
    """
    from matplotlib.figure import Figure

    rows = [r for r in rows if r["R"] is not None]
    n = max(len(rows), 1)
    ncols = min(n, 5)
    nrows = -(-n // ncols)
    fig = Figure(figsize=(2.7 * ncols + 0.8, 2.75 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    image = None
    for ax, row in zip(axes, rows, strict=False):
        R = np.asarray(row["R"], dtype=float)
        T = R.shape[0]
        image = ax.imshow(R, vmin=0.0, vmax=1.0, cmap="viridis")
        if T <= 6:
            for i in range(T):
                for j in range(T):
                    ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if R[i, j] > 0.6 else "white")
        ticks = range(0, T, 1 if T <= 6 else 3)
        ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=7)
        ax.set_title(f"{row['label']}  ACC {row['acc']:.3f}", fontsize=9)
    for ax in axes[len(rows):]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes.tolist(), shrink=0.6, label="test accuracy R[i, j]")
    fig.suptitle(title or "accuracy matrix R[i, j]: row i = after training experience i, "
                 "column j = experience j")
    return fig


def first_task_figure(rows: list[dict[str, Any]], title: str = ""):
    """Accuracy on the first experience after each experience, one line per method.

    Parameters
    ----------
    rows : list of dict
        Rows of :func:`summarize` for one stream and scenario.
    title : str, optional
        Title of the figure.

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> from skcl.report import first_task_figure
    >>> rows = [{"label": "Naive", "R": [[0.9, 0.1], [0.2, 0.8]]},
    ...         {"label": "Joint", "R": [[0.9, 0.1], [0.9, 0.9]]}]
    >>> len(first_task_figure(rows).axes[0].lines)
    2
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    rows = [r for r in rows if r["R"] is not None]
    fig = Figure(figsize=(9, 4.8), layout="constrained")
    ax = fig.subplots()
    colors = colormaps["tab20"].colors[0::2] + colormaps["tab20"].colors[1::2]
    styles = ("-", "--", "-.", ":")
    T = 1
    for k, row in enumerate(rows):
        first = np.asarray(row["R"], dtype=float)[:, 0]
        T = max(T, len(first))
        ax.plot(np.arange(len(first)), first, marker="o", ms=3.5, lw=1.6,
                color=colors[k % len(colors)], ls=styles[(k // len(colors)) % len(styles)],
                label=row["label"])
    ax.set_xticks(range(T))
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("after training experience i")
    ax.set_ylabel("test accuracy on experience 0")
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5),
                  ncol=1 if len(rows) <= 16 else 2)
    ax.set_title(title or "accuracy on the first experience as the stream goes on")
    return fig


def _pm(mean: float, std: float, fmt: str) -> str:
    if np.isnan(mean):
        return "n/a"
    return format(mean, fmt) + ("" if np.isnan(std) else f" ± {std:.3f}")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    inferring = any(np.isfinite(r.get("task_inference", np.nan)) for r in rows)
    extra = (" task inference |", "---:|") if inferring else ("", "")
    lines = ["| method | ACC | BWT | FWT | forgetting | train s | × Naive | params |"
             f"{extra[0]} seeds ok |",
             f"|---|---:|---:|---:|---:|---:|---:|---:|{extra[1]}---:|"]
    for r in rows:
        seconds = "n/a" if np.isnan(r["train_seconds"]) else \
            f"{r['train_seconds']:.2f}" + ("" if np.isnan(r["train_seconds_std"])
                                           else f" ± {r['train_seconds_std']:.2f}")
        ratio = "n/a" if np.isnan(r["vs_naive"]) else f"{r['vs_naive']:.2f}"
        params = "n/a" if np.isnan(r["n_parameters"]) else f"{r['n_parameters']:,.0f}"
        lines.append(
            f"| {r['label'].replace('|', '/')} | {_pm(r['acc'], r['acc_std'], '.3f')} | "
            f"{_pm(r['bwt'], r['bwt_std'], '+.3f')} | {_pm(r['fwt'], r['fwt_std'], '+.3f')} | "
            f"{_pm(r['mean_forgetting'], r['mean_forgetting_std'], '.3f')} | {seconds} | "
            f"{ratio} | {params} |"
            + (f" {_pm(r['task_inference'], r['task_inference_std'], '.3f')} |"
               if inferring else "")
            + f" {r['n_ok']}/{r['n_cells']} |"
        )
    return lines


def _settings(results: dict[str, Any]) -> list[str]:
    """Parameters all skcl estimators share, then each one's own (per stream where they differ)."""
    infos = results.get("estimators", {})
    is_skcl = {name: str(info.get("class", "")).startswith("skcl.") for name, info in infos.items()}
    shared = [p for name, info in infos.items() if is_skcl[name]
              for p in info.get("params", {}).values()]
    common = {k: v for k, v in shared[0].items() if all(p.get(k) == v for p in shared)} \
        if shared else {}
    lines = [f"- every skcl estimator: {_params_text(common)}"] if common else []
    for name, info in infos.items():
        per_stream = {stream: {k: v for k, v in params.items()
                               if not (is_skcl[name] and k in common)}
                      for stream, params in info.get("params", {}).items()}
        distinct = {repr(p) for p in per_stream.values()}
        shown = per_stream.items() if len(distinct) > 1 else list(per_stream.items())[:1]
        for stream, params in shown:
            where = f" on {stream}" if len(distinct) > 1 else ""
            text = _params_text(params) or ("no others" if is_skcl[name] else "defaults")
            lines.append(f"- {info.get('label', name)} (`{info.get('class', name)}`){where}: "
                         f"{text}")
    return lines


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def _tuned(results: dict[str, Any]) -> list[str]:
    """A table of the parameters each tuned row chose, per stream and scenario, over seeds."""
    lines = []
    for name, info in results.get("estimators", {}).items():
        tuning = info.get("tuning")
        if not tuning:
            continue
        for stream, scenario in _groups(results):
            chosen: dict[str, list] = {}
            for c in results["cells"]:
                if (c["estimator"], c["stream"], c["scenario"]) == (name, stream, scenario) \
                        and c.get("tuned"):
                    chosen.setdefault(_params_text(c["tuned"]["params"]), []).append(c["seed"])
            if chosen:
                where = "test" if tuning["protocol"] == "oracle" else "validation"
                text = "; ".join(f"{p} (seed{'s' if len(s) > 1 else ''} "
                                 f"{', '.join(map(str, s))})" for p, s in chosen.items())
                lines.append(f"| {info.get('label', name).replace('|', '/')} | {stream} | "
                             f"{scenario} | {where} | {text} |")
    if not lines:
        return []
    grids = {name: info["tuning"]["grid"] for name, info in results["estimators"].items()
             if info.get("tuning") and info["tuning"]["protocol"] != "oracle"}
    return ["## Tuned parameters", "",
            "Each tuned cell chose its parameters with skcl.model_selection.select_params "
            "within its grid (" + "; ".join(f"{n.split('@')[0]}: {_params_text(g)}"
                                            for n, g in grids.items()) + "), on the data "
            "named in the `scored on` column; the validation rows never read test data.", "",
            "| row | stream | scenario | scored on | chosen (seeds) |", "|---|---|---|---|---|",
            *lines, ""]


def write_report(results: dict[str, Any], out: str | os.PathLike) -> Path:
    """Write ``REPORT.md`` and its PNG figures (under ``report/``) into ``out``.

    Parameters
    ----------
    results : dict
        The content of ``results.json`` written by :func:`skcl.bench.run_bench`.
    out : str or path-like
        Folder of the report; figures go to ``out/report/`` and are linked
        with relative paths.

    Returns
    -------
    path : Path
        The markdown file.

    Examples
    --------
    >>> import tempfile
    >>> from skcl.report import write_report
    >>> cell = {"id": "naive/toy/class/0", "estimator": "naive", "stream": "toy",
    ...         "scenario": "class", "seed": 0, "status": "ok", "R": [[1.0, 0.0], [0.5, 1.0]],
    ...         "acc": 0.75, "bwt": -0.5, "fwt": 0.0, "mean_forgetting": 0.5,
    ...         "train_seconds": 2.0}
    >>> with tempfile.TemporaryDirectory() as out:
    ...     text = write_report({"cells": [cell]}, out).read_text()
    >>> "| naive | 0.750 | -0.500 | +0.000 | 0.500 | 2.00 | 1.00 | n/a | 1/1 |" in text
    True
    """
    out = Path(out)
    figures = out / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    grid = results.get("grid", {})
    env = results.get("environment", {})
    cells = results["cells"]
    n_ok = sum(c.get("status") == "ok" for c in cells)
    devices = sorted({str(c.get("device")) for c in cells if c.get("device")})
    lines = ["# skcl benchmark report", ""]
    if grid:
        workers = "" if grid["n_jobs"] is None else f", {_count(grid['n_jobs'], 'worker')}"
        lines += [
            f"{_count(len(grid['estimators']), 'estimator')} × streams "
            f"{', '.join(grid['streams'])} × scenarios {', '.join(grid['scenarios'])} × seeds "
            f"{', '.join(map(str, grid['seeds']))}; {_count(grid['epochs'], 'epoch')} per "
            f"experience; {_count(grid['threads'], 'torch thread')} per cell on "
            f"{', '.join(devices) or 'n/a'}; backend {grid['backend']}{workers}; the last "
            f"invocation took {results.get('wall_seconds', float('nan')) / 60:.1f} min.",
            "",
        ]
    if env:
        lines += [
            f"skcl {env['skcl']}, torch {env['torch']}, scikit-learn {env['sklearn']}, "
            f"numpy {env['numpy']}, Python {env['python']}; {env.get('machine', '')} with "
            f"{env.get('cpus', '?')} CPUs. Written "
            f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
            f"{n_ok} of {len(cells)} cells ok.",
            "",
        ]
    lines += [
        "ACC, BWT, FWT and forgetting as in Lopez-Paz & Ranzato (2017), see PROTOCOL.md; "
        "mean ± sample standard deviation over seeds. `train s`: wall seconds of training "
        "over the stream, evaluation excluded; `× Naive`: those seconds over Naive's in the "
        "same run, stream and scenario; `params`: the numbers the estimator holds to "
        "predict at the end of the stream, every entry of every tensor its predictions "
        "read (trained and frozen weights, heads, masks: one mask bit counts one); "
        "`task inference`, without task ids, for methods with a head per task: the "
        "fraction of test rows answered by their own task's head at the end of the "
        "stream (skcl.evaluation.task_inference_accuracy, each task's test set in one "
        "call). Cells run side by side share the machine, so "
        "seconds compare best within one run. A tuned row's seconds are its final run's; "
        "its search's are `tuned.seconds` in results.json.",
        "",
    ]
    if results.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in results["notes"]], ""]
    settings = _settings(results)
    if settings:
        lines += ["## Settings", "", *settings, ""]
    lines += _tuned(results)
    rows = summarize(results)
    written = set()
    for stream, scenario in _groups(results):
        group = [r for r in rows if (r["stream"], r["scenario"]) == (stream, scenario)
                 and not r["oracle"]]
        oracle = [r for r in rows if (r["stream"], r["scenario"]) == (stream, scenario)
                  and r["oracle"]]
        title = f"{stream}, {_SCENARIO_TITLES.get(scenario, scenario)}"
        heat = f"heatmaps-{_slug(stream, scenario)}.png"
        first = f"first-task-{_slug(stream, scenario)}.png"
        heatmap_figure(group, f"{title}: mean R[i, j] over seeds (row i: after "
                       "experience i; column j: experience j)").savefig(figures / heat, dpi=80)
        first_task_figure(group, f"{title}: accuracy on experience 0 (mean over seeds)") \
            .savefig(figures / first, dpi=90)
        written |= {heat, first}
        lines += [f"## {title}", "", *_table(group), ""]
        if oracle:
            lines += ["Oracle reference, **not a result**: the same methods with their "
                      "parameters tuned on this stream's *test* data, to show what test-set "
                      "tuning adds over the honest rows above.", "", *_table(oracle), ""]
        lines += [
                  f"![R heatmaps, {title}]({FIGURES}/{heat})", "",
                  f"![accuracy on the first experience, {title}]({FIGURES}/{first})", ""]
    for stale in figures.glob("*.png"):
        if stale.name not in written and stale.name.startswith(("heatmaps-", "first-task-")):
            stale.unlink()
    failed = [c for c in cells if c.get("status") != "ok"]
    lines += ["## Failed cells", ""]
    if failed:
        lines += ["| estimator | stream | scenario | seed | error |", "|---|---|---|---:|---|"]
        for c in failed:
            error = str(c.get("error", "")).replace("|", "\\|")
            lines.append(f"| {_label(results, c['estimator'])} | {c['stream']} | "
                         f"{c['scenario']} | {c['seed']} | {error} |")
        lines += ["", "Full tracebacks are in `results.json`; running the same command again "
                  "retries failed cells."]
    else:
        lines.append("None.")
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
