"""The skcl command line: names, user errors, data files; the package's import graph."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import skcl
from skcl import registry
from skcl.cli import main

PACKAGE = Path(skcl.__file__).parent
TINY = ["--epochs", "1", "--param", "hidden_layer_sizes=(8,)", "--quiet"]


def test_list_names_every_estimator_and_stream(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in registry.names():
        assert f"  {name} " in out
    assert "split-digits" in out and "permuted-digits" in out
    assert "(also: finetune)" in out


def test_registry_names_are_unique_and_every_spelling_finds_its_entry():
    keys = [key for entry in registry.ENTRIES for key in entry.keys()]
    assert len(keys) == len(set(keys))
    for entry in registry.ENTRIES:
        assert entry.name == entry.name.lower()
        for spelling in (entry.name, entry.cls, entry.cls.upper(), *entry.aliases):
            assert registry.get(spelling) is entry
    with pytest.raises(registry.UnknownEstimatorError, match="unknown estimator 'nope'"):
        registry.get("nope")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """skcl module -> the skcl modules it imports, at module level or inside functions.

    Walks every import statement of every module's source; ``from skcl import x``
    is an edge to ``skcl.x`` when that is a module (compiled ones included), else
    to ``skcl``. The import of a parent package implied by ``import a.b`` is not
    an edge: Python finishes it before the module's own imports run.
    """
    files = list(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    compiled = {f"skcl.{f.name.split('.')[0]}" for f in PACKAGE.glob("*.so")}
    modules |= compiled
    graph = {name: set() for name in compiled}
    for path in files:
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                              else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Every elementary cycle found by depth-first search, rotated to start at its least name."""
    found, state, path = set(), {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):]
                i = cycle.index(min(cycle))
                found.add(tuple(cycle[i:] + cycle[:i]))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_package_has_no_import_cycles():
    graph = _import_graph()
    assert {"skcl.cli", "skcl.bench", "skcl._bench_grid", "skcl.registry"} <= set(graph)
    assert "skcl.cli" not in graph["skcl._bench_grid"] | graph["skcl.bench"]
    assert _cycles(graph) == set()


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == {("a", "b", "c")}


def test_one_scenarios_constant():
    import skcl._bench_grid
    import skcl.cli
    import skcl.datasets
    import skcl.evaluation

    assert skcl.cli.SCENARIOS is skcl._bench_grid.SCENARIOS is skcl.datasets.SCENARIOS
    assert skcl.evaluation.SCENARIOS is skcl.datasets.SCENARIOS


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--estimator", "nope", "--stream", "split-digits"],
         "skcl: error: unknown estimator 'nope'; valid: "),
        (["run", "--estimator", "naive", "--stream", "nope"],
         "skcl: error: unknown stream 'nope'; valid: permuted-digits, split-digits"),
        (["run", "--estimator", "naive", "--stream", "split-digits", "--param", "bogus=1"],
         "skcl: error: NaiveClassifier has no parameter bogus"),
    ],
    ids=["estimator", "stream", "param"],
)
def test_unknown_names_give_one_line_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert err.count("\n") == 1
    if "estimator" in message:
        assert "naive" in err and "joint" in err


def test_run_prints_matrix_and_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(["run", "--estimator", "NaiveClassifier", "--stream", "split-digits",
                 "--scenario", "task", "--epochs", "1", "--param", "hidden_layer_sizes=(32,)",
                 "--json", str(out_json), "--plot", str(out_png)])
    assert code == 0
    out = capsys.readouterr().out
    assert "R[i, j] for NaiveClassifier on split-digits (task)" in out
    assert "| NaiveClassifier | split-digits | task |" in out
    data = json.loads(out_json.read_text())
    assert data["scenario"] == "task" and len(data["R"]) == 5
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_dash_m_runs_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "skcl", "run", "--estimator", "x",
                           "--stream", "split-digits"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("skcl: error: unknown estimator 'x'")


