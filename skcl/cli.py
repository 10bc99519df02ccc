"""The ``skcl`` command (also ``python -m skcl``).

``skcl list`` names the estimators (:mod:`skcl.registry`) and streams;
``skcl run`` trains one estimator over one stream (a named one, or one built
from a CSV, Parquet or ``.npz`` file by :mod:`skcl.tabular`) and prints its
accuracy matrix and metrics; with ``--nproc N`` it trains data-parallel in N
processes launched by ``torchrun`` (:mod:`skcl.distributed`);
``skcl demo`` runs a few estimators over split-digits side by side;
``skcl bench`` runs a grid of estimators, streams, scenarios and seeds and
writes a report (:mod:`skcl.bench`).

A user's mistake (an unknown name, a parameter the estimator rejects, a
device it cannot have, an unreadable data file, an unreachable scheduler)
ends the command with one line, ``skcl: error: ...``, on stderr and exit
status 2.

Examples
--------
>>> from skcl.cli import main
>>> main(["run", "--estimator", "naive", "--stream", "split-digits", "--epochs", "1",
...       "--param", "hidden_layer_sizes=(32,)", "--quiet"])
0
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from skcl import bench, registry
from skcl.datasets import SCENARIOS, STREAMS, TaskStream, load_stream
from skcl.evaluation import evaluate_stream, format_matrix, format_table, warm_up
from skcl.tabular import DataError, load_streams

DEMO_ESTIMATORS = ("naive", "cumulative", "joint")
#: Set by ``skcl run --nproc N`` in the environment of the N processes it launches.
RANKS_ENV = "SKCL_RUN_NPROC"


class _UsageError(Exception):
    """A one-line error for the user (unknown name, malformed parameter, bad file)."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _lookup_estimator(name: str) -> type:
    try:
        return registry.get(name).load()
    except registry.UnknownEstimatorError as exc:
        raise _UsageError(str(exc)) from None


def _check_stream(name: str) -> str:
    if name not in STREAMS:
        raise _UsageError(f"unknown stream {name!r}; valid: {', '.join(sorted(STREAMS))}")
    return name


def _parse_params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _UsageError(f"--param takes key=value, got {pair!r}")
        try:
            params[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key] = value
    return params


