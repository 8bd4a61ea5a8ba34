"""Latency statistics in pure Python (robot side: no numpy needed for the numbers)."""

from __future__ import annotations

import math
from typing import Dict, Sequence

PERCENTILES = (50, 90, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    frac = pos - lo
    return sorted_values[lo] * (1.0 - frac) + sorted_values[hi] * frac


def summarize_ms(latencies_ms: Sequence[float]) -> Dict[str, float]:
    """min/mean/p50/p90/p95/p99/max/stdev of latencies in milliseconds."""
    values = sorted(latencies_ms)
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    out = {"min": values[0], "mean": mean, "max": values[-1], "stdev": math.sqrt(var)}
    for q in PERCENTILES:
        out["p%d" % q] = percentile(values, q)
    return {k: round(v, 6) for k, v in out.items()}
