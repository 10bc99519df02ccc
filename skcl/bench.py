"""Benchmark grids: estimators x streams x scenarios x seeds, resumable and parallel.

:func:`run_bench` trains every cell with :func:`skcl.evaluation.evaluate_stream`,
stores each result in ``DIR/results.json`` as soon as it is measured, and
writes ``DIR/REPORT.md`` (:mod:`skcl.report`). A cell that raises is recorded
as failed and the grid goes on; the same grid run again into the same folder
runs only the cells missing or failed. Cells run in this process
(``'serial'``), in joblib's loky worker processes (``'loky'``) or on a Dask
cluster (``'dask'``, the ``skcl[dask]`` extra). Each cell seeds everything
from its seed and uses a fixed number of torch threads, so the backend does
not change its results.

The grid holds every skcl estimator (:mod:`skcl.registry`) and two
scikit-learn baselines trained by their own ``partial_fit``: ``'sgd'``
(``SGDClassifier``) and ``'mlp'`` (``MLPClassifier``: the protocol's 256-256
network and SGD, momentum 0.9, ``learning_rate_init`` 0.05, batch 32, no L2).
``'naive'`` is in every grid: timings are reported relative to it.

With ``tune`` (``skcl bench --tune first-tasks``), every estimator that has a
tuning grid in the settings (``TUNING`` in ``benchmarks/bench_methods.py``)
gets two more rows: tuned by :func:`skcl.model_selection.select_params` under
that protocol, per stream, scenario and seed, on validation splits of the
training data only; and an oracle, tuned the same way on the *test* data,
which the report shows apart, labelled as a reference and never as a result.

Examples
--------
>>> import tempfile
>>> from skcl.bench import run_bench
>>> with tempfile.TemporaryDirectory() as out:
...     run = run_bench(["naive", "sgd"], ["split-digits"], scenarios=["task"], seeds=[0],
...                     epochs=1, params={"hidden_layer_sizes": (16,)}, backend="serial",
...                     out=out, progress=False)
...     [(c["estimator"], c["status"]) for c in run.cells]
[('naive', 'ok'), ('sgd', 'ok')]
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib
import json
import logging
import os
import random
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from skcl._bench_grid import (
    BenchError,
    _check_grid,
    _jsonable,
    _key,
    _ordered,
    _resolve_params,
    _specs,
    _stream_digest,
    _tuning_rows,
    estimator_names,
    load_settings,
    stream_scenarios,
    try_estimator,
)
from skcl.datasets import STREAMS, TaskStream
from skcl.heldout import HELD_OUT_STREAMS
from skcl.report import RESULTS_FILE

__all__ = [
    "BACKENDS", "BenchError", "BenchRun", "count_parameters", "estimator_names", "load_settings",
    "run_bench",
    "stream_scenarios", "try_estimator",
]

BACKENDS = ("loky", "serial", "dask")
DEFAULT_STREAMS = ("split-digits", "permuted-digits")
DASK_HINT = "pip install 'skcl[dask]' (or: pip install 'dask[distributed]')"
#: Seconds to wait for a Dask scheduler given by address before giving up.
SCHEDULER_TIMEOUT = 10.0


@dataclass(frozen=True)
class _Task:
    """Everything a worker needs for one cell, but the stream."""

    estimator: str
    stream: str
    scenario: str
    seed: int
    module: str
    cls: str
    params: Mapping[str, Any]
    epochs: int
    threads: int
    config: str
    # {"protocol", "n_tasks", "grid"}: tune within the grid before the run; None: don't.
    tune: Mapping[str, Any] | None = None

    @property
    def id(self) -> str:
        return f"{self.estimator}/{self.stream}/{self.scenario}/{self.seed}"


_PROCESS_WARM = False


def _run_cell(task: _Task, stream: TaskStream) -> dict[str, Any]:
    """Train and score one cell; any exception becomes a failed record."""
    global _PROCESS_WARM
    import torch
    from threadpoolctl import threadpool_limits

    from skcl.evaluation import evaluate_stream, task_inference_accuracy, warm_up

    record = _record(task)
    threads = torch.get_num_threads()
    torch.set_num_threads(task.threads)
    start = time.perf_counter()
    estimator = None
    try:
        # BLAS and OpenMP pools too (scikit-learn's MLP, skcl's kernels): one budget per cell.
        with threadpool_limits(limits=task.threads):
            if not _PROCESS_WARM:
                warm_up()
                _PROCESS_WARM = True
                start = time.perf_counter()
            random.seed(task.seed)
            np.random.seed(task.seed)  # noqa: NPY002 - the legacy global state, for code reading it
            torch.manual_seed(task.seed)
            cls = getattr(importlib.import_module(task.module), task.cls)
            estimator = cls(**task.params, random_state=task.seed)
            if task.tune is not None:
                record["tuned"] = _tune(estimator, stream, task)
                estimator.set_params(**record["tuned"]["params"])
            result = evaluate_stream(estimator, stream, scenario=task.scenario, epochs=task.epochs)
    except Exception as exc:
        record = _record(task, exc)
    else:
        data = result.to_dict()
        record.update({k: data[k] for k in ("R", "b", "acc", "bwt", "fwt", "forgetting",
                                            "train_seconds", "experience_seconds")})
        record.update(status="ok", error=None, mean_forgetting=result.mean_forgetting,
                      n_parameters=count_parameters(estimator),
                      task_inference=None if task.scenario == "task"
                      else task_inference_accuracy(estimator, stream))
    finally:
        torch.set_num_threads(threads)
    device = getattr(estimator, "device_", None) or task.params.get("device", "cpu")
    record.update(device=str(device), wall_seconds=time.perf_counter() - start,
                  finished_at=datetime.now(timezone.utc).isoformat())
    return record


def _tune(estimator, stream: TaskStream, task: _Task) -> dict[str, Any]:
    """Choose the cell's parameters within its grid (:func:`select_params`); what was chosen.

    Under ``'first-tasks'`` and ``'validation'`` only the stream's training
    data is read; ``'oracle'`` scores the candidates on its test data.
    """
    from skcl.model_selection import ORACLE, select_params

    protocol = task.tune["protocol"]
    start = time.perf_counter()
    best, cv = select_params(estimator, stream, dict(task.tune["grid"]), protocol=protocol,
                             n_tasks=min(task.tune["n_tasks"], len(stream)),
                             scenario=task.scenario, epochs=task.epochs,
                             random_state=task.seed, n_jobs=1)
    return {"protocol": protocol, "n_tasks": task.tune["n_tasks"], "params": _jsonable(best),
            "scored_on": "test" if protocol == ORACLE else "validation",
            "candidates": _jsonable(cv["params"]),
            "scores": [None if np.isnan(v) else float(v) for v in cv["score"]],
            "seconds": time.perf_counter() - start}


def count_parameters(estimator) -> int:
    """How many numbers an estimator holds to predict, at the end of its stream.

    For a skcl estimator, every entry of every parameter and buffer of the
    network its predictions read (its scoring network): trained and frozen
    weights, per-task heads, and masks, one entry of a boolean mask counting
    one. For a scikit-learn estimator, the entries of ``coef_``,
    ``intercept_``, ``coefs_`` and ``intercepts_``.

    Examples
    --------
    >>> from sklearn.linear_model import SGDClassifier
    >>> from skcl.bench import count_parameters
    >>> count_parameters(SGDClassifier().fit([[0.0, 1.0], [1.0, 0.0]], [0, 1]))
    3
    """
    from skcl._guard import scoring_view
    from skcl.base import ContinualClassifier

    if isinstance(estimator, ContinualClassifier):
        network = scoring_view(estimator, estimator._scoring_view,
                               estimator._scoring_key).network
        return sum(t.numel() for t in (*network.parameters(), *network.buffers()))
    arrays = [getattr(estimator, name, None) for name in
              ("coef_", "intercept_", "coefs_", "intercepts_")]
    return int(sum(np.size(a) for value in arrays if value is not None
                   for a in (value if isinstance(value, list) else [value])))


def _record(task: _Task, exc: BaseException | None = None) -> dict[str, Any]:
    """A cell's record before its results: what ran, where, with which versions.

    With ``exc``, the record of a failure (also of a worker that never answered).
    """
    from skcl.report import environment

    env = environment()
    record = {"id": task.id, "estimator": task.estimator, "stream": task.stream,
              "scenario": task.scenario, "seed": task.seed,
              "estimator_class": f"{task.module}.{task.cls}", "epochs": task.epochs,
              "params": _jsonable(task.params), "config": task.config,
              "device": str(task.params.get("device", "cpu")), "torch_threads": task.threads,
              "versions": {k: env[k] for k in ("skcl", "torch", "sklearn", "numpy", "python")},
              "host": env["host"], "finished_at": datetime.now(timezone.utc).isoformat()}
    if exc is not None:
        message = str(exc).strip().splitlines()
        record.update(status="failed", traceback="".join(traceback.format_exception(exc)),
                      error=type(exc).__name__ + (f": {message[0]}" if message else ""))
    return record


def _run_serial(jobs, done: Callable[[dict], None], n_jobs, scheduler) -> None:
    for task, stream in jobs:
        done(_run_cell(task, stream))


def _run_loky(jobs, done: Callable[[dict], None], n_jobs, scheduler) -> None:
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=n_jobs)
    futures = {executor.submit(_run_cell, task, stream): task for task, stream in jobs}
    try:
        for future in concurrent.futures.as_completed(futures):
            try:
                done(future.result())
            except Exception as exc:
                done(_record(futures[future], exc))
    except BaseException:
        for future in futures:
            future.cancel()
        executor.shutdown(wait=False, kill_workers=True)
        raise
    executor.shutdown(wait=True)


def _import_dask():
    try:
        from dask import distributed
    except ImportError as exc:
        raise BenchError(f"the dask backend needs dask.distributed, which is not installed: "
                         f"{DASK_HINT}") from exc
    return distributed


def _run_dask(jobs, done: Callable[[dict], None], n_jobs, scheduler) -> None:
    distributed = _import_dask()
    cluster = None
    if scheduler is None:
        cluster = distributed.LocalCluster(n_workers=n_jobs, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
    else:
        try:
            client = distributed.Client(scheduler, timeout=SCHEDULER_TIMEOUT)
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot reach the Dask scheduler at {scheduler!r} within "
                             f"{SCHEDULER_TIMEOUT:g} s: {' '.join(str(exc).split())}") from None
    try:
        streams = {id(stream): stream for _, stream in jobs}
        scattered = dict(zip(streams, client.scatter(list(streams.values())), strict=True))
        futures = {client.submit(_run_cell, task, scattered[id(stream)], pure=False): task
                   for task, stream in jobs}
        for future in distributed.as_completed(futures):
            try:
                done(future.result())
            except Exception as exc:
                done(_record(futures[future], exc))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


_BACKEND_RUNNERS = {"serial": _run_serial, "loky": _run_loky, "dask": _run_dask}


@dataclass
class BenchRun:
    """What :func:`run_bench` did.

    Attributes
    ----------
    out : Path
        The output folder.
    cells : list of dict
        Every cell of the grid, in grid order, as stored in ``results.json``.
    ran : list of str
        Ids (``estimator/stream/scenario/seed``) of the cells run this time.
    reused : list of str
        Ids of the cells taken from an earlier run in ``out``.
    report : Path
        ``out / 'REPORT.md'``.
    """

    out: Path
    cells: list[dict]
    ran: list[str]
    reused: list[str]
    report: Path

    @property
    def failed(self) -> list[dict]:
        """The cells whose status is ``'failed'``."""
        return [c for c in self.cells if c.get("status") != "ok"]


def run_bench(
    estimators: Sequence[str] | str = "all",
    streams: Sequence[str | TaskStream] = DEFAULT_STREAMS,
    scenarios: Sequence[str] = ("class", "task"),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 5,
    params: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    device: str | None = "cpu",
    threads: int = 1,
    backend: str = "loky",
    n_jobs: int | None = None,
    scheduler: str | None = None,
    out: str | os.PathLike = "bench_output",
    restart: bool = False,
    progress: bool = True,
    tune: str | None = None,
    tune_tasks: int = 3,
) -> BenchRun:
    """Run a benchmark grid and write ``results.json`` and ``REPORT.md`` into ``out``.

    Parameters
    ----------
    estimators : 'all' or sequence of str
        Names of :func:`estimator_names` (class names also work) and of the
        variants in ``settings``; ``'all'`` is all of them. ``'naive'`` is
        added when missing: every timing is reported relative to it.
    streams : sequence of str or TaskStream
        Named streams (:data:`skcl.datasets.STREAMS`,
        :data:`skcl.heldout.HELD_OUT_STREAMS`) or streams built by the caller
        (e.g. :func:`skcl.tabular.load_streams`).
    scenarios : sequence of {'class', 'task', 'domain'}
        Resolved per stream by :func:`stream_scenarios`.
    seeds : sequence of int
        Each cell sets ``random_state`` and Python's, NumPy's and torch's
        global seeds from its seed.
    epochs : int, default=5
        Passes over each experience, for every estimator (PROTOCOL.md: 5).
    params : mapping, optional
        ``{'key': value}`` for every estimator that has ``key`` (the
        scikit-learn MLP takes ``hidden_layer_sizes``, ``learning_rate`` as
        ``learning_rate_init``, ``momentum``, ``batch_size`` and ``optimizer``
        as ``solver``), ``{'name.key': value}`` for one estimator.
    settings : mapping, optional
        From :func:`load_settings`; ``params`` and ``device`` override it.
    device : str or None, default='cpu'
        ``device`` of every skcl estimator; None leaves it to the settings.
    threads : int, default=1
        Threads of each cell (torch's, and the BLAS and OpenMP pools through
        threadpoolctl), whatever the backend.
    backend : {'loky', 'serial', 'dask'}, default='loky'
        Where cells run: joblib's loky worker processes, this process, or a
        Dask cluster (``scheduler``'s address, else a ``LocalCluster`` of
        ``n_jobs`` single-threaded worker processes).
    n_jobs : int, optional
        Worker processes for ``'loky'`` and a local Dask cluster; defaults to
        the number of CPUs divided by ``threads``.
    scheduler : str, optional
        Address of a running Dask scheduler (``'dask'`` backend only); its
        workers need skcl installed.
    out : str or path-like, default='bench_output'
        Output folder. Cells already in its ``results.json`` with the same
        settings and status ``'ok'`` are not run again.
    restart : bool, default=False
        Ignore the results already in ``out``.
    progress : bool, default=True
        Show a progress bar and one line per failed cell.
    tune : {'first-tasks', 'validation'}, optional
        Also run, for every estimator with a grid in ``settings['tuning']``,
        a row tuned within that grid under this protocol of
        :mod:`skcl.model_selection` (per stream, scenario and seed, on
        validation splits of the training data; named ``'<name>@<tune>'``)
        and an oracle row tuned on the test data (``'<name>@oracle'``),
        which the report shows apart, as a reference only.
    tune_tasks : int, default=3
        ``k`` of the ``'first-tasks'`` protocol (at most each stream's length).

    Returns
    -------
    run : BenchRun

    Examples
    --------
    >>> import tempfile
    >>> from skcl.bench import run_bench
    >>> with tempfile.TemporaryDirectory() as out:
    ...     first = run_bench(["naive"], ["split-digits"], ["class"], [0], epochs=1,
    ...                       params={"hidden_layer_sizes": (16,)}, backend="serial", out=out,
    ...                       progress=False)
    ...     again = run_bench(["naive"], ["split-digits"], ["class"], [0], epochs=1,
    ...                       params={"hidden_layer_sizes": (16,)}, backend="serial", out=out,
    ...                       progress=False)
    >>> len(first.ran), len(again.ran), len(again.reused)
    (1, 0, 1)
    """
    from tqdm.auto import tqdm

    from skcl.report import environment, read_results, write_report, write_results

    if backend not in BACKENDS:
        raise BenchError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "dask":
        _import_dask()
    if scheduler is not None and backend != "dask":
        raise BenchError("--scheduler is for --backend dask")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise BenchError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise BenchError(f"threads must be a positive integer, got {threads!r}")
    n_jobs = n_jobs or max(1, (os.cpu_count() or 1) // threads)
    from skcl.model_selection import ORACLE, PROTOCOLS

    if tune is not None and tune not in PROTOCOLS:
        raise BenchError(f"unknown tuning protocol {tune!r}; valid: {', '.join(PROTOCOLS)} "
                         f"('{ORACLE}' rows come with either)")
    if isinstance(tune_tasks, bool) or not isinstance(tune_tasks, int) or tune_tasks < 1:
        raise BenchError(f"tune_tasks must be a positive integer, got {tune_tasks!r}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise BenchError(f"seeds must be distinct and at least one, got {seeds}")
    settings = settings or {"defaults": {}, "estimators": {}, "variants": {}, "notes": [],
                            "tuning": {}}
    all_specs = _specs(settings)
    names = list(all_specs) if isinstance(estimators, str) and estimators == "all" else \
        [_key(n) for n in ([estimators] if isinstance(estimators, str) else estimators)]
    unknown = [n for n in names if n not in all_specs]
    if unknown:
        raise BenchError(f"unknown estimator {unknown[0]!r}; valid: all, {', '.join(all_specs)}")
    specs = [all_specs[n] for n in dict.fromkeys(["naive", *names])]
    named = {**STREAMS, **HELD_OUT_STREAMS}
    unknown = [s for s in streams if not isinstance(s, TaskStream) and s not in named]
    if unknown:
        raise BenchError(f"unknown stream {unknown[0]!r}; valid: {', '.join(sorted(named))}")
    loaded = [s if isinstance(s, TaskStream) else named[s]() for s in streams]
    if not loaded or len({s.name for s in loaded}) != len(loaded):
        raise BenchError(f"streams must be distinct and at least one: {[s.name for s in loaded]}")
    resolved = _resolve_params(specs, [s.name for s in loaded], settings, dict(params or {}),
                               device)
    tuning = _tuning_rows(specs, settings.get("tuning", {}), tune, tune_tasks) if tune else {}
    for name, (base, _, info) in tuning.items():
        _check_grid(base, info["grid"])
        resolved.update({(name, stream.name): resolved[base.name, stream.name]
                         for stream in loaded})
    all_rows = [*specs, *(spec for _, spec, _ in tuning.values())]
    for spec in specs:
        for stream in loaded:
            try:
                try_estimator(spec.make_class()(**resolved[spec.name, stream.name]), stream)
            except BenchError as exc:
                raise BenchError(f"{spec.name} on {stream.name}: {exc}") from None
    tasks: list[tuple[_Task, TaskStream]] = []
    scenario_notes: list[str] = []
    for stream in loaded:
        digest = _stream_digest(stream)
        runs, notes = stream_scenarios(stream, scenarios)
        scenario_notes += notes
        for scenario in runs:
            for spec in _ordered(specs, tuning):
                allowed = settings["variants"].get(spec.name, {}).get("scenarios")
                if allowed is not None and scenario not in allowed:
                    continue
                tune_info = tuning[spec.name][2] if spec.name in tuning else None
                for seed in seeds:
                    p = resolved[spec.name, stream.name]
                    identity = [spec.module, spec.cls, _jsonable(p), epochs, digest, scenario, seed]
                    if tune_info is not None:
                        identity.append(_jsonable(tune_info))
                    config = hashlib.sha1(json.dumps(identity, sort_keys=True).encode()
                                          ).hexdigest()[:16]
                    tasks.append((_Task(spec.name, stream.name, scenario, seed, spec.module,
                                        spec.cls, p, epochs, threads, config, tune_info),
                                  stream))

    out = Path(out)
    try:
        previous = {} if restart else {c["id"]: c for c in read_results(out)["cells"]}
    except FileNotFoundError:
        previous = {}
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"{out / RESULTS_FILE} is not a skcl bench results file ({exc}); "
                         "remove it or pass --restart") from exc
    cells: dict[str, dict] = {}
    todo = []
    for task, stream in tasks:
        old = previous.get(task.id)
        if old is not None and old.get("status") == "ok" and old.get("config") == task.config:
            cells[task.id] = old
        else:
            todo.append((task, stream))
    reused = list(cells)
    header = {
        "format": 1,
        "grid": {"estimators": [s.name for s in _ordered(specs, tuning)],
                 "streams": [s.name for s in loaded],
                 "scenarios": list(scenarios), "seeds": seeds, "epochs": epochs,
                 "device": device, "threads": threads, "backend": backend,
                 "n_jobs": None if backend == "serial" else n_jobs,
                 "tune": tune, "tune_tasks": tune_tasks if tune else None},
        "estimators": {s.name: {"label": s.label, "class": f"{s.module}.{s.cls}",
                                "params": {n: _jsonable(resolved[s.name, n])
                                           for n in (x.name for x in loaded)},
                                **({"tuning": _jsonable(tuning[s.name][2])}
                                   if s.name in tuning else {})}
                       for s in all_rows},
        "notes": scenario_notes + list(settings.get("notes", [])),
        "environment": environment(),
    }
    order = [task.id for task, _ in tasks]
    started = time.perf_counter()

    def save() -> None:
        write_results({**header, "wall_seconds": time.perf_counter() - started,
                       "cells": [cells[i] for i in order if i in cells]}, out)

    bar = tqdm(total=len(todo), desc=f"skcl bench ({backend})", unit="cell",
               disable=not progress or not todo)
    n_failed = 0

    def done(record: dict) -> None:
        nonlocal n_failed
        cells[record["id"]] = record
        save()
        if record["status"] != "ok":
            n_failed += 1
            bar.write(f"failed: {record['id']}: {record['error']}")
        bar.set_postfix(failed=n_failed, last=record["id"], refresh=False)
        bar.update()

    save()
    try:
        if todo:
            _BACKEND_RUNNERS[backend](todo, done, n_jobs, scheduler)
    finally:
        bar.close()
    report = write_report(read_results(out), out)
    return BenchRun(out=out, cells=[cells[i] for i in order], ran=[t.id for t, _ in todo],
                    reused=reused, report=report)
