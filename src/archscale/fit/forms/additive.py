"""The additive form: L = (a0 + a1 ln x + a2/x) + (b1 ln r + b2/r) + L_opt(N, D).

A constant in the r term could not be told apart from a0, so there is none: b0 is reported as 0
(kept so both built-in forms store the same six names) and nothing needs normalising.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from archscale.fit.forms import register
from archscale.fit.forms.base import Reported, Split
from archscale.fit.forms.terms import UTermForms, u_term


class Additive(UTermForms):
    name = "additive"
    formula = "L = (a0 + a1 ln x + a2/x) + (b1 ln r + b2/r) + L_opt(N, D)"

    def coefficients(self, values: Mapping[str, Any]) -> dict[str, float]:
        """b0 may be absent and is always 0."""
        return super().coefficients({**values, "b0": 0.0})

    def predict(self, c: Mapping[str, float], x: Any, r: Any, l_opt: Any) -> np.ndarray:
        return self.x_term(c, x) + self.r_term(c, r) + np.asarray(l_opt, dtype=float)

    def model(self, p, x, r, l_opt):
        return u_term(p[0], p[1], p[2], x) + p[3] * np.log(r) + p[4] / r + l_opt

    def jacobian(self, p, x, r, l_opt):
        return np.column_stack([np.ones_like(x), np.log(x), 1.0 / x, np.log(r), 1.0 / r])

    def initial(self, x, r, loss, l_opt):
        """The model is linear in p: its exact least-squares solution."""
        p, *_ = np.linalg.lstsq(self.jacobian(None, x, r, l_opt), loss - l_opt, rcond=None)
        return p

    def report(self, p, r_fitted) -> Reported:
        values = (p[0], p[1], p[2], 0.0, p[3], p[4])
        return Reported({k: float(v) for k, v in zip(self.coefficient_names, values)},
                        "none needed (additive form)", True)

    def split(self, c, x, r, loss, l_opt) -> dict[str, Split]:
        fx, fr = (lambda v: self.x_term(c, v)), (lambda v: self.r_term(c, v))
        return {"x": Split(loss - l_opt - fr(r), fx, "L - L_opt - r term"),
                "r": Split(loss - l_opt - fx(x), fr, "L - L_opt - x term")}


FORM = register(Additive())
