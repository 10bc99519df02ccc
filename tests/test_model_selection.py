"""skcl.model_selection: searches that choose hyperparameters without reading test data."""

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import SGDClassifier

from skcl import NaiveClassifier
from skcl.datasets import Experience, TaskStream, make_split_stream
from skcl.model_selection import (
    StreamGridSearch,
    StreamRandomizedSearch,
    make_validation_stream,
    select_params,
)

SMALL = dict(hidden_layer_sizes=(16,), device="cpu", random_state=0)
# A learning rate too small to learn anything in two epochs, and one that learns.
GRID = {"learning_rate": [1e-5, 0.1]}
SEARCH = dict(scenario="task", epochs=2, n_tasks=2)
RESULT_KEYS = {"params", "param_learning_rate", "acc", "bwt", "fwt", "forgetting", "score",
               "rank_score", "fit_time"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny networks gain nothing from intra-op threads on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stream():
    """Every second digit of classes 0-5: three binary experiences, ~125 training samples each."""
    digits = load_digits()
    keep = np.flatnonzero(digits.target < 6)[::2]
    return make_split_stream(digits.data[keep] / 16.0, digits.target[keep], classes_per_task=2,
                             name="digits-0-5")


def tampered(stream, noise=True):
    """The stream with each binary task's test labels swapped and, with ``noise``, noise inputs."""
    rng = np.random.default_rng(1)
    experiences = []
    for exp in stream:
        swapped = np.where(exp.y_test == exp.classes[0], exp.classes[1], exp.classes[0])
        X_test = rng.random(exp.X_test.shape, dtype=np.float32) if noise else exp.X_test
        experiences.append(Experience(exp.X_train, exp.y_train, X_test, swapped,
                                      task_id=exp.task_id, classes=exp.classes))
    return TaskStream(experiences, name=stream.name)


def comparable(results):
    """cv_results_ without the timings, as plain lists."""
    return {key: [str(v) for v in value] for key, value in results.items() if key != "fit_time"}


class RecordingClassifier(NaiveClassifier):
    """NaiveClassifier that logs (call, task id, n_samples) of every training and registration."""

    calls: list = []

    def partial_fit(self, X, y, task_id=0, classes=None, sample_weight=None):
        RecordingClassifier.calls.append(("partial_fit", task_id, len(y)))
        return super().partial_fit(X, y, task_id=task_id, classes=classes,
                                   sample_weight=sample_weight)

    def _register(self, X, y, task_id=0, classes=None):
        RecordingClassifier.calls.append(("register", task_id, len(y)))
        return super()._register(X, y, task_id=task_id, classes=classes)


class WorkerProbe(SGDClassifier):
    """SGDClassifier that logs the address of the Dask worker each training call runs on."""

    workers: list = []

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        from distributed import get_worker

        WorkerProbe.workers.append(get_worker().address)
        return super().partial_fit(X, y, classes=classes, sample_weight=sample_weight)


def test_validation_stream_is_made_of_training_rows_only(stream):
    val = make_validation_stream(stream, validation_size=0.25, n_tasks=2, random_state=3)
    assert len(val) == 2 and val.name == "digits-0-5[validation]"
    for exp, v in zip(stream, val, strict=False):
        train_rows = {row.tobytes(): label for row, label in zip(exp.X_train, exp.y_train,
                                                                strict=True)}
        fit_rows = [row.tobytes() for row in v.X_train]
        val_rows = [row.tobytes() for row in v.X_test]
        assert all(r in train_rows for r in fit_rows + val_rows)
        assert len(fit_rows) + len(val_rows) == len(exp.y_train)
        assert len(val_rows) == int(np.ceil(0.25 * len(exp.y_train)))
        assert [train_rows[r] for r in val_rows] == v.y_test.tolist()
        assert v.task_id == exp.task_id and v.classes.tolist() == exp.classes.tolist()
        # stratified: each class's share of the validation split is its share of the training data
        for c in exp.classes:
            assert abs(np.mean(v.y_test == c) - np.mean(exp.y_train == c)) < 0.03
    again = make_validation_stream(stream, validation_size=0.25, n_tasks=2, random_state=3)
    assert np.array_equal(again[1].X_test, val[1].X_test)


def test_validation_stream_splits_unstratified_when_a_class_is_single():
    X = np.arange(10, dtype=np.float32).reshape(5, 2)
    y = np.array([0, 0, 0, 0, 1])
    exp = Experience(X, y, X, y, task_id=0, classes=np.array([0, 1]))
    val = make_validation_stream(TaskStream([exp]), validation_size=0.4)
    assert len(val[0].y_train) == 3 and len(val[0].y_test) == 2


@pytest.mark.parametrize("protocol", ["first-tasks", "validation"])
def test_selection_never_reads_test_data(stream, protocol):
    kwargs = dict(protocol=protocol, refit=False, **SEARCH)
    honest = StreamGridSearch(NaiveClassifier(**SMALL), GRID, **kwargs).fit(stream)
    blind = StreamGridSearch(NaiveClassifier(**SMALL), GRID, **kwargs).fit(tampered(stream))
    assert comparable(blind.cv_results_) == comparable(honest.cv_results_)
    assert honest.best_params_ == {"learning_rate": 0.1}
    assert honest.scored_on_ == "validation"


def test_oracle_choice_follows_the_test_labels(stream):
    kwargs = dict(protocol="oracle", refit=False, **SEARCH)
    oracle = StreamGridSearch(NaiveClassifier(**SMALL), GRID, **kwargs).fit(stream)
    fooled = StreamGridSearch(NaiveClassifier(**SMALL), GRID, **kwargs).fit(
        tampered(stream, noise=False))
    assert oracle.scored_on_ == "test"
    assert oracle.best_params_ == {"learning_rate": 0.1}
    assert fooled.best_params_ == {"learning_rate": 1e-5}


@pytest.mark.parametrize("protocol, n_seen", [("first-tasks", 2), ("validation", 3)])
def test_candidates_train_on_training_splits_of_their_tasks_and_refit_on_all(
        stream, protocol, n_seen):
    RecordingClassifier.calls = []
    search = StreamGridSearch(RecordingClassifier(**SMALL), GRID, protocol=protocol,
                              validation_size=0.2, scenario="task", epochs=1, n_tasks=2)
    search.fit(stream)
    val = make_validation_stream(stream, validation_size=0.2, n_tasks=n_seen)
    # two candidates, each trained on the fit part of its tasks, then the refit over all three
    candidate_calls = RecordingClassifier.calls[:-3]
    trained = [(t, n) for call, t, n in candidate_calls if call == "partial_fit"]
    assert trained == [(exp.task_id, len(exp.y_train)) for exp in val] * 2
    assert {t for _, t, _ in candidate_calls} == set(range(n_seen))
    assert RecordingClassifier.calls[-3:] == [
        ("partial_fit", exp.task_id, len(exp.y_train)) for exp in stream]


def test_refit_trains_a_clone_over_the_whole_stream(stream):
    estimator = NaiveClassifier(**SMALL)
    search = StreamGridSearch(estimator, GRID, **SEARCH).fit(stream)
    best = search.best_estimator_
    assert best is not estimator and not hasattr(estimator, "classes_")
    assert best.learning_rate == search.best_params_["learning_rate"]
    assert best.tasks_seen_ == [0, 1, 2] and best.current_task_ is None
    assert best.classes_.tolist() == [0, 1, 2, 3, 4, 5]
    by_hand = NaiveClassifier(**SMALL, **search.best_params_)
    for exp in stream:
        for _ in range(SEARCH["epochs"]):
            by_hand.partial_fit(exp.X_train, exp.y_train, task_id=exp.task_id)
    by_hand.end_task()
    X_test = np.concatenate([exp.X_test for exp in stream])
    y_test = np.concatenate([exp.y_test for exp in stream])
    assert np.array_equal(search.predict(X_test), by_hand.predict(X_test))
    assert search.score(X_test, y_test) == by_hand.score(X_test, y_test)
    last = stream[2]
    assert search.score(last.X_test, last.y_test, task_id=2) == by_hand.score(
        last.X_test, last.y_test, task_id=2)
    assert search.refit_time_ > 0
    unfitted = StreamGridSearch(estimator, GRID, refit=False, **SEARCH).fit(stream)
    assert not hasattr(unfitted, "best_estimator_")


def test_cv_results_shape_keys_and_ranks(stream):
    grid = [{"learning_rate": [1e-5, 0.1], "momentum": [0.0, 0.9]}, {"batch_size": [64]}]
    search = StreamGridSearch(NaiveClassifier(**SMALL), grid, refit=False, **SEARCH).fit(stream)
    results = search.cv_results_
    assert set(results) == RESULT_KEYS | {"param_momentum", "param_batch_size"}
    assert len(results["params"]) == 5
    assert all(len(results[key]) == 5 for key in results)
    assert results["param_batch_size"].mask.tolist() == [True] * 4 + [False]
    assert results["param_momentum"][1] == 0.9 and results["param_momentum"].mask[4]
    assert np.array_equal(results["score"], results["acc"])
    order = np.argsort(-results["score"], kind="stable")
    assert results["rank_score"][order[0]] == 1 and results["rank_score"].max() <= 5
    assert np.all(np.diff(results["rank_score"][order]) >= 0)
    assert search.best_index_ == order[0]
    assert search.best_params_ == results["params"][search.best_index_]
    assert search.best_score_ == results["score"].max()
    assert np.all(results["forgetting"] >= -results["bwt"] - 1e-12)


def test_forgetting_penalty_and_callable_criteria(stream):
    penalized = StreamGridSearch(NaiveClassifier(**SMALL), GRID, scoring="acc-forgetting",
                                 forgetting_weight=2.0, refit=False, **SEARCH).fit(stream)
    r = penalized.cv_results_
    np.testing.assert_allclose(r["score"], r["acc"] - 2.0 * r["forgetting"])
    assert r["forgetting"].max() > 0
    by_bwt = StreamGridSearch(NaiveClassifier(**SMALL), GRID, scoring=lambda res: res.bwt,
                              refit=False, **SEARCH).fit(stream)
    np.testing.assert_allclose(by_bwt.cv_results_["score"], by_bwt.cv_results_["bwt"])


def test_randomized_search_samples_reproducibly(stream):
    space = {"learning_rate": [1e-5, 1e-3, 0.1], "momentum": [0.0, 0.5, 0.9]}
    kwargs = dict(n_iter=3, refit=False, random_state=4, **SEARCH)
    first = StreamRandomizedSearch(NaiveClassifier(**SMALL), space, **kwargs).fit(stream)
    again = StreamRandomizedSearch(NaiveClassifier(**SMALL), space, **kwargs).fit(stream)
    params = first.cv_results_["params"]
    assert len(params) == 3 and len({tuple(p.items()) for p in params}) == 3
    assert all(p["learning_rate"] in space["learning_rate"] for p in params)
    assert comparable(first.cv_results_) == comparable(again.cv_results_)


def test_select_params_returns_the_searchs_choice(stream):
    best, results = select_params(NaiveClassifier(**SMALL), stream, GRID, **SEARCH)
    search = StreamGridSearch(NaiveClassifier(**SMALL), GRID, refit=False, **SEARCH).fit(stream)
    assert best == search.best_params_
    assert comparable(results) == comparable(search.cv_results_)
    best_sampled, sampled = select_params(NaiveClassifier(**SMALL), stream,
                                          param_distributions=GRID, n_iter=2, **SEARCH)
    assert best_sampled == best and len(sampled["params"]) == 2


def test_parallel_jobs_give_the_serial_result(stream):
    kwargs = dict(refit=False, **SEARCH)
    serial = StreamGridSearch(NaiveClassifier(**SMALL), GRID, n_jobs=1, **kwargs).fit(stream)
    parallel = StreamGridSearch(NaiveClassifier(**SMALL), GRID, n_jobs=2, **kwargs).fit(stream)
    assert comparable(parallel.cv_results_) == comparable(serial.cv_results_)


def test_dask_backend_gives_the_serial_result(stream):
    distributed = pytest.importorskip("distributed")
    # Two worker threads of this process. skcl estimators seed torch's process-wide generator
    # when they build their network, so only estimators with their own generators (here
    # scikit-learn's SGDClassifier) are reproducible in threads; clusters of processes run any.
    grid = {"alpha": [1e-4, 1.0], "average": [False, True]}
    kwargs = dict(refit=False, **SEARCH)
    serial = StreamGridSearch(SGDClassifier(random_state=0), grid, **kwargs).fit(stream)
    WorkerProbe.workers = []
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1,
                            dashboard_address=":0") as client:
        with joblib.parallel_backend("dask"):
            on_dask = StreamGridSearch(WorkerProbe(random_state=0), grid, **kwargs).fit(stream)
        workers = set(client.scheduler_info()["workers"])
    assert len(WorkerProbe.workers) == 4 * 2 * 2 and set(WorkerProbe.workers) <= workers
    assert comparable(on_dask.cv_results_) == comparable(serial.cv_results_)
    assert len(set(serial.cv_results_["acc"])) > 1


