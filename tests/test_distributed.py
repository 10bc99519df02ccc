"""Data-parallel training (skcl.distributed): two gloo processes equal one process.

The first set is every estimator on main before the data-parallel mode; the second,
the method families added with it.

Two ranks, each calling ``partial_fit`` with its half of every call, train
every wave-1 estimator on a small stream; one process trains the same
estimators on whole calls. The global mini-batch is the same, so the final
predictions must be identical and the probabilities agree to 1e-5, and the
ranks' memories must be identical after every task.
"""

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).parent / "distributed" / "worker.py"
sys.path.insert(0, str(WORKER.parent))
import worker  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path_factory, cases: str):
    """Two ranks and one single process train the ``cases`` set of the worker."""
    out = tmp_path_factory.mktemp("dp")
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    base.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                SKCL_DP_CASES=cases)
    single = out / "single"
    single.mkdir()
    ranks = [subprocess.Popen([sys.executable, str(WORKER), str(out)],
                              env={**base, "RANK": str(r), "WORLD_SIZE": "2"})
             for r in range(2)]
    subprocess.run([sys.executable, str(WORKER), str(single)], env=base, check=True,
                   timeout=900)
    for process in ranks:
        assert process.wait(timeout=900) == 0
    load = lambda path: pickle.loads(path.read_bytes())  # noqa: E731
    return load(single / "rank0.pkl"), load(out / "rank0.pkl"), load(out / "rank1.pkl")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return _launch(tmp_path_factory, "wave1")


@pytest.fixture(scope="module")
def later_runs(tmp_path_factory):
    return _launch(tmp_path_factory, "later")


@pytest.mark.parametrize("label", list(worker.CASES))
def test_two_ranks_predict_as_one_process(runs, label):
    single, rank0, rank1 = runs
    np.testing.assert_array_equal(rank0[label]["predict"], single[label]["predict"])
    np.testing.assert_allclose(rank0[label]["proba"], single[label]["proba"], atol=1e-5)
    # Both ranks hold the same model.
    np.testing.assert_array_equal(rank0[label]["proba"], rank1[label]["proba"])


@pytest.mark.parametrize("label", list(worker.CASES))
def test_memories_are_identical_on_every_rank_after_every_task(runs, label):
    single, rank0, rank1 = runs
    for mine, theirs, alone in zip(rank0[label]["memories"], rank1[label]["memories"],
                                   single[label]["memories"], strict=True):
        if alone is None:
            assert mine is None and theirs is None
            continue
        np.testing.assert_array_equal(mine, theirs)
        # Stored inputs are the same samples; latents differ by float summation order.
        np.testing.assert_allclose(mine, alone, atol=1e-5)


def test_a_model_trained_on_two_ranks_predicts_in_one_plain_process(runs):
    _, rank0, _ = runs
    clf = pickle.loads(rank0["replay"]["pickle"])
    X = np.zeros((3, clf.n_features_in_), dtype=np.float32)
    assert clf.predict(X).shape == (3,)
    assert clf.get_params()["distributed"] == "auto"


@pytest.mark.slow
@pytest.mark.parametrize("label", list(worker.LATER_CASES))
def test_the_later_families_follow_the_seam(later_runs, label):
    """Masks, gates, columns, consolidated heads, generators and hypernetworks: replay and
    generated draws shared, penalties with a gradient of their own added once, generator
    noise drawn for the global batch."""
    single, rank0, rank1 = later_runs
    np.testing.assert_array_equal(rank0[label]["predict"], single[label]["predict"])
    np.testing.assert_allclose(rank0[label]["proba"], single[label]["proba"], atol=1e-5)
    np.testing.assert_array_equal(rank0[label]["proba"], rank1[label]["proba"])
