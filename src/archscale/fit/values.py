"""When two measured values count as the same: one rule for every "how many distinct x, r, N
or D" question the fits ask.

Values are compared in log space: two that differ by less than `REL_TOL` (1 %, relative) are
one value. Solved shapes miss their targets by a fraction of a percent, and a rounding rule
(the previous 1e-6 in log space) counted such near-repeats as new values, so a fold or a fit
could believe it had a spread of sizes or budgets that is not there.
"""
from __future__ import annotations

from typing import Any

import numpy as np

REL_TOL = 0.01


def distinct_count(values: Any, rel: float = REL_TOL) -> int:
    """How many distinct values: sorted, a new one starts where the gap in log exceeds `rel`."""
    v = np.sort(np.log(np.asarray(values, dtype=float).ravel()))
    return int(1 + np.sum(np.diff(v) > rel)) if len(v) else 0


def absent_from(values: Any, reference: Any, rel: float = REL_TOL) -> np.ndarray:
    """The distinct `values` with no match (within `rel`, in log) among `reference`."""
    v = np.unique(np.log(np.asarray(values, dtype=float).ravel()))
    ref = np.log(np.asarray(reference, dtype=float).ravel())
    if not len(ref):
        return np.exp(v)
    near = np.abs(v[:, None] - ref[None, :]).min(axis=1) <= rel
    return np.exp(v[~near])