def test_failing_candidates_score_error_score(stream):
    grid = {"learning_rate": [0.1, -1.0]}
    with pytest.warns(FitFailedWarning, match="learning_rate"):
        search = StreamGridSearch(NaiveClassifier(**SMALL), grid, refit=False,
                                  **SEARCH).fit(stream)
    results = search.cv_results_
    assert np.isnan(results["score"][1]) and np.isnan(results["acc"][1])
    assert results["rank_score"].tolist() == [1, 2]
    assert search.best_params_ == {"learning_rate": 0.1}
    with pytest.raises(ValueError, match="learning_rate"):
        StreamGridSearch(NaiveClassifier(**SMALL), grid, error_score="raise", refit=False,
                         **SEARCH).fit(stream)
    with pytest.raises(ValueError, match="learning_rate"):
        StreamGridSearch(NaiveClassifier(**SMALL), {"learning_rate": [-1.0, -2.0]},
                         refit=False, **SEARCH).fit(stream)


@pytest.mark.parametrize("kwargs, match", [
    (dict(param_grid={"ewc_lambda": [1.0]}), "ewc_lambda"),
    (dict(param_grid={"learning_rate": []}), "learning_rate.*non-empty"),
    (dict(param_grid=[]), "param_grid gives no candidate"),
    (dict(n_tasks=4), "n_tasks=4 is larger than stream 'digits-0-5', which has 3"),
    (dict(n_tasks=0), "n_tasks must be a positive integer"),
    (dict(protocol="test"), "protocol must be one of"),
    (dict(scoring="bwt"), "scoring must be one of"),
    (dict(forgetting_weight=-1.0), "forgetting_weight"),
    (dict(validation_size=1.5), "validation_size must be a fraction"),
    (dict(error_score="ignore"), "error_score"),
    (dict(epochs=0), "epochs must be a positive integer"),
])
def test_bad_settings_raise_before_training(stream, kwargs, match):
    RecordingClassifier.calls = []
    settings = dict(param_grid=GRID, **SEARCH)
    settings.update(kwargs)
    grid = settings.pop("param_grid")
    with pytest.raises(ValueError, match=match):
        StreamGridSearch(RecordingClassifier(**SMALL), grid, **settings).fit(stream)
    assert RecordingClassifier.calls == []


def test_bad_stream_and_param_sources_raise(stream):
    with pytest.raises(ValueError, match="stream must be a TaskStream"):
        StreamGridSearch(NaiveClassifier(**SMALL), GRID).fit(list(stream))
    with pytest.raises(ValueError, match="exactly one of param_grid and param_distributions"):
        select_params(NaiveClassifier(**SMALL), stream)
    with pytest.raises(ValueError, match="exactly one of param_grid and param_distributions"):
        select_params(NaiveClassifier(**SMALL), stream, GRID, param_distributions=GRID)
    with pytest.raises(ValueError, match="no partial_fit"):
        StreamGridSearch(object(), GRID).fit(stream)
