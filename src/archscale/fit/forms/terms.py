"""The paper's U-shaped term c0 + c1 ln v + c2 / v, shared by the built-in forms.

Its derivative c1 / v - c2 / v^2 vanishes at v* = c2 / c1, a minimum when c1 and c2 are both
positive.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from archscale.fit.forms.base import LawForm, Optimum


def u_term(c0: float, c1: float, c2: float, v: Any) -> np.ndarray:
    """c0 + c1 ln v + c2 / v."""
    v = np.asarray(v, dtype=float)
    return c0 + c1 * np.log(v) + c2 / v


def u_optimum(c1: float, c2: float, names: str) -> Optimum:
    """v* = c2 / c1 (NaN when c1 is 0); `names` are the coefficients' names for the text."""
    return Optimum(star=c2 / c1 if c1 != 0 else float("nan"), is_minimum=bool(c1 > 0 and c2 > 0),
                   condition=f"{names} = {c1:.4g}, {c2:.4g}; both must be positive")


class UTermForms(LawForm):
    """Base of the forms built from one U-term in x (a0, a1, a2) and one in r (b0, b1, b2):
    the six coefficient names, five of them free, and the optimum of each term."""

    coefficient_names = ("a0", "a1", "a2", "b0", "b1", "b2")
    n_free = 5  # a0, a1, a2, b1, b2: b0 is fixed (multiplicative) or absent (additive)

    def x_term(self, c: Mapping[str, float], x: Any) -> np.ndarray:
        return u_term(c["a0"], c["a1"], c["a2"], x)

    def r_term(self, c: Mapping[str, float], r: Any) -> np.ndarray:
        return u_term(c["b0"], c["b1"], c["b2"], r)

    def optimum(self, c: Mapping[str, float]) -> dict[str, Optimum]:
        return {"x": u_optimum(c["a1"], c["a2"], "a1, a2"),
                "r": u_optimum(c["b1"], c["b2"], "b1, b2")}
