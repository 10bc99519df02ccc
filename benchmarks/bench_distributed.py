"""Data-parallel scaling (skcl.distributed): samples per second of 1 and 2 processes.

A configuration where compute dominates: an MLP 256-1024-1024 over synthetic
256-feature data (4 tasks of 2 new classes, 1024 training samples each,
2 epochs), global mini-batch 256, every process on one thread (the fair
comparison on a 2-core machine: 2 processes x 1 thread against 1 x 1).

Each launch trains Naive, EWC, Replay and GEM in turn, in 1 process or in 2
gloo processes each passing its half of every call; launches alternate
(1, 2, 1, 2, ...) so that a change in the machine's load hits both, and the
report takes medians over the repeats. For each method it records:

- throughput: training samples (all ranks') per wall second of the
  ``partial_fit`` and ``end_task`` calls, between barriers;
- efficiency: speed-up over 1 process divided by 2;
- communication share: the time spent inside the collective calls the
  estimator makes (``TorchDistributed.all_reduce``, ``all_gather``,
  ``all_gather_object``, wrapped with timers here), over the total; waiting
  for the slower rank is counted there;
- CPU efficiency: 1 process's CPU seconds over the 2 processes' sum, which
  an equal load on the machine does not move: below 1 by the work each rank
  repeats (penalties, projections, the gathered calls) and by communication.

Run: ``.venv/bin/python benchmarks/bench_distributed.py [--repeats 5]``; writes
``benchmarks/results/distributed_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "distributed_cpu"
N_FEATURES, HIDDEN, BATCH = 256, (1024, 1024), 256
N_TASKS, N_TRAIN, EPOCHS, CLASSES_PER_TASK = 4, 1024, 2, 2
#: label -> (class, parameters beyond the shared ones).
METHODS = {
    "Naive": ("NaiveClassifier", {}),
    "EWC": ("EWCClassifier", {}),
    "Replay": ("ReplayClassifier", {"memory_size": 512}),
    "GEM": ("GEMClassifier", {"memory_size": 512}),
}
GOALS = {"Naive": 0.8, "EWC": 0.8, "Replay": 0.7, "GEM": 0.7}


def _stream():
    """Synthetic tasks: 2 new classes each, Gaussian clusters in 256 dimensions."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(N_TASKS * CLASSES_PER_TASK, N_FEATURES)).astype(np.float32)
    tasks = []
    for t in range(N_TASKS):
        y = t * CLASSES_PER_TASK + rng.integers(0, CLASSES_PER_TASK, N_TRAIN)
        X = centers[y] + 2.0 * rng.normal(size=(N_TRAIN, N_FEATURES)).astype(np.float32)
        tasks.append((t, X, y))
    return tasks


class _Timed:
    """Wall and CPU seconds spent inside each wrapped method of TorchDistributed (CPU
    seconds close to the wall seconds: the waiting spins)."""

    def __init__(self):
        from skcl.distributed import TorchDistributed

        self.seconds = self.cpu_seconds = 0.0
        for name in ("all_reduce", "all_gather", "all_gather_object"):
            setattr(TorchDistributed, name, self._wrap(getattr(TorchDistributed, name)))

    def _wrap(self, method):
        def timed(comm, *args):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return method(comm, *args)
            finally:
                self.seconds += time.perf_counter() - start
                self.cpu_seconds += time.process_time() - cpu
        return timed


def worker(out: str) -> None:
    """One launch: every method once, in this process (and its peer, under WORLD_SIZE=2)."""
    import skcl

    torch.set_num_threads(1)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    barrier = torch.distributed.barrier if world > 1 else (lambda: None)
    timer = _Timed()
    tasks = _stream()
    shared = dict(hidden_layer_sizes=HIDDEN, batch_size=BATCH, device="cpu", random_state=0)

    def train(clf, tasks, epochs):
        for task, X, y in tasks:
            rows = np.array_split(np.arange(len(y)), world)[rank]
            for _ in range(epochs):
                clf.partial_fit(X[rows], y[rows], task_id=task)
            clf.end_task()

    train(skcl.NaiveClassifier(**shared), [(0, X[:512], y[:512]) for _, X, y in tasks[:1]], 1)
    records = {}
    for label, (name, params) in METHODS.items():
        clf = getattr(skcl, name)(**shared, **params)
        barrier()
        timer.seconds = timer.cpu_seconds = 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        train(clf, tasks, EPOCHS)
        cpu = time.process_time() - cpu
        barrier()
        records[label] = {"seconds": time.perf_counter() - wall, "cpu_seconds": cpu,
                          "comm_seconds": timer.seconds, "comm_cpu_seconds": timer.cpu_seconds,
                          "accuracy": float(np.mean([clf.score(X, y) for _, X, y in tasks]))}
    with open(Path(out) / f"rank{rank}.json", "w") as f:
        json.dump(records, f)
    if world > 1:
        torch.distributed.destroy_process_group()


