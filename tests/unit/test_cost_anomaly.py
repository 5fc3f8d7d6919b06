"""The anomaly rule: a run costing more than 1.5x the trailing p90 of its workflow's runs."""

from __future__ import annotations

import pytest

from bridgehead.domain.costs import anomaly, p90


def test_p90_is_a_nearest_rank_value() -> None:
    assert p90([5.0]) == 5.0
    assert p90([float(v) for v in range(1, 11)]) == 9.0
    assert p90([float(v) for v in range(1, 21)]) == 18.0
    assert p90([3.0, 1.0, 2.0]) == 3.0
    with pytest.raises(ValueError):
        p90([])


def test_a_run_above_one_and_a_half_times_the_p90_is_an_anomaly() -> None:
    trailing = [1.0, 0.5, 0.75, 2.0, 1.0]
    assert anomaly(3.01, trailing) == 2.0
    assert anomaly(3.0, trailing) is None  # exactly 1.5x: not more
    assert anomaly(0.1, trailing) is None


def test_too_few_or_free_runs_say_nothing() -> None:
    assert anomaly(100.0, [1.0, 1.0, 1.0, 1.0]) is None
    assert anomaly(100.0, [0.0] * 10) is None
    assert anomaly(100.0, [1.0] * 3, min_runs=3) == 1.0
