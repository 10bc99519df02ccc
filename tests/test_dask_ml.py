"""The dask-ml recipe of skcl/scoring.py: a partial_fit per task, predictions through map_blocks."""

import numpy as np
import pytest
from conftest import SMALL
from sklearn.datasets import load_digits

from skcl import NaiveClassifier

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
Incremental = pytest.importorskip("dask_ml.wrappers").Incremental

EPOCHS = 2
CHUNK = 100


@pytest.fixture(scope="module")
def tasks():
    """Digits 0-4 (task 0) and 5-9 (task 1), 300 training rows each, and a mixed test set."""
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32) / 16.0
    train = [np.flatnonzero(y < 5)[:300], np.flatnonzero(y >= 5)[:300]]
    test = np.concatenate([np.flatnonzero(y < 5)[300:400], np.flatnonzero(y >= 5)[300:400]])
    return [(X[rows], y[rows]) for rows in train], X[test], y[test], (y[test] >= 5).astype(int)


@pytest.fixture(autouse=True)
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def test_incremental_fit_cannot_slice_per_sample_task_ids(tasks):
    (X0, y0), (X1, y1) = tasks[0]
    X, y = np.concatenate([X0, X1]), np.concatenate([y0, y1])
    task_id = np.repeat([0, 1], len(y0))
    dX, dy = da.from_array(X, chunks=(CHUNK, -1)), da.from_array(y, chunks=CHUNK)
    with pytest.raises(ValueError, match=f"n_samples={CHUNK} per-sample task ids"):
        Incremental(NaiveClassifier(**SMALL)).fit(dX, dy, task_id=task_id)


def test_recipe_trains_task_by_task_and_predicts_per_block(tasks):
    train, X_test, y_test, task_test = tasks
    inc = Incremental(NaiveClassifier(**SMALL), shuffle_blocks=False)
    for task, (X, y) in enumerate(train):
        dX, dy = da.from_array(X, chunks=(CHUNK, -1)), da.from_array(y, chunks=CHUNK)
        for _ in range(EPOCHS):
            inc.partial_fit(dX, dy, task_id=task)
    est = inc.estimator_.end_task()

    # the same calls on the same blocks in numpy give the same model
    reference = NaiveClassifier(**SMALL)
    for task, (X, y) in enumerate(train):
        for _ in range(EPOCHS):
            for start in range(0, len(y), CHUNK):
                reference.partial_fit(X[start:start + CHUNK], y[start:start + CHUNK],
                                      task_id=task)
    reference.end_task()
    assert est.tasks_seen_ == [0, 1] and est.current_task_ is None

    dX_test = da.from_array(X_test, chunks=(CHUNK, -1))
    one_task = dX_test.map_blocks(lambda b: est.predict(b, task_id=1), drop_axis=1,
                                  dtype=est.classes_.dtype).compute()
    np.testing.assert_array_equal(one_task, reference.predict(X_test, task_id=1))
    assert set(one_task) <= {5, 6, 7, 8, 9}

    dtask = da.from_array(task_test, chunks=CHUNK)
    per_row = da.map_blocks(lambda b, t: est.predict(b, task_id=t[:, 0]), dX_test,
                            dtask[:, None], drop_axis=1, dtype=est.classes_.dtype).compute()
    np.testing.assert_array_equal(per_row, reference.predict(X_test, task_id=task_test))
    task_incremental = np.mean(per_row == y_test)
    assert task_incremental == reference.score(X_test, y_test, task_id=task_test)
    assert task_incremental > np.mean(inc.predict(dX_test).compute() == y_test)
