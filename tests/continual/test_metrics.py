"""Retention-matrix metrics against values computed by hand (float64).

ACC and BWT: Lopez-Paz & Ranzato (2017), GEM, section 2; forgetting: Chaudhry et al.
(2018), RWalk, eq. 3, at the last task.
"""

from __future__ import annotations

import math

import pytest

from lifelong.continual.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    mean_std,
    summary,
)

# Task 0 improves after task 1 (0.5 -> 0.9) and then drops to 0.6: BWT sees +0.1 for it,
# forgetting sees the drop from its best (0.9 -> 0.6).
R = [[0.5, None, None],
     [0.9, 0.8, None],
     [0.6, 0.7, 0.9]]


def test_average_accuracy_is_the_mean_of_the_last_row() -> None:
    assert average_accuracy(R) == pytest.approx((0.6 + 0.7 + 0.9) / 3, abs=1e-15)


def test_backward_transfer_compares_the_last_row_with_the_diagonal() -> None:
    # ((0.6 - 0.5) + (0.7 - 0.8)) / 2 = 0
    assert backward_transfer(R) == pytest.approx(0.0, abs=1e-15)


def test_forgetting_is_the_drop_from_the_best_earlier_score() -> None:
    # f0 = max(0.5, 0.9) - 0.6 = 0.3; f1 = 0.8 - 0.7 = 0.1; F = 0.2
    assert forgetting(R) == pytest.approx(0.2, abs=1e-15)


def test_plain_forgetting_stream() -> None:
    # learns each task perfectly, forgets each completely the step after
    R2 = [[1.0, None, None], [0.0, 1.0, None], [0.0, 0.0, 1.0]]
    assert summary(R2) == {"average": pytest.approx(1 / 3), "bwt": -1.0, "forgetting": 1.0}


def test_one_task_has_no_transfer_and_no_forgetting() -> None:
    assert summary([[0.4]]) == {"average": 0.4, "bwt": None, "forgetting": None}


def test_unmeasured_cells_and_bad_shapes_are_errors() -> None:
    with pytest.raises(ValueError, match="R\\[2\\]\\[1\\]"):
        average_accuracy([[1.0, None, None], [1.0, 1.0, None], [1.0, None, 1.0]])
    with pytest.raises(ValueError, match="square"):
        average_accuracy([[1.0], [1.0, 1.0]])


def test_mean_and_sample_std() -> None:
    m, s = mean_std([1.0, 2.0, 3.0, 4.0, None])
    assert m == 2.5 and s == pytest.approx(math.sqrt(5 / 3), abs=1e-15)
    assert mean_std([2.0]) == (2.0, None)
    assert mean_std([None]) == (None, None)


def test_a_task_that_improves_later_has_negative_forgetting() -> None:
    # learning task 1 helped task 0: BWT = 0.5 - 0.2, forgetting = 0.2 - 0.5 (not clipped at 0)
    R3 = [[0.2, None], [0.5, 0.9]]
    assert backward_transfer(R3) == pytest.approx(0.3, abs=1e-15)
    assert forgetting(R3) == pytest.approx(-0.3, abs=1e-15)
