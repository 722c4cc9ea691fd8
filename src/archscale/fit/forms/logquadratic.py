"""Forms quadratic in ln x and ln r: the U of each axis is a parabola in log space, symmetric
about its optimum, instead of the paper's a ln v + b / v (steeper on the small side).

    quadratic    L = (c0 + a1 u + a2 u^2 + b1 v + b2 v^2) * L_opt(N, D)
    quadratic_n  L = (c0 + c1 w + a1 u + a2 u^2 + a3 u w + b1 v + b2 v^2 + b3 v w) * L_opt(N, D)

with u = ln x, v = ln r and w = ln(N / 1e6). The optimum is x* = exp(-a1 / (2 a2)) (a minimum
when a2 > 0), and likewise r*; in quadratic_n both optima move with N:
x*(N) = exp(-(a1 + a3 w) / (2 a2)), and c1 lets the level move with N too (when L_opt is the
loss of a base shape whose distance from a moving optimum changes with N, the ratio to it
shifts by size). Why both: the laptop study's data fit the paper's form and
the plain quadratic equally well yet put r* in disjoint places, and its per-size parabolas put
x* at 0.33 at 33k and 0.23 at 255k; a study reports the optimum of each and lets held-out
error choose (archscale.fit.compare).

Both are linear in their coefficients once L_opt is known, so the starting point is the exact
least-squares solution and Levenberg-Marquardt only confirms it. Nothing needs normalising:
c0 carries the scale.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from archscale.fit.forms import register
from archscale.fit.forms.base import LawForm, Optimum, Reported, Split

#: quadratic_n measures N from here (w = ln(N / N_REF)); the choice changes no prediction.
N_REF = 1e6


def _star(lin: Any, curv: float, names: str) -> Optimum:
    """exp(-lin / (2 curv)), the stationary point of lin v + curv v^2 in v = ln(axis)."""
    lin = float(lin)
    if curv == 0:
        star = float("nan")
    else:
        star = math.exp(min(max(-lin / (2 * curv), -700.0), 700.0))
    return Optimum(star=star, is_minimum=bool(curv > 0),
                   condition=f"{names} = {curv:.4g}; it must be positive")


class LogQuadratic(LawForm):
    """Shared parts: the law is (design row . coefficients) * L_opt."""

    distinct_needed = {"x": 3, "r": 3}

    def design(self, x: Any, r: Any, **n: Any) -> np.ndarray:
        raise NotImplementedError

    def _c(self, c: Mapping[str, float]) -> np.ndarray:
        return np.array([c[k] for k in self.coefficient_names], dtype=float)

    def predict(self, c, x, r, l_opt, **n) -> np.ndarray:
        x, r = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(r, dtype=float))
        return (self.design(x, r, **n) @ self._c(c)) * np.asarray(l_opt, dtype=float)

    def model(self, p, x, r, l_opt, **n):
        return (self.design(x, r, **n) @ p) * l_opt

    def jacobian(self, p, x, r, l_opt, **n):
        return self.design(x, r, **n) * np.asarray(l_opt, dtype=float)[:, None]

    def initial(self, x, r, loss, l_opt, **n):
        p, *_ = np.linalg.lstsq(self.jacobian(None, x, r, l_opt, **n), loss, rcond=None)
        return p

    def report(self, p, r_fitted) -> Reported:
        return Reported({k: float(v) for k, v in zip(self.coefficient_names, p)},
                        "none needed (c0 carries the scale)", True)


class Quadratic(LogQuadratic):
    name = "quadratic"
    formula = "L = (c0 + a1 ln x + a2 (ln x)^2 + b1 ln r + b2 (ln r)^2) * L_opt(N, D)"
    coefficient_names = ("c0", "a1", "a2", "b1", "b2")
    n_free = 5

    def design(self, x, r):
        u, v = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(r, dtype=float))
        return np.stack([np.ones_like(u), u, u * u, v, v * v], axis=-1)

    def optimum(self, c) -> dict[str, Optimum]:
        return {"x": _star(c["a1"], c["a2"], "a2"), "r": _star(c["b1"], c["b2"], "b2")}

    def split(self, c, x, r, loss, l_opt) -> dict[str, Split]:
        def x_part(s):
            return c["c0"] + c["a1"] * np.log(s) + c["a2"] * np.log(s) ** 2

        def r_part(s):
            return c["b1"] * np.log(s) + c["b2"] * np.log(s) ** 2

        ratio = loss / l_opt
        return {"x": Split(ratio - r_part(r), x_part, "L / L_opt - r terms"),
                "r": Split(ratio - x_part(x) + c["c0"], lambda s: c["c0"] + r_part(s),
                           "L / L_opt - x terms")}


class QuadraticN(LogQuadratic):
    name = "quadratic_n"
    formula = ("L = (c0 + c1 w + a1 u + a2 u^2 + a3 u w + b1 v + b2 v^2 + b3 v w) * L_opt(N, D),"
               " u = ln x, v = ln r, w = ln(N / 1e6)")
    coefficient_names = ("c0", "c1", "a1", "a2", "a3", "b1", "b2", "b3")
    n_free = 8
    depends_on_n = True

    def design(self, x, r, n):
        u, v = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(r, dtype=float))
        w = np.broadcast_to(np.log(np.asarray(n, dtype=float) / N_REF), u.shape)
        return np.stack([np.ones_like(u), w, u, u * u, u * w, v, v * v, v * w], axis=-1)

    def optimum(self, c, n) -> dict[str, Optimum]:
        w = math.log(float(n) / N_REF)
        return {"x": _star(c["a1"] + c["a3"] * w, c["a2"], "a2"),
                "r": _star(c["b1"] + c["b3"] * w, c["b2"], "b2")}

    def split(self, c, x, r, loss, l_opt, n) -> dict[str, Split]:
        """The curves at the geometric-mean N; each run's point is moved to that N."""
        w = np.log(np.asarray(n, dtype=float) / N_REF)
        wm = float(np.mean(w))

        def x_at(s, ww):
            return (c["a1"] + c["a3"] * ww) * np.log(s) + c["a2"] * np.log(s) ** 2

        def r_at(s, ww):
            return (c["b1"] + c["b3"] * ww) * np.log(s) + c["b2"] * np.log(s) ** 2

        level = c["c0"] + c["c1"] * wm
        ratio = loss / l_opt - c["c1"] * (w - wm)
        return {"x": Split(ratio - r_at(r, w) - x_at(x, w) + x_at(x, wm),
                           lambda s: level + x_at(s, wm),
                           f"L / L_opt - r terms (at N = {N_REF * math.exp(wm):.3g})"),
                "r": Split(ratio - x_at(x, w) - r_at(r, w) + r_at(r, wm),
                           lambda s: level + r_at(s, wm),
                           f"L / L_opt - x terms (at N = {N_REF * math.exp(wm):.3g})")}


QUADRATIC = register(Quadratic())
QUADRATIC_N = register(QuadraticN())
