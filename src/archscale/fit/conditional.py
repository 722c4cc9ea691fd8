"""Stage 2: the architecture-conditional correction to L_opt(N, D).

With x = d_model / sqrt(N) and r = MLP parameters / attention parameters (Bian et al. 2026):

    multiplicative (default)  L = (a0 + a1 ln x + a2/x) * (b0 + b1 ln r + b2/r) * L_opt(N, D)
    additive                  L = (a0 + a1 ln x + a2/x) + (b1 ln r + b2/r) + L_opt(N, D)

Both are fitted by Levenberg-Marquardt (scipy.optimize.least_squares(method='lm')) on the raw
loss of the runs whose r lies in `r_range` (default [0.5, 5]). The multiplicative form is
unchanged when one factor is scaled by s and the other by 1/s, so the fit holds b0 = 1 and
afterwards rescales so that the r factor equals 1 at its optimum r* (b0 + b1 ln r* + b2/r* = 1);
the x factor then carries the scale. When the fitted r factor has no interior minimum
(b1 <= 0 or b2 <= 0) it is normalised to 1 at the geometric mean of the fitted r instead, and a
warning says so. The optimum of each factor is x* = a2/a1 and r* = b2/b1 (a minimum when both
coefficients are positive); when the fitted points do not reach both sides of x* (or r*), the
optimum is an extrapolation and a warning says so.

conditional.json (written by `ConditionalFit.to_dict`, read back by `load_conditional`):

    law            "conditional"
    form           "multiplicative" | "additive"
    formula        the formula above, as text
    coefficients   {a0, a1, a2, b0, b1, b2}   (additive: b0 is 0)
    normalisation  how the multiplicative scale was fixed, as text
    optimum        {x_star, r_star, x_is_minimum, r_is_minimum, x_extrapolated,
                    r_extrapolated, x_fitted: [min, max], r_fitted: [min, max],
                    x_interval_inside_fitted, r_interval_inside_fitted (with a bootstrap)}
    confidence_intervals  null, or {method, level, n_resamples, n_converged,
                    coefficients: {name: {low, high, se}}, optimum: {x_star, r_star: ...}};
                    the bootstrap resamples runs and, within each run, its seeds
    seed_noise     {pooled_sd, degrees_of_freedom, n_shapes, relative_sd, by_budget, method,
                    shapes}: the seed-to-seed SD of val_loss, overall and per token budget
                    (archscale.fit.seeds); pooled_sd is null when no shape has 2+ seeds
    optimum_margins  per size and budget with 3+ shapes: the best trained shape against its
                    nearest trained neighbours on each side in x and in r, in seed SDs
    l_opt          {source: "chinchilla" | "best_shapes" | "empirical" | "given" (per-run
                    values by the caller),
                    chinchilla: {E, A, B, alpha, beta} or null,
                    empirical: {columns: [N, D, loss], points: [[...], ...]} or null,
                    size_tolerance, between_points, outside_points}
    fit            {method, r_range, n_points, n_excluded, n_coefficients, rmse,
                    max_abs_residual, cost, nfev, status, message, success, time_s}
    warnings       list of sentences (also shown in the report)
    data           {columns: [name, N, D, x, r, loss, l_opt, predicted, residual, used],
                    rows: [[...], ...]}   every run read; `used` false outside r_range
    provenance     archscale version, commit, packages, host, settings, plus caller keys

How the search stage gets L_opt at any (N, D), `ConditionalLaw.l_opt(n, d)`:
- source "chinchilla" or "best_shapes": the Chinchilla law stored in `l_opt.chinchilla` (fitted
  on every run, or on the best shape of each size and budget).
- source "empirical": linear interpolation over the empirical points in (ln N, ln D) (over
  ln N alone when they share one D); outside the points, the stored Chinchilla law's shape
  anchored to the nearest empirical point; without a stored Chinchilla law such a query is an
  error (see chinchilla.EmpiricalLopt).

`paper_law()` builds the law from the paper's published coefficients for the search CLI.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from archscale.fit.chinchilla import (EPOCH_PUBLISHED, ChinchillaLaw, EmpiricalLopt, FitError,
                                      empirical_l_opt_per_run, empirical_points)
from archscale.fit.io import provenance
from archscale.fit.seeds import noise_warnings, optimum_margins, resample_losses, seed_noise

FORMS = ("multiplicative", "additive")
L_OPT_SOURCES = ("chinchilla", "best_shapes", "empirical")
LAW_L_OPT_SOURCES = L_OPT_SOURCES + ("given",)  # "given": per-run values passed by the caller
COEFFICIENTS = ("a0", "a1", "a2", "b0", "b1", "b2")
FORMULAS = {
    "multiplicative": "L = (a0 + a1 ln x + a2/x) * (b0 + b1 ln r + b2/r) * L_opt(N, D)",
    "additive": "L = (a0 + a1 ln x + a2/x) + (b1 ln r + b2/r) + L_opt(N, D)",
}
#: Bian et al. (ICLR 2026), multiplicative form, as published (not normalised).
PAPER_COEFFICIENTS = {"a0": 2.697, "a1": 0.0974, "a2": 0.0078,
                      "b0": 0.3870, "b1": 0.0063, "b2": 0.0065}
N_FREE = 5  # both forms: 3 x-coefficients + 2 r-coefficients (b0 fixed by normalisation / absent)


def _check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return form


def factor_x(a: Sequence[float], x: Any) -> np.ndarray:
    """a0 + a1 ln x + a2 / x."""
    x = np.asarray(x, dtype=float)
    return a[0] + a[1] * np.log(x) + a[2] / x


def factor_r(b: Sequence[float], r: Any) -> np.ndarray:
    """b0 + b1 ln r + b2 / r."""
    r = np.asarray(r, dtype=float)
    return b[0] + b[1] * np.log(r) + b[2] / r


def predict_loss(coefficients: "ConditionalLaw | Mapping[str, float]", x: Any, r: Any,
                 l_opt: Any, form: str | None = None) -> np.ndarray:
    """Predicted loss for arrays of x = d/sqrt(N), r = r_mlp/attn and L_opt (broadcast).

    `coefficients` is a ConditionalLaw or a mapping with a0, a1, a2, b0 (optional for the
    additive form), b1, b2 and optionally "form"; `form` overrides, default multiplicative.
    A few array operations, so millions of candidates take well under a second.
    """
    if isinstance(coefficients, ConditionalLaw):
        a, b = coefficients.a, coefficients.b
        form = form or coefficients.form
    else:
        form = form or coefficients.get("form", "multiplicative")
        missing = [k for k in ("a0", "a1", "a2", "b1", "b2") if k not in coefficients]
        if missing:
            raise KeyError(f"conditional coefficients need a0, a1, a2, b0, b1, b2; missing "
                           f"{missing}")
        a = tuple(float(coefficients[k]) for k in ("a0", "a1", "a2"))
        b = (float(coefficients.get("b0", 0.0)), float(coefficients["b1"]),
             float(coefficients["b2"]))
    _check_form(form)
    l_opt = np.asarray(l_opt, dtype=float)
    if form == "multiplicative":
        return factor_x(a, x) * factor_r(b, r) * l_opt
    return factor_x(a, x) + (b[1] * np.log(np.asarray(r, dtype=float))
                             + b[2] / np.asarray(r, dtype=float)) + l_opt


# ---------------------------------------------------------------------------------------------
# The law
# ---------------------------------------------------------------------------------------------

@dataclass
class ConditionalLaw:
    """A fitted (or published) conditional law with its reference L_opt(N, D)."""

    form: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    l_opt_source: str = "chinchilla"
    chinchilla: ChinchillaLaw | None = None
    empirical: EmpiricalLopt | None = None
    normalisation: str = ""
    #: the x and r spans of the runs the law was fitted on ([low, high]); None when unknown
    #: (the published law). The search marks candidates outside them.
    x_fitted: tuple[float, float] | None = None
    r_fitted: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _check_form(self.form)
        if self.l_opt_source not in LAW_L_OPT_SOURCES:
            raise ValueError(f"l_opt source must be one of {LAW_L_OPT_SOURCES}, "
                             f"got {self.l_opt_source!r}")
        self.a = tuple(float(v) for v in self.a)
        self.b = tuple(float(v) for v in self.b)
        if self.form == "additive":
            self.b = (0.0, self.b[1], self.b[2])

    @property
    def x_star(self) -> float:
        return self.a[2] / self.a[1] if self.a[1] != 0 else float("nan")

    @property
    def r_star(self) -> float:
        return self.b[2] / self.b[1] if self.b[1] != 0 else float("nan")

    def coefficients(self) -> dict[str, float]:
        return dict(zip(COEFFICIENTS, self.a + self.b))

    def factor_x(self, x: Any) -> np.ndarray:
        return factor_x(self.a, x)

    def factor_r(self, r: Any) -> np.ndarray:
        """The r term: b0 + b1 ln r + b2/r (additive: b0 = 0)."""
        return factor_r(self.b, r)

    def predict(self, x: Any, r: Any, l_opt: Any) -> np.ndarray:
        """Loss at given x, r and reference loss L_opt (numpy arrays, broadcast)."""
        return predict_loss(self, x, r, l_opt)

    def l_opt(self, n: Any, d: Any) -> np.ndarray:
        """L_opt at any (N, D); see the module docstring for how each source answers."""
        if self.l_opt_source == "empirical" and self.empirical is not None:
            return self.empirical(n, d)
        if self.chinchilla is None:
            raise FitError("this conditional law stores no Chinchilla fit (nor empirical "
                           "points) to give L_opt(N, D); pass L_opt to predict() instead")
        return self.chinchilla(n, d)

    def predict_at(self, x: Any, r: Any, n: Any, d: Any) -> np.ndarray:
        """Loss of architectures (x, r) of N parameters trained on D tokens."""
        return self.predict(x, r, self.l_opt(n, d))


def paper_law(l_opt: ChinchillaLaw = EPOCH_PUBLISHED, normalise: bool = False) -> ConditionalLaw:
    """The paper's multiplicative fit (a 2.697, 0.0974, 0.0078; b 0.3870, 0.0063, 0.0065).

    The paper did not publish its L_opt, so L_opt(N, D) defaults to Epoch AI's Chinchilla refit;
    the search compares candidates with a baseline at the same (N, D), where L_opt nearly
    cancels. normalise=True rescales to this project's convention (r factor 1 at r*), which
    leaves every prediction unchanged.
    """
    c = PAPER_COEFFICIENTS
    a = (c["a0"], c["a1"], c["a2"])
    b = (c["b0"], c["b1"], c["b2"])
    note = "as published by Bian et al. (ICLR 2026)"
    if normalise:
        a, b = _normalise(a, b, b[2] / b[1])
        note = "published coefficients rescaled so the r factor equals 1 at r*"
    return ConditionalLaw(form="multiplicative", a=a, b=b, l_opt_source="chinchilla",
                          chinchilla=l_opt, normalisation=note)


def _normalise(a, b, r_ref: float):
    s = float(factor_r(b, r_ref))
    return tuple(v * s for v in a), tuple(v / s for v in b)


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------

def _distinct(values: np.ndarray, rel: float = 0.01) -> int:
    """Count values that differ from their neighbour by more than `rel` (relative)."""
    v = np.sort(np.log(np.asarray(values, dtype=float)))
    return int(1 + np.sum(np.diff(v) > rel)) if len(v) else 0


def _model(p: np.ndarray, form: str, x, r, l_opt) -> np.ndarray:
    a = p[:3]
    if form == "multiplicative":
        return factor_x(a, x) * (1.0 + p[3] * np.log(r) + p[4] / r) * l_opt
    return factor_x(a, x) + p[3] * np.log(r) + p[4] / r + l_opt


def _jacobian(p: np.ndarray, form: str, x, r, l_opt) -> np.ndarray:
    lx, ix, lr, ir = np.log(x), 1.0 / x, np.log(r), 1.0 / r
    if form == "multiplicative":
        fx = factor_x(p[:3], x)
        fr = 1.0 + p[3] * lr + p[4] * ir
        return np.column_stack([fr * l_opt, lx * fr * l_opt, ix * fr * l_opt,
                                fx * lr * l_opt, fx * ir * l_opt])
    one = np.ones_like(x)
    return np.column_stack([one, lx, ix, lr, ir])


def _initial(form: str, x, r, loss, l_opt) -> np.ndarray:
    """Linear least squares with the r terms off (multiplicative) or exact (additive)."""
    if form == "multiplicative":
        design = np.column_stack([np.ones_like(x), np.log(x), 1.0 / x])
        a, *_ = np.linalg.lstsq(design, loss / l_opt, rcond=None)
        return np.concatenate([a, [0.0, 0.0]])
    design = np.column_stack([np.ones_like(x), np.log(x), 1.0 / x, np.log(r), 1.0 / r])
    p, *_ = np.linalg.lstsq(design, loss - l_opt, rcond=None)
    return p


def _lm(p0: np.ndarray, form: str, x, r, loss, l_opt):
    return least_squares(lambda p: _model(p, form, x, r, l_opt) - loss, p0,
                         jac=lambda p: _jacobian(p, form, x, r, l_opt), method="lm",
                         xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)


def _law_from_params(p: np.ndarray, form: str, r_fitted: np.ndarray
                     ) -> tuple[tuple, tuple, str, bool]:
    """Coefficients in the reported convention, the normalisation note, whether r* was used."""
    if form == "additive":
        return tuple(p[:3]), (0.0, p[3], p[4]), "none needed (additive form)", True
    a, b = tuple(p[:3]), (1.0, p[3], p[4])
    if b[1] > 0 and b[2] > 0 and factor_r(b, b[2] / b[1]) > 0:
        a, b = _normalise(a, b, b[2] / b[1])
        return a, b, "r factor equals 1 at r* (b0 + b1 ln r* + b2/r* = 1)", True
    r_ref = float(np.exp(np.mean(np.log(r_fitted))))
    if factor_r(b, r_ref) <= 0:
        return a, b, ("b0 = 1 (not normalised: the fitted r factor is not positive at the "
                      "fitted r)"), False
    a, b = _normalise(a, b, r_ref)
    return a, b, (f"r factor equals 1 at r = {r_ref:.4g}, the geometric mean of the fitted r "
                  "(the fitted r factor has no interior minimum)"), False


@dataclass
class ConditionalFit:
    """The result of `fit_conditional`: the law, its uncertainty, diagnostics and data."""

    law: ConditionalLaw
    fit_info: dict[str, Any]
    table: pd.DataFrame
    r_range: tuple[float, float]
    optimum: dict[str, Any]
    intervals: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    size_tol: float = 0.25

    seed_noise: dict[str, Any] = field(default_factory=dict)
    margins: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, extra_provenance: Mapping[str, Any] | None = None,
                settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The conditional.json document (format in the module docstring)."""
        law = self.law
        cols = ["name", "N", "D", "x", "r", "loss", "l_opt", "predicted", "residual", "used"]
        rows = []
        for rec in self.table[cols].itertuples(index=False):
            rows.append([None if pd.isna(rec[0]) else str(rec[0])] + [float(v) for v in rec[1:9]]
                        + [bool(rec[9])])
        return {
            "law": "conditional",
            "form": law.form,
            "formula": FORMULAS[law.form],
            "variables": {"x": "d_model / sqrt(N), N = non-embedding parameters",
                          "r": "MLP parameters / attention parameters",
                          "L_opt": f"reference loss, source {law.l_opt_source!r}"},
            "coefficients": law.coefficients(),
            "normalisation": law.normalisation,
            "optimum": self.optimum,
            "confidence_intervals": self.intervals,
            "seed_noise": self.seed_noise,
            "optimum_margins": self.margins,
            "l_opt": {
                "source": law.l_opt_source,
                "chinchilla": law.chinchilla.as_dict() if law.chinchilla else None,
                "empirical": law.empirical.to_dict() if law.empirical is not None else None,
                "size_tolerance": self.size_tol,
                "between_points": "linear interpolation of loss in (ln N, ln D)",
                "outside_points": "Chinchilla shape anchored to the nearest empirical point",
            },
            "fit": self.fit_info,
            "warnings": list(self.warnings),
            "data": {"columns": cols, "rows": rows},
            "provenance": provenance(extra_provenance, settings),
        }