def _build(name: str, params: dict, seed: int):
    cls = _lookup_estimator(name)
    valid = cls().get_params()
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise _UsageError(
            f"{cls.__name__} has no parameter {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    return cls(**{"random_state": seed, **params})


def _check_output(path: str | None, option: str) -> None:
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise _UsageError(f"{option} {path}: folder {Path(path).parent} does not exist")


def _data_streams(args) -> list[TaskStream]:
    """The streams ``--data`` and its options ask for."""
    try:
        return load_streams(args.data, target=args.target, task_column=args.task_column,
                            classes_per_task=args.classes_per_task, permuted=args.permuted,
                            drop=_csv(args.drop or ""), impute=args.impute,
                            random_state=args.split_seed)
    except DataError as exc:
        raise _UsageError(_one_line(exc)) from None


#: The options that cut a --data file into a stream, one stream each.
_STREAM_OPTIONS = ("task_column", "classes_per_task", "permuted")


def _data_options_given(args) -> bool:
    """Whether an option that only makes sense with ``--data`` was given."""
    return args.impute or any(getattr(args, option) is not None
                              for option in ("target", "drop", *_STREAM_OPTIONS))


def _cmd_list(args) -> int:
    print("estimators:")
    for entry in registry.ENTRIES:
        cls = entry.load()
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        aliases = f" (also: {', '.join(entry.aliases)})" if entry.aliases else ""
        print(f"  {entry.name:14s} {cls.__name__:28s} {summary}{aliases}")
    print("streams:")
    for name, loader in sorted(STREAMS.items()):
        stream = loader()
        print(f"  {name:18s} {len(stream)} experiences, default scenario "
              f"{stream.default_scenario}")
    return 0


def _cmd_run(args) -> int:
    if (args.stream is None) == (args.data is None):
        raise _UsageError("give one of --stream NAME and --data FILE")
    if args.data is None and _data_options_given(args):
        raise _UsageError("--target, --task-column, --classes-per-task, --permuted, --drop "
                          "and --impute go with --data FILE")
    if args.data is not None and sum(getattr(args, o) is not None for o in _STREAM_OPTIONS) != 1:
        raise _UsageError("--data needs one of --task-column COLUMN, --classes-per-task K and "
                          "--permuted N")
    if args.epochs is not None and args.epochs < 1:
        raise _UsageError(f"--epochs must be a positive integer, got {args.epochs}")
    if args.nproc < 1:
        raise _UsageError(f"--nproc must be a positive integer, got {args.nproc}")
    launched = os.environ.get(RANKS_ENV)
    nproc = args.nproc if launched is None else int(launched)
    _check_output(args.json, "--json")
    _check_output(args.plot, "--plot")
    estimator = _build(args.estimator, _parse_params(args.param), args.seed)
    if nproc > 1:
        _check_data_parallel(estimator, nproc)
    stream = load_stream(_check_stream(args.stream)) if args.data is None else \
        _data_streams(args)[0]
    try:
        bench.try_estimator(estimator, stream)
    except bench.BenchError as exc:
        raise _UsageError(str(exc)) from None
    if nproc == 1:
        result = evaluate_stream(estimator, stream, scenario=args.scenario, epochs=args.epochs,
                                 verbose=0 if args.quiet else 1)
    elif launched is None:
        return _launch(nproc, args.argv)
    else:
        result = _run_rank(estimator, stream, args)
        if result is None:
            return 0
    if not args.quiet:
        print(format_matrix(result))
        print()
        print(format_table([result]))
    try:
        if args.json:
            result.to_json(args.json)
        if args.plot:
            result.plot(args.plot)
    except OSError as exc:
        raise _UsageError(f"cannot write {exc.filename or args.json}: {exc.strerror}") from None
    return 0


def _check_data_parallel(estimator, n: int) -> None:
    """Refuse, before launching anything, what cannot train in ``n`` processes."""
    if getattr(estimator, "distributed", "auto") == "off":
        raise _UsageError(f"--nproc {n} trains data-parallel, but distributed='off' keeps "
                          "every process alone; drop --param distributed=off")
    device = str(estimator.device)
    if device.startswith("cuda:"):
        raise _UsageError(f"--nproc {n} gives each process its own GPU (cuda:LOCAL_RANK); "
                          f"pass device=cuda or auto rather than {device}")
    if _uses_cuda(estimator) and _cuda_count() < n:
        raise _UsageError(f"--nproc {n} with device={device} needs {n} GPUs, one per process; "
                          f"{_cuda_count()} found")


def _cuda_count() -> int:
    """How many CUDA devices torch sees."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _uses_cuda(estimator) -> bool:
    device = str(estimator.device)
    return device.startswith("cuda") or (device == "auto" and _cuda_count() > 0)


def _launch(n: int, argv: list[str]) -> int:
    """Run this same ``skcl`` command in ``n`` processes under ``torchrun`` on this machine.

    The processes learn ``n`` from :data:`RANKS_ENV`, not from ``--nproc``, which
    torchrun's own parser would take for an abbreviation of ``--nproc-per-node``.
    """
    env = {**os.environ, RANKS_ENV: str(n)}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={n}", "-m", "skcl", *_without_nproc(argv)]
    return subprocess.run(command, env=env, check=False).returncode


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` (or ``--nproc=N``, or an abbreviation of either)."""
    out, skip = [], False
    for token in argv:
        name = token.partition("=")[0]
        if skip:
            skip = False
        elif len(name) > 2 and "--nproc".startswith(name):
            skip = "=" not in token
        else:
            out.append(token)
    return out


def _run_rank(estimator, stream: TaskStream, args):
    """One of the ``--nproc`` ranks: train on its shard of every call (gloo on the CPU,
    NCCL with one GPU per rank); the result on rank 0, ``None`` on the others."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    backend = "gloo"
    if _uses_cuda(estimator):
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        estimator.set_params(device=f"cuda:{local_rank}")
        backend = "nccl"
    dist.init_process_group(backend)
    try:
        result = evaluate_stream(
            estimator, stream, scenario=args.scenario, epochs=args.epochs,
            verbose=0 if args.quiet or rank else 1,
            shard=lambda n: np.array_split(np.arange(n), world)[rank])
    except ValueError as exc:
        raise _UsageError(f"rank {rank}: {_one_line(exc)}") from None
    finally:
        dist.destroy_process_group()
    return result if rank == 0 else None


def _cmd_demo(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stream = load_stream("split-digits")
    print(f"skcl demo: {len(stream)} experiences of split-digits, class-incremental, "
          f"{args.epochs} epochs each, MLP 256-256 (PROTOCOL.md settings)\n")
    warm_up()
    results = []
    for name in DEMO_ESTIMATORS:
        estimator = _build(name, {}, args.seed)
        result = evaluate_stream(estimator, stream, scenario="class", epochs=args.epochs)
        results.append(result)
        print(format_matrix(result))
        print()
        result.plot(out / f"{name}.png")
    print(format_table(results))
    (out / "results.json").write_text(
        json.dumps([r.to_dict() for r in results], indent=1) + "\n"
    )
    print(f"\nwrote {out / 'results.json'} and "
          f"{', '.join(str(out / f'{n}.png') for n in DEMO_ESTIMATORS)}")
    return 0


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _cmd_bench(args) -> int:
    try:
        seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        raise _UsageError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
    if args.data is None and _data_options_given(args):
        raise _UsageError("--classes-per-task and --permuted go with --data FILE (so do "
                          "--target, --task-column, --drop and --impute)")
    if args.data and all(getattr(args, o) is None for o in _STREAM_OPTIONS):
        raise _UsageError("--data needs --task-column COLUMN, --classes-per-task K, "
                          "--permuted N or several of them")
    default_streams = [] if args.data else list(bench.DEFAULT_STREAMS)
    streams = default_streams if args.streams is None else _csv(args.streams)
    if args.data:
        streams += _data_streams(args)
    try:
        run = bench.run_bench(
            estimators="all" if args.estimators.strip() == "all" else _csv(args.estimators),
            streams=streams, scenarios=_csv(args.scenarios), seeds=seeds, epochs=args.epochs,
            params=_parse_params(args.param),
            settings=bench.load_settings(args.settings) if args.settings else None,
            device=args.device, threads=args.threads, backend=args.backend,
            n_jobs=args.n_jobs, scheduler=args.scheduler, out=args.out, restart=args.restart,
            progress=not args.quiet, tune=args.tune, tune_tasks=args.tune_tasks,
        )
    except bench.BenchError as exc:
        raise _UsageError(str(exc)) from None
    except OSError as exc:
        raise _UsageError(f"cannot write into {args.out}: {_one_line(exc)}") from None
    except KeyboardInterrupt:
        print(f"skcl bench: interrupted; finished cells are kept in "
              f"{Path(args.out) / bench.RESULTS_FILE}; run the same command to resume",
              file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"{len(run.ran)} cells run, {len(run.reused)} reused, {len(run.failed)} failed; "
              f"wrote {run.out / bench.RESULTS_FILE} and {run.report}")
    return 1 if run.failed else 0


def _add_data_options(parser: argparse.ArgumentParser, many: bool) -> None:
    """``--data`` and how to make streams of it (rules: :mod:`skcl.tabular`)."""
    which = "one of " if not many else "any of "
    parser.add_argument("--data", metavar="FILE",
                        help="your own data: .csv, .csv.gz, .parquet (needs pyarrow) or .npz "
                             f"(arrays X and y), with {which}--task-column, --classes-per-task, "
                             "--permuted")
    parser.add_argument("--target", metavar="COLUMN",
                        help="with --data: the label column (.npz: the label array, default y)")
    parser.add_argument("--task-column", metavar="COLUMN",
                        help="with --data: one experience per value of this column, in sorted "
                             "order")
    parser.add_argument("--classes-per-task", type=int, metavar="K",
                        help="with --data: a split stream of K classes per experience")
    parser.add_argument("--permuted", type=int, metavar="N",
                        help="with --data: a permuted stream of N experiences")
    parser.add_argument("--drop", metavar="COLUMNS",
                        help="with --data: comma-separated columns to leave out (ids, free text)")
    parser.add_argument("--impute", action="store_true",
                        help="with --data: fill missing numbers with the training median and "
                             "leave missing categories unset (default: missing values are an "
                             "error naming the column)")
    parser.add_argument("--split-seed", type=int, default=0, metavar="SEED",
                        help="with --data: seed of the stratified 70/30 train/test split "
                             "(default: %(default)s)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skcl", description="Continual learning that speaks "
                                     "scikit-learn.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list estimators and streams").set_defaults(func=_cmd_list)

    run = sub.add_parser("run", help="train one estimator over one stream")
    run.add_argument("--estimator", required=True, help="short or class name (see `skcl list`)")
    run.add_argument("--stream", help="stream name (see `skcl list`); or --data")
    _add_data_options(run, many=False)
    run.add_argument("--scenario", choices=SCENARIOS, default=None,
                     help="default: the stream's own scenario")
    run.add_argument("--epochs", type=int, default=None,
                     help="passes per experience (default: the estimator's max_epochs)")
    run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="estimator parameter, repeatable (e.g. learning_rate=0.01)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--json", help="write the result as JSON here")
    run.add_argument("--plot", help="write the heatmap and accuracy curves (PNG) here")
    run.add_argument("--quiet", action="store_true", help="print nothing")
    run.add_argument("--nproc", type=int, default=1, metavar="N",
                     help="train data-parallel in N processes on this machine (torchrun; "
                          "each trains its shard of every call, gloo on the CPU, NCCL with "
                          "one GPU each); rank 0 prints and writes --json and --plot "
                          "(default: %(default)s)")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="a few estimators over split-digits, side by side")
    demo.add_argument("--out", default="demo_output", help="folder for the JSON and PNGs")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    grid = sub.add_parser(
        "bench", help="a grid of estimators x streams x scenarios x seeds, with a report",
        description="Run every cell of the grid (resuming from the results already in --out), "
                    "then write results.json and REPORT.md with figures into --out.")
    grid.add_argument("--estimators", default="all",
                       help="comma-separated names, or 'all' (every skcl estimator, sgd, mlp); "
                            "naive is always included")
    grid.add_argument("--streams", default=None,
                       help="comma-separated stream names (default: split-digits,"
                            "permuted-digits, or none with --data)")
    _add_data_options(grid, many=True)
    grid.add_argument("--scenarios", default="class,task",
                       help="comma-separated; the no-task-id scenario is 'domain' on streams "
                            "whose experiences share their classes, 'class' otherwise "
                            "(default: %(default)s)")
    grid.add_argument("--seeds", default="0,1,2", help="comma-separated (default: %(default)s)")
    grid.add_argument("--epochs", type=int, default=5,
                       help="passes per experience (default: %(default)s)")
    grid.add_argument("--param", action="append", default=[], metavar="[EST.]KEY=VALUE",
                       help="estimator parameter, repeatable; EST. limits it to one estimator")
    grid.add_argument("--settings", metavar="FILE",
                       help="per-estimator, per-stream parameters (.json, or a .py defining "
                            "PROTOCOL and FAMILIES like benchmarks/bench_methods.py)")
    grid.add_argument("--tune", choices=("first-tasks", "validation"), default=None,
                       help="also run, for every estimator with a TUNING grid in --settings, a "
                            "row tuned on validation data under this protocol and an oracle "
                            "row tuned on test data (shown apart, reference only)")
    grid.add_argument("--tune-tasks", type=int, default=3, metavar="K",
                       help="experiences tuned on by --tune first-tasks (default: %(default)s)")
    grid.add_argument("--device", default="cpu",
                       help="device of the skcl estimators (default: %(default)s)")
    grid.add_argument("--threads", type=int, default=1,
                       help="threads per cell: torch, BLAS, OpenMP (default: %(default)s)")
    grid.add_argument("--backend", default="loky", choices=("loky", "serial", "dask"),
                       help="where cells run (default: %(default)s)")
    grid.add_argument("--n-jobs", type=int, default=None,
                       help="worker processes (loky, local dask cluster; default: CPUs)")
    grid.add_argument("--scheduler", metavar="ADDRESS",
                       help="Dask scheduler address (default: a LocalCluster)")
    grid.add_argument("--out", default="bench_output", help="folder for results and report")
    grid.add_argument("--restart", action="store_true",
                       help="ignore the results already in --out")
    grid.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    grid.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``skcl`` command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except _UsageError as exc:
        print(f"skcl: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`skcl list | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
