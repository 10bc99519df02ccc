"""Metrics of Lopez-Paz & Ranzato (2017) on matrices whose values are worked out by hand."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skcl.metrics import (
    accuracy_matrix,
    average_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    summarize,
)

# R[i, j]: accuracy on experience j after training experience i.
R3 = np.array([
    [0.80, 0.10, 0.30],
    [0.60, 0.90, 0.20],
    [0.50, 0.70, 0.95],
])
B3 = np.array([0.10, 0.25, 0.50])


def test_average_accuracy_is_mean_of_last_row():
    # (0.5 + 0.7 + 0.95) / 3
    assert average_accuracy(R3) == pytest.approx(2.15 / 3)


def test_backward_transfer_by_hand():
    # ((R[2,0] - R[0,0]) + (R[2,1] - R[1,1])) / 2 = ((0.5 - 0.8) + (0.7 - 0.9)) / 2
    assert backward_transfer(R3) == pytest.approx(-0.25)


def test_forward_transfer_by_hand():
    # ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((0.1 - 0.25) + (0.2 - 0.5)) / 2
    assert forward_transfer(R3, B3) == pytest.approx(-0.225)


def test_forgetting_by_hand():
    # j=0: max(0.8, 0.6) - 0.5 = 0.3 ; j=1: max(0.1, 0.9) - 0.7 = 0.2
    np.testing.assert_allclose(forgetting(R3), [0.3, 0.2])


def test_forgetting_maximum_runs_over_all_rows_before_the_last():
    # PROTOCOL: max over i < T-1, so an entry from before experience j was trained counts.
    R = np.array([[0.9, 0.6, 0.0], [0.9, 0.4, 0.0], [0.9, 0.3, 0.5]])
    np.testing.assert_allclose(forgetting(R), [0.0, 0.3])


def test_summarize_collects_the_metrics():
    summary = summarize(R3, B3)
    assert set(summary) == {"acc", "bwt", "fwt", "forgetting"}
    assert summary["acc"] == pytest.approx(2.15 / 3)
    assert summary["bwt"] == pytest.approx(-0.25)
    assert summary["fwt"] == pytest.approx(-0.225)
    assert summary["forgetting"] == pytest.approx(0.25)
    assert all(isinstance(v, float) for v in summary.values())
    assert math.isnan(summarize(R3)["fwt"])


def test_single_experience():
    R = np.array([[0.7]])
    assert average_accuracy(R) == pytest.approx(0.7)
    assert backward_transfer(R) == 0.0
    assert math.isnan(forward_transfer(R, [0.5]))
    assert forgetting(R).shape == (0,)
    assert summarize(R, [0.5])["forgetting"] == 0.0


def test_perfect_memory_has_no_forgetting():
    R = np.full((4, 4), 0.5)
    R[np.tril_indices(4)] = 1.0
    assert backward_transfer(R) == 0.0
    np.testing.assert_array_equal(forgetting(R), np.zeros(3))
    assert forward_transfer(R, np.full(4, 0.5)) == 0.0


@pytest.mark.parametrize(
    "R, match",
    [
        (np.ones((2, 3)), "square"),
        (np.ones(3), "square"),
        (np.ones((0, 0)), "square"),
        (np.array([[0.5, np.nan], [0.5, 0.5]]), "NaN"),
        (np.array([[0.5, np.inf], [0.5, 0.5]]), "NaN"),
        (np.array([[1.2, 0.0], [0.5, 0.5]]), r"\[0, 1\]"),
        (np.array([[-0.1, 0.0], [0.5, 0.5]]), r"\[0, 1\]"),
    ],
)
def test_invalid_matrices_are_rejected(R, match):
    for metric in (average_accuracy, backward_transfer, forgetting, summarize):
        with pytest.raises(ValueError, match=match):
            metric(R)


def test_baseline_is_validated():
    with pytest.raises(ValueError, match="shape"):
        forward_transfer(R3, [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        forward_transfer(R3, [0.1, np.nan, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        forward_transfer(R3, [0.1, 2.0, 0.2])


def test_accuracy_matrix_by_hand():
    y_true = [np.array([0, 0, 1, 1]), np.array([2, 3])]
    y_pred = [
        [np.array([0, 0, 1, 0]), np.array([0, 0])],  # 3/4, 0/2
        [np.array([2, 2, 1, 1]), np.array([2, 3])],  # 2/4, 2/2
    ]
    np.testing.assert_array_equal(accuracy_matrix(y_true, y_pred), [[0.75, 0.0], [0.5, 1.0]])


def test_accuracy_matrix_string_labels():
    y_true = [np.array(["cat", "dog"])]
    assert accuracy_matrix(y_true, [[np.array(["cat", "cat"])]]).tolist() == [[0.5]]


def test_accuracy_matrix_validates_shapes():
    y_true = [np.array([0, 1]), np.array([2, 3])]
    with pytest.raises(ValueError, match="rows"):
        accuracy_matrix(y_true, [[[0, 1], [2, 3]]])
    with pytest.raises(ValueError, match="prediction arrays"):
        accuracy_matrix(y_true, [[[0, 1]], [[0, 1], [2, 3]]])
    with pytest.raises(ValueError, match="predictions for"):
        accuracy_matrix(y_true, [[[0, 1], [2]], [[0, 1], [2, 3]]])
    with pytest.raises(ValueError, match="empty"):
        accuracy_matrix([], [])
    with pytest.raises(ValueError, match="empty"):
        accuracy_matrix([np.array([])], [[np.array([])]])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 6).flatmap(
        lambda T: arrays(np.float64, (T, T), elements=st.floats(0.0, 1.0))
    )
)
def test_metric_identities(R):
    T = R.shape[0]
    acc, bwt, f = average_accuracy(R), backward_transfer(R), forgetting(R)
    # The last row splits into the diagonal's last entry and the BWT terms.
    assert (T - 1) * bwt == pytest.approx(T * acc - np.trace(R), abs=1e-9)
    # Forgetting measures from the best earlier accuracy, never below the drop BWT sees.
    assert f.mean() >= -bwt - 1e-12
    assert np.all(f >= R[np.arange(T - 1), np.arange(T - 1)] - R[T - 1, : T - 1] - 1e-12)
    assert 0.0 <= acc <= 1.0