def _optimum(law: ConditionalLaw, x_used: np.ndarray, r_used: np.ndarray
             ) -> tuple[dict[str, Any], list[str]]:
    a, b = law.a, law.b
    x_star, r_star = law.x_star, law.r_star
    x_min_ok = a[1] > 0 and a[2] > 0
    r_min_ok = b[1] > 0 and b[2] > 0
    x_lo, x_hi = float(x_used.min()), float(x_used.max())
    r_lo, r_hi = float(r_used.min()), float(r_used.max())
    x_ext = not (x_min_ok and x_lo < x_star < x_hi)
    r_ext = not (r_min_ok and r_lo < r_star < r_hi)
    warnings = []
    for name, ok, star, lo, hi, c1, c2, ext, coefs in (
            ("x", x_min_ok, x_star, x_lo, x_hi, a[1], a[2], x_ext, "a1, a2"),
            ("r", r_min_ok, r_star, r_lo, r_hi, b[1], b[2], r_ext, "b1, b2")):
        if not ok:
            warnings.append(
                f"the fitted {name} factor has no interior minimum ({coefs} = {c1:.4g}, "
                f"{c2:.4g}; both must be positive), so {name}* = {star:.4g} is not an optimum; "
                f"train variants that bracket the best {name}")
        elif ext:
            warnings.append(
                f"{name}* = {star:.4g} lies outside the fitted {name} range [{lo:.4g}, {hi:.4g}]: "
                f"the points do not reach both sides of the U-curve, so the optimum is "
                f"extrapolated; train variants on the other side of {name}*")
    return {"x_star": x_star, "r_star": r_star, "x_is_minimum": x_min_ok,
            "r_is_minimum": r_min_ok, "x_extrapolated": x_ext, "r_extrapolated": r_ext,
            "x_fitted": [x_lo, x_hi], "r_fitted": [r_lo, r_hi]}, warnings


