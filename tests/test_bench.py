"""skcl bench: the grid runner, its report, resuming, failures, backends, user data."""

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dask import distributed
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier

from skcl import bench, registry
from skcl.bench import BenchError, estimator_names, load_settings, run_bench, stream_scenarios
from skcl.cli import main
from skcl.datasets import Experience, TaskStream, load_permuted_digits, load_split_digits

TINY = ["--epochs", "1", "--param", "hidden_layer_sizes=(8,)", "--quiet"]
TINY_KW = dict(epochs=1, params={"hidden_layer_sizes": (8,)}, progress=False)


def _cells(out):
    return json.loads((out / "results.json").read_text())["cells"]


def _one_line_error(capsys, argv, start):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"skcl: error: {start}"), err
    assert err.count("\n") == 1


def test_tiny_grid_end_to_end(tmp_path, capsys):
    argv = ["bench", "--estimators", "naive,mlp", "--streams", "split-digits", "--scenarios",
            "class,task", "--seeds", "0", "--backend", "serial", "--out", str(tmp_path), *TINY]
    assert main(argv) == 0
    cells = _cells(tmp_path)
    assert [(c["estimator"], c["scenario"]) for c in cells] == [
        ("naive", "class"), ("mlp", "class"), ("naive", "task"), ("mlp", "task")]
    for cell in cells:
        assert cell["status"] == "ok" and cell["error"] is None
        assert np.asarray(cell["R"]).shape == (5, 5) and len(cell["forgetting"]) == 4
        assert {"acc", "bwt", "fwt", "train_seconds"} <= set(cell)
        assert set(cell["versions"]) == {"skcl", "torch", "sklearn", "numpy", "python"}
        assert cell["device"] == "cpu" and cell["stream"] == "split-digits" and cell["seed"] == 0
    mlp = cells[1]["params"]
    assert mlp["hidden_layer_sizes"] == [8] and mlp["learning_rate_init"] == 0.05
    assert cells[1]["estimator_class"] == "sklearn.neural_network.MLPClassifier"
    # the numbers each model predicts with: 64 -> 8 -> 10 weights and biases
    assert cells[1]["n_parameters"] == 64 * 8 + 8 + 8 * 10 + 10
    assert cells[0]["n_parameters"] == 64 * 8 + 8 + 8 * 10 + 10

    report = (tmp_path / "REPORT.md").read_text()
    assert "## split-digits, class-incremental" in report
    assert "## split-digits, task-incremental" in report
    assert ("| method | ACC | BWT | FWT | forgetting | train s | × Naive | params | seeds ok |"
            in report)
    assert "| sklearn MLP |" in report and "## Failed cells\n\nNone." in report
    links = [line[line.index("](") + 2:-1] for line in report.splitlines()
             if line.startswith("![")]
    assert len(links) == 4 and all(not link.startswith("/") for link in links)
    for link in links:
        assert (tmp_path / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_cell_is_reported_and_the_rest_kept(tmp_path, monkeypatch, capsys):
    def broken(self, X, task_id=None):
        raise RuntimeError("scores went missing")

    # Training passes (and so does the check before the grid); scoring fails in every cell.
    monkeypatch.setattr(SGDClassifier, "decision_function", broken)
    argv = ["bench", "--estimators", "naive,sgd", "--streams", "split-digits", "--scenarios",
            "task", "--seeds", "0,1", "--backend", "serial", "--out", str(tmp_path), *TINY]
    assert main(argv) == 1
    status = {c["id"]: c["status"] for c in _cells(tmp_path)}
    assert status == {"naive/split-digits/task/0": "ok", "naive/split-digits/task/1": "ok",
                      "sgd/split-digits/task/0": "failed", "sgd/split-digits/task/1": "failed"}
    failed = [c for c in _cells(tmp_path) if c["status"] == "failed"]
    assert all(c["error"] == "RuntimeError: scores went missing" for c in failed)
    assert all("Traceback" in c["traceback"] and "R" not in c for c in failed)
    report = (tmp_path / "REPORT.md").read_text()
    assert "| sklearn SGD | split-digits | task | 1 | RuntimeError: scores went missing" in report
    assert "| sklearn SGD | n/a | n/a | n/a | n/a | n/a | n/a | n/a | 0/2 |" in report


def test_interrupted_run_resumes_with_only_the_missing_cells(tmp_path, monkeypatch, capsys):
    grid = dict(estimators=["naive", "sgd"], streams=["split-digits"], scenarios=["class"],
                seeds=[0, 1], backend="serial", out=tmp_path, **TINY_KW)
    real, calls = bench._run_cell, []

    def interrupt_third(task, stream):
        calls.append(task.id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, stream)

    monkeypatch.setattr(bench, "_run_cell", interrupt_third)
    argv = ["bench", "--estimators", "naive,sgd", "--streams", "split-digits", "--scenarios",
            "class", "--seeds", "0,1", "--backend", "serial", "--out", str(tmp_path), *TINY]
    assert main(argv) == 130
    assert "run the same command to resume" in capsys.readouterr().err
    kept = {c["id"]: c["finished_at"] for c in _cells(tmp_path)}
    assert list(kept) == ["naive/split-digits/class/0", "naive/split-digits/class/1"]

    monkeypatch.setattr(bench, "_run_cell", real)
    run = run_bench(**grid)
    assert run.reused == list(kept)
    assert run.ran == ["sgd/split-digits/class/0", "sgd/split-digits/class/1"]
    assert {c["id"]: c["finished_at"] for c in run.cells if c["id"] in kept} == kept

    # A cell lost from results.json is the only one run again; other settings re-run all.
    data = json.loads((tmp_path / "results.json").read_text())
    data["cells"] = [c for c in data["cells"] if c["id"] != "naive/split-digits/class/1"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert run_bench(**grid).ran == ["naive/split-digits/class/1"]
    assert len(run_bench(**{**grid, "epochs": 2}).ran) == 4


@pytest.fixture(scope="module")
def serial_R(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    run = run_bench(["naive", "mlp"], ["split-digits"], ["class"], [0, 1], backend="serial",
                    out=out, **TINY_KW)
    return {c["id"]: c["R"] for c in run.cells}


def test_loky_backend_gives_the_serial_results(tmp_path, serial_R):
    run = run_bench(["naive", "mlp"], ["split-digits"], ["class"], [0, 1], backend="loky",
                    n_jobs=2, out=tmp_path, **TINY_KW)
    assert {c["id"]: c["R"] for c in run.cells} == serial_R


# dask is imported at the top of this module: without it (it is in the dev extra) these
# tests fail rather than skip. One in-process worker keeps them quick.
@pytest.fixture(scope="module")
def dask_scheduler():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_dask_cluster_gives_the_serial_results(tmp_path, serial_R, dask_scheduler):
    run = run_bench(["naive", "mlp"], ["split-digits"], ["class"], [0, 1], backend="dask",
                    scheduler=dask_scheduler, out=tmp_path, **TINY_KW)
    assert {c["id"]: c["R"] for c in run.cells} == serial_R
    assert json.loads((tmp_path / "results.json").read_text())["grid"]["backend"] == "dask"


def test_dask_on_a_finished_grid_runs_nothing_and_rewrites_the_report(tmp_path, capsys):
    argv = ["bench", "--estimators", "naive", "--streams", "split-digits", "--scenarios",
            "task", "--seeds", "0", "--out", str(tmp_path), *TINY]
    assert main([*argv, "--backend", "serial"]) == 0
    (tmp_path / "REPORT.md").unlink()
    before = _cells(tmp_path)
    assert main([*argv, "--backend", "dask", "--n-jobs", "1"]) == 0
    assert _cells(tmp_path) == before
    assert "## split-digits, task-incremental" in (tmp_path / "REPORT.md").read_text()


def test_an_unreachable_scheduler_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "SCHEDULER_TIMEOUT", 0.5)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    argv = ["bench", "--estimators", "naive", "--streams", "split-digits", "--seeds", "0",
            "--backend", "dask", "--scheduler", address, "--out", str(tmp_path), *TINY]
    _one_line_error(capsys, argv, f"cannot reach the Dask scheduler at '{address}' within 0.5 s")


def test_user_npz_data_split_and_permuted(tmp_path, capsys):
    digits = load_digits()
    keep = digits.target < 4
    np.savez(tmp_path / "mine.npz", X=digits.data[keep] / 16.0, y=digits.target[keep])
    argv = ["bench", "--data", str(tmp_path / "mine.npz"), "--classes-per-task", "2",
            "--permuted", "3", "--estimators", "naive", "--scenarios", "class,task",
            "--seeds", "0", "--backend", "serial", "--out", str(tmp_path / "out"), *TINY]
    assert main(argv) == 0
    cells = _cells(tmp_path / "out")
    assert [(c["stream"], c["scenario"], len(c["R"])) for c in cells] == [
        ("mine-split", "class", 2), ("mine-split", "task", 2),
        ("mine-permuted", "domain", 3), ("mine-permuted", "task", 3)]
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "- 'class' runs as 'domain' on mine-permuted" in report


def test_user_csv_data_by_task_column_and_by_classes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    digits = load_digits()
    keep = digits.target < 4
    table = pd.DataFrame(digits.data[keep][:, 20:28], columns=[f"p{i}" for i in range(8)])
    table["shade"] = np.where(digits.data[keep][:, 36] > 8, "dark", "light")
    table["digit"] = digits.target[keep]
    table["batch"] = rng.choice(["first", "second"], size=len(table))
    table.loc[::11, "p3"] = np.nan
    table.to_csv(tmp_path / "digits.csv", index=False)
    argv = ["bench", "--data", str(tmp_path / "digits.csv"), "--target", "digit",
            "--task-column", "batch", "--classes-per-task", "2", "--impute", "--estimators",
            "naive", "--scenarios", "class,task", "--seeds", "0", "--backend", "serial",
            "--out", str(tmp_path / "out"), *TINY]
    assert main(argv) == 0
    cells = _cells(tmp_path / "out")
    assert [(c["stream"], c["scenario"], len(c["R"])) for c in cells] == [
        ("digits-tasks", "domain", 2), ("digits-tasks", "task", 2),
        ("digits-split", "class", 2), ("digits-split", "task", 2)]
    assert all(c["status"] == "ok" for c in cells)
    # The same command again: the same streams (split from the same seed), nothing to run.
    assert main(argv) == 0
    assert _cells(tmp_path / "out") == cells


def test_settings_file_in_bench_methods_format(tmp_path, capsys):
    settings = tmp_path / "settings.py"
    settings.write_text(textwrap.dedent("""
        PROTOCOL = dict(hidden_layer_sizes=(8,), batch_size=64)
        FAMILIES = {"regularization": [
            ("online EWC", "EWCClassifier", {"*": {"mode": "online", "ewc_lambda": 2.0}}),
            ("EWC", "EWCClassifier",
             {"*": {"ewc_lambda": 3.0}, "split-digits": {"ewc_lambda": 5.0}}),
        ]}
        NOTES = {"regularization": ["EWC lambda 5 on split-digits, for a test."]}
    """))
    argv = ["bench", "--estimators", "ewc,online-ewc", "--streams", "split-digits",
            "--scenarios", "task", "--seeds", "0", "--settings", str(settings), "--backend",
            "serial", "--epochs", "1", "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 0
    cells = _cells(tmp_path / "out")
    params = {c["estimator"]: c["params"] for c in cells}
    assert params["ewc"]["ewc_lambda"] == 5.0 and params["ewc"]["batch_size"] == 64
    assert params["online-ewc"]["mode"] == "online" and params["online-ewc"]["ewc_lambda"] == 2.0
    assert {c["estimator_class"] for c in cells[1:]} == {"skcl.EWCClassifier"}
    assert params["naive"]["hidden_layer_sizes"] == [8] and "ewc_lambda" not in params["naive"]
    report = (tmp_path / "out/REPORT.md").read_text()
    assert "- EWC lambda 5 on split-digits, for a test." in report
    assert "| online EWC |" in report and "| EWC |" in report


def test_a_settings_row_can_be_limited_to_some_scenarios(tmp_path):
    settings = tmp_path / "settings.py"
    settings.write_text(textwrap.dedent("""
        PROTOCOL = dict(hidden_layer_sizes=(8,))
        FAMILIES = {"baselines": [
            ("MultiHead", "MultiHeadClassifier", {}),
            ("MultiHead, per batch", "MultiHeadClassifier",
             {"*": {"batch_size": 16}, "scenarios": ("class", "domain")}),
        ]}
    """))
    loaded = load_settings(settings)
    assert loaded["variants"]["multihead-per-batch"]["scenarios"] == ["class", "domain"]
    assert "scenarios" not in loaded["estimators"]["multihead-per-batch"]
    assert "scenarios" not in loaded["variants"]["multihead"]
    run = run_bench(["multihead", "multihead-per-batch"], ["split-digits"], ["class", "task"],
                    seeds=[0], out=tmp_path / "out", settings=loaded, backend="serial",
                    **{**TINY_KW, "params": {}})
    ran = sorted((c["estimator"], c["scenario"]) for c in run.cells)
    assert ran == [("multihead", "class"), ("multihead", "task"),
                   ("multihead-per-batch", "class"), ("naive", "class"), ("naive", "task")]
    by_row = {(c["estimator"], c["scenario"]): c for c in run.cells}
    assert by_row["multihead-per-batch", "class"]["params"]["batch_size"] == 16


def test_bench_methods_settings_name_only_skcl_estimators():
    settings = load_settings(Path(__file__).parents[1] / "benchmarks" / "bench_methods.py")
    known = set(estimator_names())
    classes = {v["estimator"] for v in settings["variants"].values()}
    assert settings["estimators"] and classes <= known


def test_scenario_rule():
    split, permuted = load_split_digits(), load_permuted_digits(n_experiences=3)
    assert stream_scenarios(split, ["class", "task"]) == (["class", "task"], [])
    assert stream_scenarios(split, ["domain", "class"])[0] == ["class"]
    scenarios, notes = stream_scenarios(permuted, ["class", "task", "domain"])
    assert scenarios == ["domain", "task"]
    assert notes == ["'class' runs as 'domain' on permuted-digits (every experience holds the "
                     "same classes)."]
    exp = split[0]
    shared = TaskStream([exp, Experience(exp.X_train, exp.y_train, exp.X_test, exp.y_test, 0,
                                         exp.classes)], name="shared")
    assert stream_scenarios(shared, ["task", "domain"]) == (
        ["domain"], ["'task' skipped on shared: its experiences share task ids."])
    with pytest.raises(BenchError, match="unknown scenario 'tasks'"):
        stream_scenarios(split, ["tasks"])


def test_all_is_every_estimator_on_main_and_the_sklearn_baselines():
    names = estimator_names()
    assert names[:2] == ["naive", "joint"] and names[-2:] == ["sgd", "mlp"]
    assert names == [*registry.names(), "sgd", "mlp"]


def test_a_registry_alias_names_its_estimator_in_the_grid(tmp_path):
    run = run_bench(["finetune", "ExperienceReplay"], ["split-digits"], ["task"], [0],
                    backend="serial", out=tmp_path, **TINY_KW)
    assert [c["estimator"] for c in run.cells] == ["naive", "replay"]


@pytest.mark.parametrize("extra, start", [
    (["--estimators", "nope"], "unknown estimator 'nope'; valid: all, naive, joint"),
    (["--streams", "nope"], "unknown stream 'nope'"),
    (["--param", "bogus=1"], "no estimator of the grid has parameter bogus"),
    (["--param", "naive.bogus=1"], "NaiveClassifier has no parameter bogus; valid:"),
    (["--param", "ewc.ewc_lambda=1"], "--param ewc.ewc_lambda: 'ewc' is not in the grid"),
    (["--param", "random_state=3"], "random_state comes from --seeds"),
    (["--permuted", "3"], "--classes-per-task and --permuted go with --data"),
    (["--data", "missing.npz", "--permuted", "2"], "cannot read missing.npz"),
    (["--data", "x.npz"], "--data needs --task-column COLUMN, --classes-per-task K, "),
    (["--data", "x.csv", "--permuted", "2"], "x.csv: name the label column (--target COLUMN)"),
    (["--scheduler", "tcp://x:1"], "--scheduler is for --backend dask"),
    (["--estimators", "naive,sgd", "--param", "sgd.alpha=-1.0"],
     "sgd on split-digits: SGDClassifier: The 'alpha' parameter of SGDClassifier must be"),
    (["--param", "learning_rate=-1"], "naive on split-digits: NaiveClassifier: The 'learning_"),
    (["--device", "tpu"], "naive on split-digits: NaiveClassifier: "),
    (["--seeds", "0,a"], "--seeds takes comma-separated integers"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_grid_errors_are_one_line(tmp_path, capsys, extra, start):
    argv = ["bench", "--estimators", "naive", "--streams", "split-digits", "--out",
            str(tmp_path), "--quiet"]
    _one_line_error(capsys, argv + extra, start)
    assert not (tmp_path / "results.json").exists()


def test_skcl_does_not_import_dask_and_a_missing_dask_is_one_line(tmp_path):
    code = textwrap.dedent("""
        import sys
        import skcl, skcl.bench, skcl.cli, skcl.report
        assert not [m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")]
        sys.modules["dask"] = None
        sys.exit(skcl.cli.main(["bench", "--backend", "dask", "--out", sys.argv[1]]))
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("skcl: error: the dask backend needs dask.distributed")
    assert "pip install 'skcl[dask]'" in proc.stderr and proc.stderr.count("\n") == 1


def test_methods_with_a_head_per_task_report_their_task_inference(tmp_path, capsys):
    argv = ["bench", "--estimators", "naive,multihead", "--streams", "split-digits",
            "--scenarios", "class,task", "--seeds", "0", "--backend", "serial",
            "--out", str(tmp_path), *TINY]
    assert main(argv) == 0
    cells = {(c["estimator"], c["scenario"]): c for c in _cells(tmp_path)}
    assert cells["naive", "class"]["task_inference"] is None
    assert cells["multihead", "task"]["task_inference"] is None
    inferred = cells["multihead", "class"]["task_inference"]
    assert 0.0 < inferred < 1.0
    # without task ids a multi-head model answers from one head: ACC cannot exceed the
    # share of rows whose own head answered
    assert cells["multihead", "class"]["acc"] <= inferred + 1e-12
    report = (tmp_path / "REPORT.md").read_text()
    class_table = report.split("## split-digits, class-incremental")[1].split("## ")[0]
    assert "| task inference |" in class_table
    assert f"| {inferred:.3f} |" in class_table
    task_table = report.split("## split-digits, task-incremental")[1].split("## ")[0]
    assert "task inference" not in task_table
