"""Streams: the protocol's digits streams, the generic builders and the IDX reader."""

import dataclasses
import gzip
import re
import struct

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from skcl import tabular
from skcl.datasets import (
    STREAMS,
    Experience,
    TaskStream,
    load_idx,
    load_mnist_idx,
    load_permuted_digits,
    load_split_digits,
    load_stream,
    make_permuted_stream,
    make_rotated_stream,
    make_split_stream,
    make_task_stream,
)
from skcl.tabular import DataError, load_streams


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target


@pytest.fixture(scope="module")
def protocol_split(digits):
    X, y = digits
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


@pytest.fixture(scope="module")
def split_digits():
    return load_split_digits()


@pytest.fixture(scope="module")
def permuted_digits():
    return load_permuted_digits()


# --------------------------------------------------------------------------- split-digits


def test_split_digits_layout(split_digits):
    assert split_digits.name == "split-digits"
    assert split_digits.default_scenario == "class"
    assert len(split_digits) == split_digits.n_experiences == 5
    assert split_digits.n_features == 64
    assert split_digits.classes.tolist() == list(range(10))
    assert [exp.classes.tolist() for exp in split_digits] == [
        [0, 1], [2, 3], [4, 5], [6, 7], [8, 9]
    ]
    assert [exp.task_id for exp in split_digits] == [0, 1, 2, 3, 4] == split_digits.task_ids
    assert sum(len(exp.y_train) for exp in split_digits) == 1257
    assert sum(len(exp.y_test) for exp in split_digits) == 540


def test_split_digits_follows_the_protocol_split(split_digits, protocol_split):
    X_train, X_test, y_train, y_test = protocol_split
    for exp, pair in zip(split_digits, [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)], strict=True):
        tr, te = np.isin(y_train, pair), np.isin(y_test, pair)
        np.testing.assert_array_equal(exp.X_train, X_train[tr])
        np.testing.assert_array_equal(exp.y_train, y_train[tr])
        np.testing.assert_array_equal(exp.X_test, X_test[te])
        np.testing.assert_array_equal(exp.y_test, y_test[te])
        assert exp.X_train.dtype == np.float32 and exp.X_test.dtype == np.float32
        assert exp.X_train.min() >= 0.0 and exp.X_train.max() <= 1.0


def test_split_digits_is_stratified(split_digits, digits):
    _, y = digits
    for exp in split_digits:
        for c in exp.classes:
            n_test = np.sum(exp.y_test == c)
            assert abs(n_test - 0.3 * np.sum(y == c)) <= 1


def test_stream_sequence_protocol(split_digits):
    assert split_digits[-1] is list(split_digits)[-1]
    assert len(split_digits[1:3]) == 2
    assert repr(split_digits) == (
        "TaskStream(name='split-digits', n_experiences=5, n_features=64, n_classes=10, "
        "default_scenario='class')"
    )
    assert repr(split_digits[0]).startswith("Experience(task_id=0, classes=[0, 1], n_train=")


def test_experience_is_frozen(split_digits):
    with pytest.raises(dataclasses.FrozenInstanceError):
        split_digits[0].task_id = 3


# --------------------------------------------------------------------------- permuted-digits


def test_permuted_digits_layout(permuted_digits, protocol_split):
    X_train, X_test, y_train, y_test = protocol_split
    assert permuted_digits.name == "permuted-digits"
    assert permuted_digits.default_scenario == "domain"
    assert permuted_digits.task_ids == list(range(10))
    for exp in permuted_digits:
        assert exp.classes.tolist() == list(range(10))
        np.testing.assert_array_equal(exp.y_train, y_train)
        np.testing.assert_array_equal(exp.y_test, y_test)
    np.testing.assert_array_equal(permuted_digits[0].X_train, X_train)
    np.testing.assert_array_equal(permuted_digits[0].X_test, X_test)