def fit_conditional(runs: pd.DataFrame, *, form: str = "multiplicative",
                    l_opt: str | np.ndarray = "empirical",
                    chinchilla: ChinchillaLaw | None = None,
                    r_range: Sequence[float] = (0.5, 5.0), bootstrap: int = 0,
                    level: float = 0.95, seed: int = 0, size_tol: float = 0.25
                    ) -> ConditionalFit:
    """Fit the conditional law to runs (columns N, D, loss, x, r; see io.read_runs).

    l_opt: "empirical" (lowest loss of each size at each budget, over all runs read),
    "chinchilla" (the `chinchilla` law at each run's N, D), "best_shapes" (the same, for a law
    fitted on the best shape of each size and budget: chinchilla_points) or an array of per-run
    values (source "given"; the law's l_opt(N, D) then uses `chinchilla` if given, else raises).
    bootstrap: resamples of the used runs for percentile intervals (serial; LM fits are ms).
    """
    _check_form(form)
    for col in ("N", "D", "loss", "x", "r"):
        if col not in runs.columns:
            raise FitError(f"the runs table has no {col} column (see archscale.fit.io.read_runs)")
    lo, hi = (float(v) for v in r_range)
    if not 0 < lo < hi:
        raise FitError(f"r_range must satisfy 0 < low < high, got {[lo, hi]}")
    table = runs.reset_index(drop=True).copy()
    if "name" not in table.columns:
        table["name"] = None
    table["l_opt"], source, empirical = _reference_loss(table, l_opt, chinchilla, size_tol)
    for col in ("N", "D", "loss", "x", "r", "l_opt"):
        values = table[col].to_numpy(dtype=float)
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise FitError(f"{int(bad.sum())} run(s) have a missing or non-positive {col} "
                           f"(first at row {int(np.argmax(bad))}); drop or fix them")
    used = ((table["r"] >= lo) & (table["r"] <= hi)).to_numpy()
    table["used"] = used
    n_used = int(used.sum())
    if n_used < N_FREE + 1:
        raise FitError(
            f"the {form} conditional law has {N_FREE} free coefficients but only {n_used} run(s) "
            f"have r in [{lo:g}, {hi:g}] ({len(table) - n_used} excluded); at least "
            f"{N_FREE + 1} are needed: train more variants or widen fit.r_range")
    u = table[used]
    x, r, loss, lo_pt = (u[c].to_numpy(dtype=float) for c in ("x", "r", "loss", "l_opt"))
    for name, values in (("x = d/sqrt(N)", x), ("r = r_mlp/attn", r)):
        k = _distinct(values)
        if k < 3:
            raise FitError(f"the runs used span only {k} distinct value(s) of {name}; its "
                           "factor has 3 coefficients, so train variants at 3 or more values")
    t0 = time.perf_counter()
    res = _lm(_initial(form, x, r, loss, lo_pt), form, x, r, loss, lo_pt)
    if not np.all(np.isfinite(res.x)):
        raise FitError(f"Levenberg-Marquardt diverged ({res.message}); check the runs table")
    a, b, note, at_r_star = _law_from_params(res.x, form, r)
    law = ConditionalLaw(form=form, a=a, b=b, l_opt_source=source, chinchilla=chinchilla,
                         empirical=empirical, normalisation=note)
    table["predicted"] = law.predict(table["x"], table["r"], table["l_opt"])
    table["residual"] = table["predicted"] - table["loss"]
    resid = table.loc[used, "residual"].to_numpy()
    fit_info = _fit_info(res, (lo, hi), n_used, len(table), resid, t0)
    optimum, warnings = _optimum(law, x, r)
    law.x_fitted, law.r_fitted = tuple(optimum["x_fitted"]), tuple(optimum["r_fitted"])
    noise = seed_noise(table[used])
    warnings.extend(noise_warnings(noise))
    if not res.success:
        warnings.append(f"Levenberg-Marquardt did not converge: {res.message}")
    if not at_r_star:
        warnings.append(f"normalisation: {note}")
    fit = ConditionalFit(law=law, fit_info=fit_info, table=table, r_range=(lo, hi),
                         optimum=optimum, warnings=warnings, size_tol=size_tol,
                         seed_noise=noise,
                         margins=optimum_margins(table[used], noise, size_tol))
    if bootstrap > 0:
        fit.intervals = _bootstrap(res.x, form, x, r, u, lo_pt, int(bootstrap), level, seed)
        fit.warnings.extend(_intervals_inside(fit.intervals, optimum, level))
        skipped = fit.intervals["n_resamples"] - fit.intervals["n_converged"]
        if skipped:
            fit.warnings.append(f"{skipped} of {bootstrap} bootstrap resamples were unusable "
                                "(too few distinct x or r, or no convergence) and are excluded")
    return fit