def probe() -> None:
    """``--probe``: the parts of one step, timed alone (run it in 1 process, then in 2 with
    WORLD_SIZE/RANK/MASTER_* set): forward + backward of the MLP on 256 and 128 rows, and
    one all-reduce of its gradient, medians of 15 and 20."""
    torch.set_num_threads(1)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    net = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, HIDDEN[0]), torch.nn.ReLU(),
                              torch.nn.Linear(*HIDDEN), torch.nn.ReLU(),
                              torch.nn.Linear(HIDDEN[1], N_TASKS * CLASSES_PER_TASK))

    def step(rows):
        net.zero_grad()
        x, y = torch.randn(rows, N_FEATURES), torch.randint(0, 8, (rows,))
        torch.nn.functional.cross_entropy(net(x), y).backward()

    def median_ms(fn, n):
        fn()
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    for rows in (BATCH, BATCH // 2):
        print(f"rank {rank}/{world}: forward+backward on {rows} rows "
              f"{median_ms(lambda r=rows: step(r), 15):.1f} ms", flush=True)
    if world > 1:
        torch.distributed.init_process_group("gloo")
        flat = torch.zeros(sum(p.numel() for p in net.parameters()) + 1)
        print(f"rank {rank}/{world}: all_reduce of {flat.numel()} floats "
              f"{median_ms(lambda: torch.distributed.all_reduce(flat), 20):.1f} ms", flush=True)
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(nproc: int, folder: Path) -> list[dict]:
    """Run one launch in ``nproc`` processes; every rank's records."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()))
    command = [sys.executable, __file__, "--worker", str(folder)]
    extra = [] if nproc == 1 else [{"RANK": str(r), "WORLD_SIZE": str(nproc)}
                                   for r in range(nproc)]
    processes = [subprocess.Popen(command, env={**env, **e}) for e in (extra or [{}])]
    for process in processes:
        if process.wait(timeout=1800) != 0:
            raise RuntimeError(f"a {nproc}-process launch failed")
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in range(nproc)]


def _summary(runs: dict[int, list[list[dict]]]) -> dict:
    samples = N_TASKS * N_TRAIN * EPOCHS
    out = {}
    for label in METHODS:
        one = [ranks[0][label] for ranks in runs[1]]
        two = [ranks for ranks in runs[2]]
        t1 = statistics.median(r["seconds"] for r in one)
        t2 = statistics.median(max(r[label]["seconds"] for r in ranks) for ranks in two)
        comm = statistics.median(
            np.mean([r[label]["comm_seconds"] / r[label]["seconds"] for r in ranks])
            for ranks in two)
        comm_cpu = statistics.median(
            np.mean([r[label]["comm_cpu_seconds"] / max(r[label]["cpu_seconds"], 1e-9)
                     for r in ranks]) for ranks in two)
        cpu1 = statistics.median(r["cpu_seconds"] for r in one)
        cpu2 = statistics.median(sum(r[label]["cpu_seconds"] for r in ranks) for ranks in two)
        out[label] = {
            "samples_per_second_1": samples / t1, "samples_per_second_2": samples / t2,
            "seconds_1": t1, "seconds_2": t2, "speedup": t1 / t2, "efficiency": t1 / t2 / 2,
            "comm_share_2": float(comm), "comm_cpu_share_2": float(comm_cpu),
            "cpu_seconds_1": cpu1, "cpu_seconds_2": cpu2,
            "cpu_efficiency": cpu1 / cpu2, "goal": GOALS[label],
            "accuracy_1": one[0]["accuracy"], "accuracy_2": two[0][0][label]["accuracy"],
            "seconds_1_all": [r["seconds"] for r in one],
            "seconds_2_all": [max(r[label]["seconds"] for r in ranks) for ranks in two],
        }
    return out


def _markdown(summary: dict, meta: dict) -> str:
    lines = [
        "# Data-parallel scaling on CPU (skcl.distributed, gloo)", "",
        f"MLP {N_FEATURES}-{'-'.join(map(str, HIDDEN))}, global batch {BATCH}, {N_TASKS} tasks "
        f"x {N_TRAIN} synthetic samples x {EPOCHS} epochs, one thread per process; "
        f"medians of {meta['repeats']} alternating launches (1, 2, 1, 2, ...). "
        f"Machine: {meta['machine']}; load average before / after: {meta['load_before']} / "
        f"{meta['load_after']} (other engineers' jobs shared the cores).", "",
        "| method | samples/s, 1 proc | samples/s, 2 procs | speed-up | efficiency | goal | "
        "comm. share | CPU efficiency | CPU in collectives | accuracy 1 / 2 procs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, s in summary.items():
        met = "met" if s["efficiency"] >= s["goal"] else "missed"
        lines.append(
            f"| {label} | {s['samples_per_second_1']:.0f} | {s['samples_per_second_2']:.0f} | "
            f"{s['speedup']:.2f} | {s['efficiency']:.2f} | >= {s['goal']} ({met}) | "
            f"{s['comm_share_2']:.0%} | {s['cpu_efficiency']:.2f} | {s['comm_cpu_share_2']:.0%} | "
            f"{s['accuracy_1']:.3f} / {s['accuracy_2']:.3f} |")
    lines += ["", "Seconds of every launch (1 proc; 2 procs, slower rank):", ""]
    for label, s in summary.items():
        lines.append(f"- {label}: {', '.join(f'{x:.1f}' for x in s['seconds_1_all'])}; "
                     f"{', '.join(f'{x:.1f}' for x in s['seconds_2_all'])}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--probe", action="store_true", help=probe.__doc__.splitlines()[0])
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.probe:
        probe()
        return
    load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    scratch = Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    runs: dict[int, list] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for nproc in (1, 2):
            runs[nproc].append(_launch(nproc, scratch / f"{repeat}-{nproc}"))
            print(f"repeat {repeat}, {nproc} process(es): "
                  + ", ".join(f"{k} {max(r[k]['seconds'] for r in runs[nproc][-1]):.1f}s"
                              for k in METHODS), flush=True)
    meta = {"repeats": args.repeats, "load_before": load_before,
            "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
            "torch": torch.__version__}
    summary = _summary(runs)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "runs": {str(k): v for k, v in runs.items()}},
        indent=1) + "\n")
    OUT.with_suffix(".md").write_text(_markdown(summary, meta))
    print(OUT.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