@pytest.mark.parametrize("t", [1, 2, 9])
def test_permutation_uses_the_documented_rng(permuted_digits, protocol_split, t):
    X_train, X_test, _, _ = protocol_split
    perm = np.random.default_rng(t).permutation(64)
    assert not np.array_equal(perm, np.arange(64))
    np.testing.assert_array_equal(permuted_digits[t].X_train, X_train[:, perm])
    np.testing.assert_array_equal(permuted_digits[t].X_test, X_test[:, perm])
    # A real permutation: every row keeps its multiset of pixel values.
    np.testing.assert_array_equal(
        np.sort(permuted_digits[t].X_train, axis=1), np.sort(X_train, axis=1)
    )


def test_permuted_digits_experience_count():
    assert len(load_permuted_digits(n_experiences=3)) == 3
    with pytest.raises(ValueError, match="n_experiences"):
        load_permuted_digits(n_experiences=0)


# --------------------------------------------------------------------------- generic builders


def _blobs(n_classes=7, per_class=10, labels=None):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), per_class)
    X = rng.normal(size=(len(y), 4)) + y[:, None]
    if labels is not None:
        y = np.asarray(labels)[y]
    return X, y


def test_split_stream_classes_per_task_keeps_sorted_order_and_remainder():
    X, y = _blobs(7)
    stream = make_split_stream(X, y, classes_per_task=3)
    assert [exp.classes.tolist() for exp in stream] == [[0, 1, 2], [3, 4, 5], [6]]
    assert stream.name == "split" and stream.default_scenario == "class"
    assert sum(len(e.y_train) + len(e.y_test) for e in stream) == 70
    assert all(e.X_train.dtype == np.float32 for e in stream)


def test_split_stream_task_classes_order_and_subset():
    X, y = _blobs(7)
    stream = make_split_stream(X, y, task_classes=[(5, 1), (0,)], name="mine",
                               default_scenario="task")
    assert [exp.classes.tolist() for exp in stream] == [[1, 5], [0]]
    assert stream.name == "mine" and stream.default_scenario == "task"
    assert sum(len(e.y_train) + len(e.y_test) for e in stream) == 30
    for exp in stream:
        assert np.isin(exp.y_test, exp.classes).all()
        assert len(exp.y_test) == 3 * len(exp.classes)  # stratified: 3 of 10 per class


def test_split_stream_string_labels():
    X, y = _blobs(4, labels=["ant", "bee", "cat", "dog"])
    stream = make_split_stream(X, y, task_classes=[("dog", "ant"), ("cat",)])
    assert [exp.classes.tolist() for exp in stream] == [["ant", "dog"], ["cat"]]
    assert stream.classes.tolist() == ["ant", "cat", "dog"]
    assert make_split_stream(X, y).classes.tolist() == ["ant", "bee", "cat", "dog"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task_classes": [(0, 9)]}, "absent"),
        ({"task_classes": [(0, 1), (1, 2)]}, "more than one task"),
        ({"task_classes": [()]}, "empty"),
        ({"task_classes": []}, "empty"),
        ({"classes_per_task": 0}, "positive integer"),
        ({"classes_per_task": 1.5}, "positive integer"),
        ({"default_scenario": "domain"}, "default_scenario"),
    ],
)
def test_split_stream_rejects_bad_task_definitions(kwargs, match):
    X, y = _blobs(4)
    with pytest.raises(ValueError, match=match):
        make_split_stream(X, y, **kwargs)