def _fit_info(res, r_range: tuple[float, float], n_used: int, n_total: int, resid: np.ndarray,
              t0: float) -> dict[str, Any]:
    """conditional.json's `fit` block: the method, the points used, the residuals, LM's report."""
    return {
        "method": "scipy.optimize.least_squares(method='lm') on raw loss, analytic Jacobian",
        "r_range": list(r_range), "n_points": n_used, "n_excluded": int(n_total - n_used),
        "n_coefficients": N_FREE, "rmse": float(np.sqrt(np.mean(resid ** 2))),
        "max_abs_residual": float(np.abs(resid).max()), "cost": float(res.cost),
        "nfev": int(res.nfev), "status": int(res.status), "message": str(res.message),
        "success": bool(res.success), "time_s": round(time.perf_counter() - t0, 4)}


def _intervals_inside(intervals: Mapping[str, Any], optimum: dict[str, Any], level: float
                      ) -> list[str]:
    """Mark in `optimum` whether each optimum's bootstrap interval lies strictly inside the
    fitted span; a warning for each that does not."""
    warnings = []
    for name in ("x", "r"):
        ci, (lo_f, hi_f) = intervals["optimum"][f"{name}_star"], optimum[f"{name}_fitted"]
        inside = bool(lo_f < ci["low"] and ci["high"] < hi_f)
        optimum[f"{name}_interval_inside_fitted"] = inside
        if not inside:
            warnings.append(
                f"the {level:.0%} interval of {name}* [{ci['low']:.4g}, {ci['high']:.4g}] "
                f"is not inside the fitted {name} range [{lo_f:.4g}, {hi_f:.4g}]: the data "
                f"do not pin the optimum down; train more variants around {name}* or seeds")
    return warnings


