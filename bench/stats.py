"""Figures the benchmarks share."""
from __future__ import annotations


def pct(values: list[float], q: float) -> float:
    """Percentile ``q`` in [0, 1] by linear interpolation (numpy's default), in the values' unit;
    nan for no values."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)