@pytest.mark.parametrize("builder", [make_split_stream, make_permuted_stream])
def test_builders_validate_arrays(builder):
    X, y = _blobs(3)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        builder(bad, y)
    with pytest.raises(ValueError, match="different lengths"):
        builder(X, y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        builder(X[:, 0], y)
    with pytest.raises(ValueError, match="1-D"):
        builder(X, y[:, None])
    with pytest.raises(ValueError, match="numeric"):
        builder(np.full(X.shape, "a"), y)


def test_permuted_stream_generic():
    X, y = _blobs(3, labels=["x", "y", "z"])
    stream = make_permuted_stream(X, y, n_experiences=3, name="perm")
    assert stream.default_scenario == "domain" and stream.task_ids == [0, 1, 2]
    perm = np.random.default_rng(2).permutation(4)
    np.testing.assert_array_equal(stream[2].X_test, stream[0].X_test[:, perm])
    assert stream[1].classes.tolist() == ["x", "y", "z"]


# --------------------------------------------------------------------------- rotated


def test_rotated_stream_rotates_images(digits):
    X, y = digits
    stream = make_rotated_stream(X, y, (8, 8), angles=[0, 90, 180])
    assert stream.default_scenario == "domain" and stream.task_ids == [0, 1, 2]
    base = stream[0].X_test.reshape(-1, 8, 8)
    _, X_test, _, _ = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    np.testing.assert_array_equal(stream[0].X_test, X_test)
    np.testing.assert_allclose(stream[1].X_test.reshape(-1, 8, 8), np.rot90(base, axes=(1, 2)),
                               atol=1e-5)
    np.testing.assert_allclose(stream[2].X_test.reshape(-1, 8, 8),
                               np.rot90(base, 2, axes=(1, 2)), atol=1e-5)
    np.testing.assert_array_equal(stream[1].y_train, stream[0].y_train)


def test_rotated_stream_default_angles_and_channels():
    rng = np.random.default_rng(0)
    images = rng.random((20, 6, 6, 3)).astype(np.float32)
    y = np.repeat([0, 1], 10)
    stream = make_rotated_stream(images.reshape(20, -1), y, (6, 6, 3), n_experiences=4)
    assert len(stream) == 4
    base = stream[0].X_train.reshape(-1, 6, 6, 3)
    np.testing.assert_allclose(stream[2].X_train.reshape(-1, 6, 6, 3),
                               np.rot90(base, axes=(1, 2)), atol=1e-5)
    # 45 degrees is a real interpolation, not a copy or a right angle.
    assert not np.allclose(stream[1].X_train, stream[0].X_train)
    assert len(make_rotated_stream(images.reshape(20, -1), y, (6, 6, 3))) == 4


def test_rotated_stream_validation():
    X, y = _blobs(2)
    with pytest.raises(ValueError, match="does not match"):
        make_rotated_stream(X, y, (3, 3))
    with pytest.raises(ValueError, match="height, width"):
        make_rotated_stream(X, y, (4,))
    with pytest.raises(ValueError, match="not both"):
        make_rotated_stream(X, y, (2, 2), angles=[0, 90], n_experiences=2)
    with pytest.raises(ValueError, match="finite"):
        make_rotated_stream(X, y, (2, 2), angles=[0, np.nan])


# --------------------------------------------------------------------------- registry


def test_registry_and_load_stream():
    assert set(STREAMS) == {"split-digits", "permuted-digits"}
    assert load_stream("split-digits").name == "split-digits"
    assert load_stream("permuted-digits", n_experiences=2).n_experiences == 2
    with pytest.raises(ValueError, match="permuted-digits, split-digits") as info:
        load_stream("split-mnist")
    assert "\n" not in str(info.value)


def test_task_stream_validation(split_digits):
    with pytest.raises(ValueError, match="at least one"):
        TaskStream([])
    with pytest.raises(ValueError, match="Experience objects"):
        TaskStream([object()])
    with pytest.raises(ValueError, match="default_scenario"):
        TaskStream(list(split_digits), default_scenario="online")
    X3 = np.zeros((2, 3), np.float32)
    other = Experience(X3, np.array([0, 1]), X3, np.array([0, 1]), 9, np.array([0, 1]))
    with pytest.raises(ValueError, match="numbers of features"):
        TaskStream([split_digits[0], other])
    with pytest.raises(ValueError, match="shape"):
        Experience(X3, np.array([0]), X3, np.array([0, 1]), 0, np.array([0, 1]))


# --------------------------------------------------------------------------- IDX


_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def _idx_bytes(array):
    header = bytes([0, 0, _CODES[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, dtype, gz):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    loaded = load_idx(_write(tmp_path / ("a.idx.gz" if gz else "a.idx"), _idx_bytes(array), gz))
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "not an IDX file"),
        (b"PK\x03\x04rest", "not an IDX file"),
        (bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        (bytes([0, 0, 0x08, 0]), "not an IDX file"),
        (bytes([0, 0, 0x08, 3]) + struct.pack(">I", 2), "header truncated"),
        (bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + b"\x01\x02", "5 bytes"),
        (bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 1) + b"\x00" * 5, "4 bytes"),
    ],
)
def test_idx_malformed(tmp_path, data, match):
    with pytest.raises(ValueError, match=match):
        load_idx(_write(tmp_path / "bad.idx", data))