def _reference_loss(table: pd.DataFrame, l_opt: str | np.ndarray,
                    chinchilla: ChinchillaLaw | None, size_tol: float
                    ) -> tuple[np.ndarray, str, EmpiricalLopt | None]:
    """Each run's L_opt, the source's name, and the empirical points when that is the source."""
    if not isinstance(l_opt, str):
        values = np.asarray(l_opt, dtype=float).ravel()
        if len(values) != len(table):
            raise FitError(f"l_opt has {len(values)} values for {len(table)} runs")
        return values, "given", None
    if l_opt not in L_OPT_SOURCES:
        raise ValueError(f"l_opt must be one of {L_OPT_SOURCES} or an array, got {l_opt!r}")
    if l_opt in ("chinchilla", "best_shapes"):
        if chinchilla is None:
            raise FitError(f"l_opt={l_opt!r} needs a fitted Chinchilla law (chinchilla=); "
                           "fit one with fit_chinchilla or use l_opt='empirical'")
        return np.asarray(chinchilla(table["N"], table["D"]), dtype=float), l_opt, None
    pts = empirical_points(table, size_tol)
    return (empirical_l_opt_per_run(table, size_tol), l_opt,
            EmpiricalLopt(pts["N"], pts["D"], pts["loss"], fallback=chinchilla))

