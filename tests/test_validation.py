"""Input checks of skcl/_validation.py: task ids, the ``classes=`` argument, label kinds."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from skcl._validation import check_classes_argument, check_same_kind, check_task_ids

INT64_MAX = np.iinfo(np.int64).max


# ---------------------------------------------------------------- task ids that fit int64


@pytest.mark.parametrize(
    "task_id",
    [2**63, np.uint64(2**63), np.array([0, 2**63], dtype=np.uint64), [1, 2**64 - 1]],
    ids=["python-int", "uint64-scalar", "uint64-array", "list"],
)
def test_task_ids_beyond_int64_raise_a_clear_error(task_id):
    n = 1 if np.ndim(task_id) == 0 else len(task_id)
    with pytest.raises(ValueError, match="task ids must fit in int64"):
        check_task_ids(task_id, n)


def test_largest_int64_task_id_is_kept_exactly():
    ids = check_task_ids(np.array([INT64_MAX, 0], dtype=np.uint64), 2)
    assert ids.dtype == np.int64 and ids.tolist() == [INT64_MAX, 0]
    assert check_task_ids(INT64_MAX, 1).tolist() == [INT64_MAX]


# ---------------------------------------------------------------- arrays torch takes as they are


def test_read_only_task_ids_come_back_writable_and_torch_does_not_warn():
    series = pd.Series([0, 0, 1, 1])
    read_only = np.asarray(series)
    read_only.flags.writeable = False
    ids = check_task_ids(read_only, 4)
    assert ids.flags.writeable
    assert not np.shares_memory(ids, read_only)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.from_numpy(ids).tolist() == [0, 0, 1, 1]
    assert check_task_ids(series, 4).flags.writeable


def test_reversed_task_ids_come_back_contiguous():
    ids = check_task_ids(np.arange(4)[::-1], 4)
    assert ids.flags.c_contiguous
    assert torch.from_numpy(ids).tolist() == [3, 2, 1, 0]


# ---------------------------------------------------------------- SGDClassifier's classes, third


def test_class_list_as_long_as_the_chunk_is_rejected():
    y = np.arange(10)                       # load_digits' first ten labels: 0, 1, ..., 9
    with pytest.raises(ValueError, match=r"pass it by name: partial_fit\(X, y, classes=\.\.\.\)"):
        check_task_ids(np.unique(y), 10, y=y)


@pytest.mark.parametrize(
    "y, classes",
    [
        ([3, 3, 7, 3], [1, 3, 5, 7]),       # chunk shows some of the classes
        ([1, 0], [0, 1]),                   # binary, chunk of two
        ([20, 10, 30], [30, 10, 20]),       # a class list in the user's own order
    ],
    ids=["subset", "binary", "unsorted"],
)
def test_every_class_list_sgdclassifier_accepts_is_rejected(y, classes):
    with pytest.raises(ValueError, match="like the class list of SGDClassifier"):
        check_task_ids(np.array(classes), len(y), y=np.array(y))


@pytest.mark.parametrize(
    "task_id, y",
    [
        ([0, 0, 1, 1], [0, 1, 0, 1]),       # ids repeat: tasks of several samples
        ([0, 1, 2], [5, 6, 7]),             # distinct ids, labels outside them
        ([0, 1], [1, 2]),                   # a chunk across a task boundary (split stream)
        ([3], [3]),                         # one sample: SGDClassifier needs two classes
        ([0, 1], ["a", "b"]),               # string labels cannot be task ids
    ],
    ids=["repeated", "labels-outside", "boundary", "one-sample", "strings"],
)
def test_per_sample_task_ids_that_are_no_class_list_pass(task_id, y):
    assert check_task_ids(np.array(task_id), len(y), y=np.array(y)).tolist() == task_id


def test_class_list_rule_needs_labels():
    assert check_task_ids(np.arange(3), 3).tolist() == [0, 1, 2]   # prediction: no y


def test_wrong_length_still_suggests_classes():
    with pytest.raises(ValueError, match="shape \\(3,\\).*classes="):
        check_task_ids(np.arange(3), 10, y=np.zeros(10, int))


# ---------------------------------------------------------------- the classes= argument


def test_classes_argument_is_sorted_and_unique():
    assert check_classes_argument([3, 1, 3, 2]).tolist() == [1, 2, 3]
    assert check_classes_argument(("dog", "cat")).tolist() == ["cat", "dog"]
    assert check_classes_argument(np.array([1.0, 0.0])).tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    "classes, match",
    [
        ([0, 1, np.nan], r"classes=\[0, 1, nan\] holds a missing value"),
        (np.array([0.0, np.nan]), "missing value"),
        (["a", None], "missing value"),
        ([[0, 1], [2, 3]], r"1-D array-like .* shape \(2, 2\)"),
        (np.zeros((1, 3)), r"shape \(1, 3\)"),
        (3, r"shape \(\)"),
        ("ab", "got the string 'ab'"),
        ([], "at least one class"),
        (["a", 1], "mixes numbers and strings"),
        ([0.5, 1.5], "are not class labels"),
        ([[0, 1], [2]], "1-D array-like"),
    ],
    ids=["nan", "nan-array", "none", "2d", "2d-row", "scalar", "string", "empty", "mixed",
         "continuous", "ragged"],
)
def test_bad_classes_argument_raises(classes, match):
    with pytest.raises(ValueError, match=match):
        check_classes_argument(classes)


# ---------------------------------------------------------------- numbers vs strings


def test_same_kind_message_names_the_labels_and_the_known_classes():
    with pytest.raises(ValueError) as info:
        check_same_kind(np.array([1, 0, 1]), np.array(["a", "b"]), name="y")
    message = str(info.value)
    assert "y holds numbers [1, 0]" in message
    assert "but the classes are strings: ['a', 'b']" in message
    assert "mix numbers and strings" in message


def test_same_kind_accepts_matching_kinds_and_unknown_classes():
    check_same_kind(np.array([0, 1]), np.array([0.0, 5.0]))
    check_same_kind(np.array(["x"], dtype=object), np.array(["a", "b"]))
    check_same_kind(np.array(["x"]), None)
    check_same_kind(np.array([], dtype=int), np.array(["a"]))


def test_same_kind_rejects_labels_mixing_kinds_and_shortens_long_lists():
    with pytest.raises(ValueError, match=r"labels \['a', 1\] mix numbers and strings"):
        check_same_kind(np.array(["a", 1], dtype=object), None)
    with pytest.raises(ValueError, match=r"\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \.\.\. \(50 in all\)\]"):
        check_same_kind(np.arange(50), np.array(["a"]))
