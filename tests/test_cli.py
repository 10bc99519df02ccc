"""The skcl command line."""

import json
import subprocess
import sys

import pytest

from skcl.cli import estimators, main


def test_list_names_every_estimator_and_stream(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for short in estimators():
        assert f"  {short} " in out
    assert "split-digits" in out and "permuted-digits" in out


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