def _bootstrap(p0, form, x, r, used: pd.DataFrame, l_opt, n_resamples, level, seed
               ) -> dict[str, Any]:
    """Percentile intervals from refits on resampled runs, each run's seeds resampled too."""
    rng = np.random.default_rng(seed)
    n = len(x)
    samples = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        if _distinct(x[idx]) < 3 or _distinct(r[idx]) < 3:
            continue
        loss = resample_losses(used, rng)
        res = _lm(p0, form, x[idx], r[idx], loss[idx], l_opt[idx])
        if not (res.success and np.all(np.isfinite(res.x))):
            continue
        a, b, _, _ = _law_from_params(res.x, form, r[idx])
        with np.errstate(divide="ignore", invalid="ignore"):
            samples.append(list(a) + list(b) + [a[2] / a[1], b[2] / b[1]])
    arr = np.array(samples, dtype=float).reshape(-1, 8)

    def interval(col: np.ndarray) -> dict[str, float]:
        col = col[np.isfinite(col)]
        if col.size < 2:
            return {"low": float("nan"), "high": float("nan"), "se": float("nan")}
        low, high = np.quantile(col, [(1 - level) / 2, (1 + level) / 2])
        return {"low": float(low), "high": float(high), "se": float(col.std(ddof=1))}

    return {"method": "percentile bootstrap over runs (shape and budget) and, within each, "
                      "over its seeds; each resample refit by LM from the full-data optimum; "
                      "L_opt held at each run's full-data value",
            "level": level, "n_resamples": n_resamples, "n_converged": int(len(arr)),
            "seed": seed,
            "coefficients": {k: interval(arr[:, j]) for j, k in enumerate(COEFFICIENTS)},
            "optimum": {"x_star": interval(arr[:, 6]), "r_star": interval(arr[:, 7])}}


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def law_from_dict(doc: Mapping[str, Any]) -> ConditionalLaw:
    """Rebuild a ConditionalLaw from a conditional.json document."""
    if doc.get("law") != "conditional" or "coefficients" not in doc:
        raise ValueError("not a conditional.json document (needs 'law': 'conditional' and "
                         "'coefficients'); write it with `archscale fit conditional`")
    c = doc["coefficients"]
    l_opt = doc.get("l_opt") or {}
    chin = ChinchillaLaw.from_dict(l_opt["chinchilla"]) if l_opt.get("chinchilla") else None
    emp = None
    if l_opt.get("empirical"):
        pts = np.asarray(l_opt["empirical"]["points"], dtype=float).reshape(-1, 3)
        emp = EmpiricalLopt(pts[:, 0], pts[:, 1], pts[:, 2], fallback=chin)
    optimum = doc.get("optimum") or {}
    spans = {k: tuple(float(v) for v in optimum[k]) if optimum.get(k) else None
             for k in ("x_fitted", "r_fitted")}
    return ConditionalLaw(form=doc.get("form", "multiplicative"),
                          a=(c["a0"], c["a1"], c["a2"]), b=(c.get("b0", 0.0), c["b1"], c["b2"]),
                          l_opt_source=l_opt.get("source", "chinchilla"), chinchilla=chin,
                          empirical=emp, normalisation=doc.get("normalisation", ""), **spans)


def load_conditional(path: str | Path) -> ConditionalLaw:
    """The law in a conditional.json, with its L_opt(N, D) (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"conditional law file {path} does not exist; run "
                                "`archscale fit conditional` or the Snakemake fit rule first")
    try:
        return law_from_dict(json.loads(path.read_text()))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
