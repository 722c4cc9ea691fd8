"""The paper's main form: L = (a0 + a1 ln x + a2/x) * (b0 + b1 ln r + b2/r) * L_opt(N, D).

Scaling one factor by s and the other by 1/s changes no prediction, so the fit holds b0 = 1
and the report rescales so that the r factor equals 1 at its optimum r* = b2/b1; the x factor
then carries the scale. When the fitted r factor has no interior minimum (b1 <= 0 or b2 <= 0)
it is normalised to 1 at the geometric mean of the fitted r instead (at_optimum False).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from archscale.fit.forms import register
from archscale.fit.forms.base import Reported, Split
from archscale.fit.forms.terms import UTermForms, u_term


def normalise(c: Mapping[str, float], r_ref: float) -> dict[str, float]:
    """The same law with the r factor scaled to 1 at r_ref (and the x factor by the inverse)."""
    s = float(u_term(c["b0"], c["b1"], c["b2"], r_ref))
    return {**{k: c[k] * s for k in ("a0", "a1", "a2")},
            **{k: c[k] / s for k in ("b0", "b1", "b2")}}


class Multiplicative(UTermForms):
    name = "multiplicative"
    formula = "L = (a0 + a1 ln x + a2/x) * (b0 + b1 ln r + b2/r) * L_opt(N, D)"

    def predict(self, c: Mapping[str, float], x: Any, r: Any, l_opt: Any) -> np.ndarray:
        return self.x_term(c, x) * self.r_term(c, r) * np.asarray(l_opt, dtype=float)

    def model(self, p, x, r, l_opt):
        return u_term(p[0], p[1], p[2], x) * (1.0 + p[3] * np.log(r) + p[4] / r) * l_opt

    def jacobian(self, p, x, r, l_opt):
        lx, ix, lr, ir = np.log(x), 1.0 / x, np.log(r), 1.0 / r
        fx = u_term(p[0], p[1], p[2], x)
        fr = 1.0 + p[3] * lr + p[4] * ir
        return np.column_stack([fr * l_opt, lx * fr * l_opt, ix * fr * l_opt,
                                fx * lr * l_opt, fx * ir * l_opt])

    def initial(self, x, r, loss, l_opt):
        """Linear least squares for the x factor with the r terms off."""
        design = np.column_stack([np.ones_like(x), np.log(x), 1.0 / x])
        a, *_ = np.linalg.lstsq(design, loss / l_opt, rcond=None)
        return np.concatenate([a, [0.0, 0.0]])

    def report(self, p, r_fitted) -> Reported:
        c = dict(zip(self.coefficient_names, (p[0], p[1], p[2], 1.0, p[3], p[4])))
        b1, b2 = c["b1"], c["b2"]
        if b1 > 0 and b2 > 0 and self.r_term(c, b2 / b1) > 0:
            return Reported(_floats(normalise(c, b2 / b1)),
                            "r factor equals 1 at r* (b0 + b1 ln r* + b2/r* = 1)", True)
        r_ref = float(np.exp(np.mean(np.log(r_fitted))))
        if self.r_term(c, r_ref) <= 0:
            return Reported(_floats(c), "b0 = 1 (not normalised: the fitted r factor is not "
                                        "positive at the fitted r)", False)
        return Reported(_floats(normalise(c, r_ref)),
                        f"r factor equals 1 at r = {r_ref:.4g}, the geometric mean of the fitted "
                        "r (the fitted r factor has no interior minimum)", False)

    def split(self, c, x, r, loss, l_opt) -> dict[str, Split]:
        fx, fr = (lambda v: self.x_term(c, v)), (lambda v: self.r_term(c, v))
        return {"x": Split(loss / (l_opt * fr(r)), fx, "L / (L_opt * r factor)"),
                "r": Split(loss / (l_opt * fx(x)), fr, "L / (L_opt * x factor)")}


def _floats(c: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in c.items()}


FORM = register(Multiplicative())