def test_demo_writes_results_and_plots(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "| estimator | stream | scenario | ACC | BWT | FWT |" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["estimator"] for r in results][0] == "NaiveClassifier"
    assert len(list(tmp_path.glob("*.png"))) == len(results)


@pytest.mark.parametrize("param, word", [
    ("learning_rate=-1", "'learning_rate'"),
    ("hidden_layer_sizes=abc", "hidden_layer_sizes"),
    ("device=tpu", "device"),
    pytest.param("device=cuda", "no CUDA device is available",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")),
])
def test_parameters_the_estimator_rejects_are_one_line(capsys, param, word):
    argv = ["run", "--estimator", "naive", "--stream", "split-digits", *TINY, "--param", param]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("skcl: error: NaiveClassifier: ") and word in err, err
    assert err.count("\n") == 1


def test_an_alias_names_its_estimator_and_a_bad_output_folder_fails_first(tmp_path, capsys):
    argv = ["run", "--estimator", "finetune", "--stream", "split-digits", *TINY]
    assert main([*argv, "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["estimator"] == "NaiveClassifier"
    assert main([*argv, "--json", str(tmp_path / "no" / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skcl: error: --json ") and "does not exist" in err
    assert err.count("\n") == 1


def _zoo(n_per_class: int = 15) -> pd.DataFrame:
    """Four animals over two years, with a number column, a text column and gaps."""
    rng = np.random.default_rng(0)
    animals = np.repeat(["cat", "dog", "eel", "fox"], n_per_class)
    index = np.repeat(np.arange(4), n_per_class)
    height = (index * 3.0 + rng.normal(size=len(index))).round(2)
    height[::7] = np.nan
    return pd.DataFrame({
        "id": np.arange(len(index)),
        "weight": index * 10.0 + rng.normal(size=len(index)),
        "height": height,
        "colour": np.array(["red", "green", "blue", "red"])[index],
        "animal": animals,
        "year": np.where(index < 2, 2020, 2021),
    })


@pytest.fixture
def zoo_csv(tmp_path):
    path = tmp_path / "zoo.csv"
    _zoo().to_csv(path, index=False)
    return path


def test_run_on_a_csv_file_by_task_column(zoo_csv, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["run", "--estimator", "naive", "--data", str(zoo_csv), "--target", "animal",
            "--task-column", "year", "--drop", "id", "--impute", "--json", str(out), *TINY]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["stream"] == "zoo-tasks" and result["scenario"] == "class"
    assert np.asarray(result["R"]).shape == (2, 2)

    assert main([a for a in argv if a != "--impute"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skcl: error: ") and "column 'height' has 9 missing values" in err
    assert "--impute" in err and err.count("\n") == 1


def test_run_on_a_parquet_file(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow is in the dev extra")
    path = tmp_path / "zoo.parquet"
    _zoo().to_parquet(path)
    argv = ["run", "--estimator", "naive", "--data", str(path), "--target", "animal",
            "--classes-per-task", "2", "--impute", "--json", str(tmp_path / "r.json"), *TINY]
    assert main(argv) == 0
    assert json.loads((tmp_path / "r.json").read_text())["stream"] == "zoo-split"


def test_parquet_without_pyarrow_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "zoo.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    argv = ["run", "--estimator", "naive", "--data", str(tmp_path / "zoo.parquet"),
            "--target", "animal", "--permuted", "2", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs pyarrow: pip install pyarrow" in err and err.count("\n") == 1


@pytest.mark.parametrize("extra, start", [
    (["--target", "nope", "--task-column", "year"], "zoo.csv has no column 'nope'; columns: id,"),
    (["--target", "weight", "--task-column", "year"], "target column 'weight' holds continuous"),
    (["--target", "animal"], "--data needs one of --task-column COLUMN, --classes-per-task K"),
    (["--target", "animal", "--classes-per-task", "2", "--permuted", "2"], "--data needs one"),
    (["--task-column", "year"], "zoo.csv: name the label column (--target COLUMN)"),
    (["--target", "animal", "--task-column", "year", "--drop", "height,colour"], ""),
], ids=["column", "continuous", "no-stream", "two-streams", "no-target", "dropped"])
def test_data_errors_are_one_line(zoo_csv, capsys, extra, start):
    argv = ["run", "--estimator", "naive", "--data", str(zoo_csv), *extra, *TINY]
    if not start:  # dropping the column with gaps leaves no error
        assert main(argv) == 0
        return
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert start in err and err.startswith("skcl: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, start", [
    (["--stream", "split-digits", "--target", "y"], "--target, --task-column, --classes-per-"),
    (["--data", "x.txt", "--permuted", "2"], "x.txt: unknown file type"),
    (["--data", "missing.csv", "--target", "y", "--permuted", "2"], "cannot read missing.csv"),
    ([], "give one of --stream NAME and --data FILE"),
], ids=["data-option-without-data", "file-type", "missing-file", "no-stream"])
def test_run_stream_errors_are_one_line(capsys, argv, start):
    assert main(["run", "--estimator", "naive", *argv, *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"skcl: error: {start}"), err
    assert err.count("\n") == 1


@pytest.fixture
def four_digits(tmp_path):
    """digits 0-3 as an .npz: with --classes-per-task 2, a stream of two experiences."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    path = tmp_path / "digits4.npz"
    np.savez(path, X=(X[y < 4] / 16).astype(np.float32), y=y[y < 4])
    return path


def test_nproc_2_trains_as_one_process_and_only_rank_0_reports(four_digits, tmp_path, capfd):
    argv = ["run", "--estimator", "naive", "--data", str(four_digits), "--classes-per-task",
            "2", "--epochs", "1", "--param", "hidden_layer_sizes=(16,)", "--param",
            "batch_size=16"]
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main([*argv, "--quiet", "--json", str(one)]) == 0
    capfd.readouterr()
    assert main([*argv, "--nproc", "2", "--json", str(two)]) == 0
    out = capfd.readouterr().out
    assert out.count("R[i, j] for NaiveClassifier") == 1
    assert out.count("| NaiveClassifier |") == 1
    alone, ranks = json.loads(one.read_text()), json.loads(two.read_text())
    assert len(ranks["R"]) == 2
    # Same global mini-batch, so the same model: every test prediction agrees.
    np.testing.assert_allclose(ranks["R"], alone["R"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ranks["b"], alone["b"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("extra, start", [
    (["--nproc", "0"], "--nproc must be a positive integer, got 0"),
    (["--nproc", "2", "--param", "distributed=off"], "--nproc 2 trains data-parallel, but "
                                                     "distributed='off'"),
    (["--nproc", "2", "--param", "device=cuda:0"], "--nproc 2 gives each process its own GPU"),
], ids=["zero", "distributed-off", "one-gpu-named"])
def test_nproc_errors_are_one_line(capsys, extra, start):
    assert main(["run", "--estimator", "naive", "--stream", "split-digits", *TINY, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"skcl: error: {start}"), err
    assert err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="two GPUs are here")
def test_nproc_on_gpus_needs_one_gpu_per_process(capsys):
    argv = ["run", "--estimator", "naive", "--stream", "split-digits", *TINY]
    assert main([*argv, "--nproc", "2", "--param", "device=cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skcl: error: --nproc 2 with device=cuda needs 2 GPUs, one per "
                          f"process; {torch.cuda.device_count()} found"), err


@pytest.mark.parametrize("argv", [
    ["run", "--nproc", "2", "--seed", "1"], ["run", "--nproc=2", "--seed", "1"],
    ["run", "--npr", "2", "--seed", "1"], ["run", "--seed", "1", "--nproc", "2"],
])
def test_the_launched_ranks_get_the_command_without_nproc(argv):
    # torchrun's parser would read --nproc as an ambiguous --nproc-per-node.
    assert skcl.cli._without_nproc(argv) == ["run", "--seed", "1"]
