"""Billing arithmetic follows the price table exactly (no kernel)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from profiler.tax.cost import PRICE_TABLES, billed_seconds, compute_cost, cpu_share_for_memory, price_table, \
    validate_memory_mb
from profiler.errors import ConfigError, InputError

X86 = PRICE_TABLES["x86_64"]


def test_cost_of_one_invocation_by_hand() -> None:
    cost = compute_cost(duration_seconds=1.0001, tax_seconds=0.25, baseline_seconds=0.4, memory_mb=128,
                        prices=X86)
    assert cost.billed_seconds == pytest.approx(1.001, rel=1e-12)
    per_invocation = 1.001 * (128 / 1024) * 0.0000166667 + 0.20 / 1e6
    assert cost.per_invocation_dollars == pytest.approx(per_invocation, rel=1e-12)
    assert cost.per_million_dollars == pytest.approx(per_invocation * 1e6, rel=1e-12)
    assert cost.tax_per_million_dollars == pytest.approx(0.25 * 0.125 * 0.0000166667 * 1e6, rel=1e-12)
    assert cost.baseline_per_million_dollars == pytest.approx((0.4 * 0.125 * 0.0000166667 + 0.2e-6) * 1e6,
                                                              rel=1e-12)


def test_arm64_and_exact_millisecond() -> None:
    arm = price_table("arm64")
    cost = compute_cost(0.123, 0.0, 0.123, 1769, arm)
    assert cost.billed_seconds == pytest.approx(0.123, rel=1e-12)
    assert cost.per_invocation_dollars == pytest.approx(0.123 * 1769 / 1024 * 0.0000133334 + 0.2e-6, rel=1e-12)


@given(duration=st.floats(min_value=1e-6, max_value=900.0))
def test_billed_covers_duration_within_one_unit(duration: float) -> None:
    billed = billed_seconds(duration, X86)
    assert billed >= duration - 1e-9
    assert billed - duration < 0.001 + 1e-9


def test_price_file_overrides(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("gb_second: 0.00002\ngranularity_ms: 100\n")
    prices = price_table(str(path))
    assert (prices.gb_second, prices.per_million_requests, prices.granularity_ms) == (0.00002, 0.20, 100.0)
    assert compute_cost(0.101, 0, 0.05, 1024, prices).billed_seconds == pytest.approx(0.2)


@pytest.mark.parametrize("text, message", [
    ("gb_second: -1\n", "field 'gb_second' must be positive"),
    ("gb_second: cheap\n", "field 'gb_second' must be a number"),
    ("granularity_ms: [1]\n", "field 'granularity_ms' must be a number"),
    ("bogus: 1\n", "unknown field 'bogus'"),
    ("- 1\n- 2\n", "expected a mapping"),
    ("gb_second: [unclosed\n", "not a readable YAML"),
    ("base: sparc\n", "field 'base'"),
])
def test_malformed_price_file_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        price_table(str(path))
    assert str(path) in str(info.value)


def test_unknown_table_and_memory_bounds() -> None:
    with pytest.raises(InputError, match="unknown price table"):
        price_table("mainframe")
    with pytest.raises(InputError, match="outside 128..10240"):
        validate_memory_mb(64)
    assert cpu_share_for_memory(1769) == 1.0
    assert cpu_share_for_memory(256) == pytest.approx(256 / 1769)
