"""Lambda-style billing: GB-seconds, requests, billing granularity.

An invocation is billed its duration rounded up to the granularity, times
the memory size in GB, times the GB-second price, plus the request price.
The tax's share is prorated: tax seconds (not rounded) x GB x price, so the
tax share of a 1.2 ms invocation is not inflated by rounding to 2 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from profiler.errors import ConfigError, InputError
from profiler.files import load_yaml

MIN_MEMORY_MB = 128
MAX_MEMORY_MB = 10_240
FULL_CPU_MB = 1769  # one full vCPU at this memory size


@dataclass(frozen=True)
class PriceTable:
    name: str
    gb_second: float
    per_million_requests: float
    granularity_ms: float


PRICE_TABLES = {
    "x86_64": PriceTable("x86_64", 0.0000166667, 0.20, 1.0),
    "arm64": PriceTable("arm64", 0.0000133334, 0.20, 1.0),
}


@dataclass(frozen=True)
class Cost:
    memory_mb: int
    billed_seconds: float
    per_invocation_dollars: float
    per_million_dollars: float
    tax_per_million_dollars: float
    baseline_per_million_dollars: float


def price_table(name_or_path: str | None) -> PriceTable:
    """A named table (x86_64, arm64) or a YAML/JSON file overriding the x86_64 defaults."""
    if name_or_path is None:
        return PRICE_TABLES["x86_64"]
    if name_or_path in PRICE_TABLES:
        return PRICE_TABLES[name_or_path]
    path = Path(name_or_path)
    if not path.exists():
        raise InputError(f"unknown price table {name_or_path!r}: use x86_64, arm64 or a file")
    data = load_yaml(path, "YAML/JSON price file", unreadable=ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of prices")
    base_name = data.get("base", "x86_64")
    if not isinstance(base_name, str) or base_name not in PRICE_TABLES:
        raise ConfigError(f"{path}: field 'base' must be x86_64 or arm64")
    base = PRICE_TABLES[base_name]
    unknown = sorted(repr(k) for k in data
                     if not isinstance(k, str) or k not in {"base", "gb_second", "per_million_requests",
                                                            "granularity_ms"})
    if unknown:
        raise ConfigError(f"{path}: unknown field {unknown[0][:60]}")
    fields: dict[str, float] = {}
    for key in ("gb_second", "per_million_requests", "granularity_ms"):
        value = data.get(key, getattr(base, key))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: field '{key}' must be a number")
        try:
            number = float(value)
        except OverflowError as err:  # an integer past the float range
            raise ConfigError(f"{path}: field '{key}' must be a finite number") from err
        if not math.isfinite(number):
            raise ConfigError(f"{path}: field '{key}' must be a number")
        if number <= 0 and not (key == "per_million_requests" and number == 0):
            raise ConfigError(f"{path}: field '{key}' must be positive")
        fields[key] = number
    return PriceTable(name=str(path), **fields)


def validate_memory_mb(memory_mb: int) -> None:
    if not MIN_MEMORY_MB <= memory_mb <= MAX_MEMORY_MB:
        raise InputError(f"--memory-mb {memory_mb} is outside {MIN_MEMORY_MB}..{MAX_MEMORY_MB}")


def cpu_share_for_memory(memory_mb: int, full_cpu_mb: int = FULL_CPU_MB) -> float:
    """Fraction of one CPU a function of this size gets (CPU in proportion to memory)."""
    return memory_mb / full_cpu_mb


def billed_seconds(duration_seconds: float, prices: PriceTable) -> float:
    granularity = prices.granularity_ms / 1000
    # Round up, forgiving float noise a hair above a whole number of units.
    units = math.ceil(round(duration_seconds / granularity, 9))
    return max(1, units) * granularity


def compute_cost(duration_seconds: float, tax_seconds: float, baseline_seconds: float,
                 memory_mb: int, prices: PriceTable) -> Cost:
    gb = memory_mb / 1024
    request = prices.per_million_requests / 1e6
    billed = billed_seconds(duration_seconds, prices)
    per_invocation = billed * gb * prices.gb_second + request
    baseline_invocation = billed_seconds(baseline_seconds, prices) * gb * prices.gb_second + request
    return Cost(memory_mb=memory_mb, billed_seconds=billed, per_invocation_dollars=per_invocation,
                per_million_dollars=per_invocation * 1e6,
                tax_per_million_dollars=tax_seconds * gb * prices.gb_second * 1e6,
                baseline_per_million_dollars=baseline_invocation * 1e6)

