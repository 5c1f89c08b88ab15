"""Percentiles for cold-start tables."""

from __future__ import annotations

import math
import statistics
from typing import Sequence

from profiler.errors import InputError

PERCENTILES = (20, 40, 60, 80, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, 'linear')."""
    rank = (len(sorted_values) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p20, p40, p60, p80, p99 and the mean."""
    if not values:
        raise InputError("no values to summarise")
    ordered = sorted(values)
    result = {f"p{p}": percentile(ordered, p) for p in PERCENTILES}
    result["mean"] = statistics.fmean(ordered)
    return result