def test_idx_broken_gzip(tmp_path):
    data = gzip.compress(_idx_bytes(np.zeros((4, 4), np.uint8)))
    with pytest.raises(ValueError, match="gzip"):
        load_idx(_write(tmp_path / "bad.idx.gz", data[: len(data) // 2]))


def test_load_mnist_idx_and_split_stream(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 5, 5), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 10).astype(np.uint8)
    X, y = load_mnist_idx(
        _write(tmp_path / "images.gz", _idx_bytes(images), gz=True),
        _write(tmp_path / "labels", _idx_bytes(labels)),
    )
    assert X.shape == (40, 25) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X, images.reshape(40, 25) / 255.0, rtol=1e-6)
    assert X.min() >= 0.0 and X.max() <= 1.0
    np.testing.assert_array_equal(y, labels)
    stream = make_split_stream(X, y, classes_per_task=2, name="tiny-mnist")
    assert [exp.classes.tolist() for exp in stream] == [[0, 1], [2, 3]]


def test_load_mnist_idx_validation(tmp_path):
    images = _write(tmp_path / "images", _idx_bytes(np.zeros((3, 2, 2), np.uint8)))
    labels = _write(tmp_path / "labels", _idx_bytes(np.zeros(2, np.uint8)))
    with pytest.raises(ValueError, match="3 images"):
        load_mnist_idx(images, labels)
    floats = _write(tmp_path / "floats", _idx_bytes(np.zeros((2, 2, 2), np.float32)))
    with pytest.raises(ValueError, match="unsigned-byte"):
        load_mnist_idx(floats, labels)


# --------------------------------------------------------------------------- task streams


def test_task_stream_orders_tasks_and_splits_each_one(digits):
    X, y = digits
    task = np.where(y < 5, "early", "late")
    stream = make_task_stream(X, y, task, test_size=0.25, random_state=3)
    assert [exp.classes.tolist() for exp in stream] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert stream.task_ids == [0, 1] and stream.default_scenario == "class"
    for exp, value in zip(stream, ("early", "late"), strict=True):
        n = int((task == value).sum())
        assert len(exp.y_test) == int(np.ceil(0.25 * n)) and len(exp.y_train) + len(
            exp.y_test) == n
    again = make_task_stream(X, y, task, test_size=0.25, random_state=3)
    other = make_task_stream(X, y, task, test_size=0.25, random_state=4)
    assert np.array_equal(again[1].X_test, stream[1].X_test)
    assert not np.array_equal(other[1].X_test, stream[1].X_test)
    shared = make_task_stream(X, y, np.arange(len(y)) % 3)
    assert shared.default_scenario == "domain" and len(shared) == 3
    with pytest.raises(ValueError, match="one value per sample"):
        make_task_stream(X, y, task[:-1])


# --------------------------------------------------------------------------- data files


def _write_table(path, frame):
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def table():
    return pd.DataFrame({
        "size": [1.0, 2.0, 3.0, 4.0, 5.0, np.nan] * 4,
        "flag": [True, False] * 12,
        "colour": ["red", "blue", None, "red", "green", "blue"] * 4,
        "label": ["a", "b"] * 12,
        "site": ["x"] * 12 + ["y"] * 12,
    })


def test_table_encoding_rules(tmp_path, table):
    path = _write_table(tmp_path / "t.csv", table)
    stream, = load_streams(path, target="label", task_column="site", impute=True,
                           test_size=0.5, random_state=0)
    assert stream.name == "t-tasks" and stream.task_ids == [0, 1]
    assert stream.n_features == 5  # size, flag, colour=blue, colour=green, colour=red
    assert stream[0].y_train.dtype.kind == "U"
    X_train = np.concatenate([exp.X_train for exp in stream])
    # Numbers are standardised on the training rows (imputed with their median first).
    assert np.allclose(X_train[:, :2].mean(axis=0), 0, atol=1e-6)
    assert np.allclose(X_train[:, :2].std(axis=0), 1, atol=1e-5)
    # One-hot: each row sets at most one colour; a missing colour sets none.
    onehot = np.concatenate([X_train, *(exp.X_test for exp in stream)])[:, 2:]
    assert set(np.unique(onehot)) == {0.0, 1.0} and onehot.sum(axis=1).max() == 1
    assert (onehot.sum(axis=1) == 0).sum() == 4


def test_table_split_is_reproducible_from_the_seed(tmp_path, table):
    path = _write_table(tmp_path / "t.csv", table)
    kwargs = dict(target="label", classes_per_task=1, permuted=2, impute=True)
    first, second = load_streams(path, **kwargs), load_streams(path, **kwargs)
    other = load_streams(path, **kwargs, random_state=1)
    assert [s.name for s in first] == ["t-split", "t-permuted"]
    for a, b in zip(first, second, strict=True):
        for ea, eb in zip(a, b, strict=True):
            assert np.array_equal(ea.X_train, eb.X_train) and np.array_equal(ea.X_test, eb.X_test)
    assert not np.array_equal(first[0][0].X_test, other[0][0].X_test)


@pytest.mark.parametrize("change, kwargs, message", [
    ({}, {}, "column 'size' has 4 missing values; impute them (--impute) or drop"),
    ({"label": [0.5, 1.0] * 12}, {"impute": True}, "target column 'label' holds continuous"),
    ({"label": ["a", None] * 12}, {"impute": True}, "target column 'label' has 12 missing"),
    ({"site": ["x", None] * 12}, {"impute": True}, "task column 'site' has 12 missing values"),
    ({"colour": [f"c{i}" for i in range(24)]}, {"impute": True, "test_size": 0.1}, None),
    ({"size": [np.inf] * 24}, {"impute": True}, "column 'size' holds infinite values"),
    ({}, {"impute": True, "drop": ["nope"]}, "has no column 'nope'"),
    ({}, {"impute": True, "drop": ["size", "flag", "colour"]}, "no feature column is left"),
    ({"label": list("abcdefghijklmnopqrstuvwx")}, {"impute": True}, "cannot split the rows"),
], ids=["missing", "continuous", "target-gap", "task-gap", "categories", "inf", "drop",
        "no-feature", "singletons"])
def test_table_errors_name_the_problem(tmp_path, table, monkeypatch, change, kwargs, message):
    if message is None:  # more text values than MAX_CATEGORIES
        monkeypatch.setattr(tabular, "MAX_CATEGORIES", 10)
        message = "text column 'colour' has 20 distinct values in the training rows"
    path = _write_table(tmp_path / "t.csv", table.assign(**change))
    with pytest.raises(DataError, match=re.escape(message)):
        load_streams(path, **{"target": "label", "task_column": "site", **kwargs})


def test_npz_names_its_label_and_task_arrays(tmp_path, digits):
    X, y = digits
    np.savez(tmp_path / "d.npz", X=X, digit=y, period=y // 5)
    stream, = load_streams(tmp_path / "d.npz", target="digit", task_column="period")
    assert stream.name == "d-tasks" and [len(e.classes) for e in stream] == [5, 5]
    # X is used as it is: the stream is make_task_stream's on the same arrays and seed.
    for ours, theirs in zip(stream, make_task_stream(X, y, y // 5), strict=True):
        assert np.array_equal(ours.X_train, theirs.X_train)
        assert np.array_equal(ours.y_test, theirs.y_test)
    with pytest.raises(DataError, match=r"d.npz has no array y \(arrays: X, digit, period\)"):
        load_streams(tmp_path / "d.npz", permuted=2)
