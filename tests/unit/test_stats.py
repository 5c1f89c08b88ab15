"""Percentiles match numpy's linear definition (no kernel)."""

from __future__ import annotations

import numpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiler.errors import InputError
from profiler.tax.stats import percentiles


def test_by_hand() -> None:
    result = percentiles([10.0, 20.0, 30.0, 40.0, 50.0])
    # rank = (n - 1) * p: p20 -> 0.8 -> 10 + 0.8 * 10
    assert result == pytest.approx({"p20": 18.0, "p40": 26.0, "p60": 34.0, "p80": 42.0, "p99": 49.6,
                                    "mean": 30.0})


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200))
def test_against_numpy(values: list[float]) -> None:
    result = percentiles(values)
    for p in (20, 40, 60, 80, 99):
        assert result[f"p{p}"] == pytest.approx(float(numpy.percentile(values, p)), rel=1e-9, abs=1e-9)
    assert result["mean"] == pytest.approx(float(numpy.mean(values)), rel=1e-9, abs=1e-9)


def test_single_and_empty() -> None:
    assert set(percentiles([3.0]).values()) == {3.0}
    with pytest.raises(InputError):
        percentiles([])
