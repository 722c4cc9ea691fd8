"""Percentile bootstrap intervals: one rule for every fit that reports one.

Only the finite samples count (a resample can give an infinite or undefined optimum); with
fewer than two there is no interval and no spread, so low, high and se are NaN rather than a
zero-width interval that would look certain.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def percentile_interval(samples: Any, level: float, count: bool = False) -> dict[str, Any]:
    """{low, high, se} of the finite samples at `level` (e.g. 0.95), plus n (how many were
    finite) when `count`."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if samples.size < 2:
        out: dict[str, Any] = {"low": float("nan"), "high": float("nan"), "se": float("nan")}
    else:
        low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
        out = {"low": float(low), "high": float(high), "se": float(samples.std(ddof=1))}
    if count:
        out["n"] = int(samples.size)
    return out
