"""Stage 2: the architecture-conditional correction to L_opt(N, D).

With x = d_model / sqrt(N) and r = MLP parameters / attention parameters (Bian et al. 2026),
the law is one of the registered forms (archscale.fit.forms; each is one module there):

    multiplicative (default)  L = (a0 + a1 ln x + a2/x) * (b0 + b1 ln r + b2/r) * L_opt(N, D)
    additive                  L = (a0 + a1 ln x + a2/x) + (b1 ln r + b2/r) + L_opt(N, D)

Every form is fitted by Levenberg-Marquardt (scipy.optimize.least_squares(method='lm')) with
its analytic Jacobian on the raw loss of the runs whose r lies in `r_range` (default: the
config schema's fit.r_range, `archscale.fit.defaults.DEFAULT_R_RANGE`). The form then reports
its coefficients, fixing any scale the data cannot identify (the multiplicative form: the r
factor equals 1 at r*, see forms/multiplicative.py), and gives the optimum along x and r
(the built-in forms: x* = a2/a1 and r* = b2/b1, a minimum when both coefficients are positive).
When an optimum is not a minimum, or the fitted points do not reach both sides of it, a
warning says so.

conditional.json (written by `ConditionalFit.to_dict`, read back by `load_conditional`):

    law            "conditional"
    form           a registered form: "multiplicative" | "additive" | ...
    formula        the form's formula, as text
    coefficients   the form's coefficients by name; built-in forms {a0, a1, a2, b0, b1, b2}
                   (additive: b0 is 0)
    normalisation  how the form fixed its scale, as text
    optimum        {x_star, r_star, x_is_minimum, r_is_minimum, x_extrapolated,
                    r_extrapolated, x_fitted: [min, max], r_fitted: [min, max],
                    x_interval_inside_fitted, r_interval_inside_fitted (with a bootstrap)}
    confidence_intervals  null, or {method, level, n_resamples, n_converged,
                    coefficients: {name: {low, high, se}}, optimum: {x_star, r_star: ...},
                    refits: {coefficient_names, coefficients: one row per usable refit}};
                    the bootstrap resamples runs and, within each run, its seeds. The search
                    reads the refits for the interval of each pick's predicted loss change
    seed_noise     {pooled_sd, degrees_of_freedom, n_shapes, relative_sd, by_budget, method,
                    shapes}: the seed-to-seed SD of val_loss, overall and per token budget
                    (archscale.fit.seeds); pooled_sd is null when no shape has 2+ seeds
    optimum_margins  per size and token budget with 3+ shapes: the best trained shape against its
                    nearest trained neighbours on each side in x and in r, in SE of the
                    difference (each side's own seed count), `clear` when both sides pass
                    margin_threshold
    margin_threshold {comparisons, alpha, threshold_se, method}: the family-wise bar
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
  on every run, or on the best shape of each size and token budget).
- source "empirical": linear interpolation over the empirical points in (ln N, ln D) (over
  ln N alone when they share one D); outside the points, the stored Chinchilla law's shape
  anchored to the nearest empirical point; without a stored Chinchilla law such a query is an
  error (see reference.EmpiricalLopt).

`paper_law()` builds the law from the paper's published coefficients for the search CLI.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from archscale.fit import forms
from archscale.fit.chinchilla import EPOCH_PUBLISHED, ChinchillaLaw, FitError
from archscale.fit.defaults import DEFAULT_R_RANGE
from archscale.fit.forms.base import AXES, LawForm
from archscale.fit.forms.multiplicative import normalise as normalise_r_factor
from archscale.fit.intervals import percentile_interval
from archscale.fit.io import canonical_order, provenance
from archscale.fit.reference import LAW_L_OPT_SOURCES, EmpiricalLopt, reference_loss
from archscale.fit.seeds import (familywise_threshold, noise_warnings, optimum_margins,
                                 resample_losses, seed_noise)
from archscale.fit.values import distinct_count

#: Bian et al. (ICLR 2026), multiplicative form, as published (not normalised).
PAPER_COEFFICIENTS = {"a0": 2.697, "a1": 0.0974, "a2": 0.0078,
                      "b0": 0.3870, "b1": 0.0063, "b2": 0.0065}
#: The r span the paper fitted those coefficients on: a published fact, recorded as the paper
#: law's r_fitted, not a setting (this project's default is the schema's, DEFAULT_R_RANGE).
PAPER_R_RANGE = (0.5, 5.0)


def predict_loss(coefficients: "ConditionalLaw | Mapping[str, float]", x: Any, r: Any,
                 l_opt: Any, form: str | None = None, n: Any = None) -> np.ndarray:
    """Predicted loss for arrays of x = d/sqrt(N), r = r_mlp/attn and L_opt (broadcast).

    `coefficients` is a ConditionalLaw or a mapping of the form's coefficients (for the
    built-in forms a0, a1, a2, b0, b1, b2; the additive form's b0 may be left out) and
    optionally "form"; `form` overrides, default multiplicative. `n` (non-embedding
    parameters) is needed by the forms whose correction depends on N.
    A few array operations, so millions of candidates take well under a second.
    """
    if isinstance(coefficients, ConditionalLaw):
        form = form or coefficients.form
        values: Mapping[str, float] = coefficients.coefs
    else:
        form = form or coefficients.get("form", "multiplicative")
        values = coefficients
    law_form = forms.get(form)
    return law_form.predict(law_form.coefficients(values), x, r, l_opt,
                            **law_form.n_keyword(n))


# ---------------------------------------------------------------------------------------------
# The law
# ---------------------------------------------------------------------------------------------

@dataclass
class ConditionalLaw:
    """A fitted (or published) conditional law with its reference L_opt(N, D).

    `coefs` are the reported coefficients of `form` (a name in archscale.fit.forms), by name;
    everything that depends on the form (prediction, the optimum) asks the form object.
    """

    form: str
    coefs: Mapping[str, float]
    l_opt_source: str = "chinchilla"
    chinchilla: ChinchillaLaw | None = None
    empirical: EmpiricalLopt | None = None
    normalisation: str = ""
    #: the x and r spans of the runs the law was fitted on ([low, high]); None when unknown
    #: (the published law). The search marks candidates outside them.
    x_fitted: tuple[float, float] | None = None
    r_fitted: tuple[float, float] | None = None
    #: where an N-dependent form states its single x*, r*: the geometric mean N of the
    #: fitted runs (None for forms that do not depend on N, or when unknown)
    n_reference: float | None = None
    #: the bootstrap's refits, one row of coefficients (by the form's coefficient names) per
    #: usable resample, and their interval level; None without a bootstrap
    refits: np.ndarray | None = None
    refit_level: float = 0.95

    def __post_init__(self) -> None:
        if self.l_opt_source not in LAW_L_OPT_SOURCES:
            raise ValueError(f"l_opt source must be one of {LAW_L_OPT_SOURCES}, "
                             f"got {self.l_opt_source!r}")
        self.coefs = self.law_form.coefficients(self.coefs)

    @property
    def law_form(self) -> LawForm:
        """The form object (archscale.fit.forms) this law is written in."""
        return forms.get(self.form)

    @property
    def formula(self) -> str:
        return self.law_form.formula

    def optimum(self, n: float | None = None) -> dict[str, forms.Optimum]:
        """The optimum along x and r, and whether each is a minimum; for a form that depends
        on N, at `n` parameters (default: the geometric mean of the fitted sizes)."""
        form = self.law_form
        if form.depends_on_n and n is None:
            n = self.n_reference
        return form.optimum(self.coefs, **form.n_keyword(n))

    @property
    def x_star(self) -> float:
        return self.optimum()["x"].star

    @property
    def r_star(self) -> float:
        return self.optimum()["r"].star

    def coefficients(self) -> dict[str, float]:
        return dict(self.coefs)

    def predict(self, x: Any, r: Any, l_opt: Any, n: Any = None) -> np.ndarray:
        """Loss at given x, r and reference loss L_opt (numpy arrays, broadcast); `n`, the
        non-embedding parameters, for a form that depends on N."""
        return self.law_form.predict(self.coefs, x, r, l_opt, **self.law_form.n_keyword(n))

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
        return self.predict(x, r, self.l_opt(n, d), n=n)

    def refit_predictions_at(self, x: Any, r: Any, n: Any, d: Any) -> np.ndarray | None:
        """The loss of each architecture under every bootstrap refit (rows: refits), with
        L_opt held at its full-data value as in the bootstrap; None without refits."""
        if self.refits is None or len(self.refits) == 0:
            return None
        form, l_opt = self.law_form, self.l_opt(n, d)
        names = form.coefficient_names
        return np.array([form.predict(form.coefficients(dict(zip(names, row))), x, r, l_opt,
                                      **form.n_keyword(n)) for row in self.refits], float)


def paper_law(l_opt: ChinchillaLaw = EPOCH_PUBLISHED, normalise: bool = False) -> ConditionalLaw:
    """The paper's multiplicative fit (a 2.697, 0.0974, 0.0078; b 0.3870, 0.0063, 0.0065).

    The paper did not publish its L_opt, so L_opt(N, D) defaults to Epoch AI's Chinchilla refit;
    the search compares candidates with a baseline at the same (N, D), where L_opt nearly
    cancels. normalise=True rescales to this project's convention (r factor 1 at r*), which
    leaves every prediction unchanged. Its r_fitted is the paper's fitting range
    (PAPER_R_RANGE); its x span was not published, so x_fitted is None.
    """
    c = dict(PAPER_COEFFICIENTS)
    note = "as published by Bian et al. (ICLR 2026)"
    if normalise:
        c = normalise_r_factor(c, c["b2"] / c["b1"])
        note = "published coefficients rescaled so the r factor equals 1 at r*"
    return ConditionalLaw(form="multiplicative", coefs=c, l_opt_source="chinchilla",
                          chinchilla=l_opt, normalisation=note, r_fitted=PAPER_R_RANGE)


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------

def _lm(p0: np.ndarray, form: LawForm, x, r, loss, l_opt, n=None):
    kw = form.n_keyword(n)
    return least_squares(lambda p: form.model(p, x, r, l_opt, **kw) - loss, p0,
                         jac=lambda p: form.jacobian(p, x, r, l_opt, **kw), method="lm",
                         xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)


def _short_axes(form: LawForm, x: np.ndarray, r: np.ndarray) -> list[tuple[str, int, int]]:
    """(axis, distinct values, values needed) for each of x and r that spans fewer distinct
    values than the form's term on it needs; empty when both are enough."""
    counts = (("x", distinct_count(x)), ("r", distinct_count(r)))
    return [(axis, k, form.distinct_needed[axis]) for axis, k in counts
            if k < form.distinct_needed[axis]]


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
    margin_threshold: dict[str, Any] = field(default_factory=dict)
    #: the bootstrap's refits (None without one); compare.py reads each form's optima from them
    samples: "BootstrapSamples | None" = None

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
            "formula": law.formula,
            "variables": {"x": "d_model / sqrt(N), N = non-embedding parameters",
                          "r": "MLP parameters / attention parameters",
                          "L_opt": f"reference loss, source {law.l_opt_source!r}"},
            "coefficients": law.coefficients(),
            "normalisation": law.normalisation,
            "optimum": self.optimum,
            "confidence_intervals": self.intervals,
            "seed_noise": self.seed_noise,
            "optimum_margins": self.margins,
            "margin_threshold": self.margin_threshold,
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
    """conditional.json's `optimum` block (where each optimum lies against the fitted span)
    and a warning for each optimum that is not a minimum or lies outside the fitted runs.
    A form that depends on N states it at law.n_reference (recorded as n_reference)."""
    opt = law.optimum()
    spans = {"x": (float(x_used.min()), float(x_used.max())),
             "r": (float(r_used.min()), float(r_used.max()))}
    extrapolated = {name: not (opt[name].is_minimum and spans[name][0] < opt[name].star
                               < spans[name][1]) for name in AXES}
    warnings = []
    for name in AXES:
        star, (lo, hi) = opt[name].star, spans[name]
        if not opt[name].is_minimum:
            warnings.append(
                f"the fitted {name} factor has no interior minimum ({opt[name].condition}), so "
                f"{name}* = {star:.4g} is not an optimum; train variants that bracket the best "
                f"{name}")
        elif extrapolated[name]:
            warnings.append(
                f"{name}* = {star:.4g} lies outside the fitted {name} range [{lo:.4g}, {hi:.4g}]: "
                f"the points do not reach both sides of the U-curve, so the optimum is "
                f"extrapolated; train variants on the other side of {name}*")
    out: dict[str, Any] = {f"{name}_star": opt[name].star for name in AXES}
    out.update({f"{name}_is_minimum": opt[name].is_minimum for name in AXES})
    out.update({f"{name}_extrapolated": extrapolated[name] for name in AXES})
    out.update({f"{name}_fitted": list(spans[name]) for name in AXES})
    if law.n_reference is not None:
        out["n_reference"] = law.n_reference
    return out, warnings


def _require_positive(table: pd.DataFrame, columns: Sequence[str]) -> None:
    """A FitError naming the first column with a missing or non-positive value."""
    for col in columns:
        values = table[col].to_numpy(dtype=float)
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            raise FitError(f"{int(bad.sum())} run(s) have a missing or non-positive {col} "
                           f"(first at row {int(np.argmax(bad))}); drop or fix them")


def _used_runs(table: pd.DataFrame, lo: float, hi: float, form: LawForm) -> np.ndarray:
    """The runs with r in [lo, hi]; a FitError when they are too few for the form's
    coefficients."""
    used = ((table["r"] >= lo) & (table["r"] <= hi)).to_numpy()
    n_used, n_free = int(used.sum()), form.n_free
    if n_used < n_free + 1:
        raise FitError(
            f"the {form.name} conditional law has {n_free} free coefficients but only {n_used} "
            f"run(s) have r in [{lo:g}, {hi:g}] ({len(table) - n_used} excluded); at least "
            f"{n_free + 1} are needed: train more variants or widen fit.r_range")
    return used


def fit_conditional(runs: pd.DataFrame, *, form: str = "multiplicative",
                    l_opt: str | np.ndarray = "empirical",
                    chinchilla: ChinchillaLaw | None = None,
                    r_range: Sequence[float] = DEFAULT_R_RANGE, bootstrap: int = 0,
                    level: float = 0.95, seed: int = 0, size_tol: float = 0.25
                    ) -> ConditionalFit:
    """Fit the conditional law to runs (columns N, D, loss, x, r; see io.read_runs).

    form: a registered law form (archscale.fit.forms.names()).
    l_opt: "empirical" (lowest loss of each size at each budget, over all runs read),
    "chinchilla" (the `chinchilla` law at each run's N, D), "best_shapes" (the same, for a law
    fitted on the best shape of each size and token budget: reference.chinchilla_points) or an array
    of per-run values (source "given"; the law's l_opt(N, D) then uses `chinchilla` if given,
    else raises). r_range: the r span of the runs fitted (default: the config schema's).
    bootstrap: resamples of the used runs for percentile intervals (serial; LM fits are ms).
    """
    law_form = forms.get(form)
    for col in ("N", "D", "loss", "x", "r"):
        if col not in runs.columns:
            raise FitError(f"the runs table has no {col} column (see archscale.fit.io.read_runs)")
    lo, hi = (float(v) for v in r_range)
    if not 0 < lo < hi:
        raise FitError(f"r_range must satisfy 0 < low < high, got {[lo, hi]}")
    table = runs.reset_index(drop=True).copy()
    if "name" not in table.columns:
        table["name"] = None
    table["l_opt"], source, empirical = reference_loss(table, l_opt, chinchilla, size_tol)
    _require_positive(table, ("N", "D", "loss", "x", "r", "l_opt"))
    used = _used_runs(table, lo, hi, law_form)
    table["used"] = used
    n_used, n_free = int(used.sum()), law_form.n_free
    u = canonical_order(table[used])
    x, r, loss, lo_pt, n = (u[c].to_numpy(dtype=float)
                            for c in ("x", "r", "loss", "l_opt", "N"))
    n = n if law_form.depends_on_n else None
    names = {"x": "x = d/sqrt(N)", "r": "r = r_mlp/attn"}
    for axis, k, need in _short_axes(law_form, x, r):
        raise FitError(f"the runs used span only {k} distinct value(s) of {names[axis]}; the "
                       f"{form} form needs {need} to fit its {axis} term, so train "
                       f"variants at {need} or more values")
    t0 = time.perf_counter()
    res = _lm(law_form.initial(x, r, loss, lo_pt, **law_form.n_keyword(n)), law_form, x, r,
              loss, lo_pt, n)
    if not np.all(np.isfinite(res.x)):
        raise FitError(f"Levenberg-Marquardt diverged ({res.message}); check the runs table")
    reported = law_form.report(res.x, r)
    law = ConditionalLaw(form=form, coefs=reported.coefficients, l_opt_source=source,
                         chinchilla=chinchilla, empirical=empirical,
                         normalisation=reported.normalisation,
                         n_reference=(float(np.exp(np.mean(np.log(n)))) if n is not None
                                      else None))
    table["predicted"] = law.predict(table["x"], table["r"], table["l_opt"],
                                     n=table["N"].to_numpy(dtype=float))
    table["residual"] = table["predicted"] - table["loss"]
    resid = table.loc[used, "residual"].to_numpy()
    fit_info = _fit_info(res, (lo, hi), n_used, len(table), n_free, resid, t0)
    optimum, warnings = _optimum(law, x, r)
    law.x_fitted, law.r_fitted = tuple(optimum["x_fitted"]), tuple(optimum["r_fitted"])
    noise = seed_noise(table[used])
    warnings.extend(noise_warnings(noise))
    if not res.success:
        warnings.append(f"Levenberg-Marquardt did not converge: {res.message}")
    if not reported.at_optimum:
        warnings.append(f"normalisation: {reported.normalisation}")
    margins = optimum_margins(table[used], noise, size_tol)
    fit = ConditionalFit(law=law, fit_info=fit_info, table=table, r_range=(lo, hi),
                         optimum=optimum, warnings=warnings, size_tol=size_tol,
                         seed_noise=noise, margins=margins,
                         margin_threshold=familywise_threshold(margins))
    if bootstrap > 0:
        fit.samples = bootstrap_coefficients(res.x, law_form, x, r, n, u, lo_pt,
                                             int(bootstrap), seed)
        fit.intervals = _intervals(fit.samples, law_form, level, seed, law.n_reference,
                                   optimum)
        fit.warnings.extend(_intervals_inside(fit.intervals, optimum, level))
        fit.warnings.extend(bootstrap_warnings(fit.samples, fit.intervals))
    return fit


def _fit_info(res, r_range: tuple[float, float], n_used: int, n_total: int, n_free: int,
              resid: np.ndarray, t0: float) -> dict[str, Any]:
    """conditional.json's `fit` block: the method, the points used, the residuals, LM's report."""
    return {
        "method": "scipy.optimize.least_squares(method='lm') on raw loss, analytic Jacobian",
        "r_range": list(r_range), "n_points": n_used, "n_excluded": int(n_total - n_used),
        "n_coefficients": n_free, "rmse": float(np.sqrt(np.mean(resid ** 2))),
        "max_abs_residual": float(np.abs(resid).max()), "cost": float(res.cost),
        "nfev": int(res.nfev), "status": int(res.status), "message": str(res.message),
        "success": bool(res.success), "time_s": round(time.perf_counter() - t0, 4)}


def _intervals_inside(intervals: Mapping[str, Any], optimum: dict[str, Any], level: float
                      ) -> list[str]:
    """Mark in `optimum` whether each optimum's bootstrap interval lies strictly inside the
    fitted span (and at least `level` of the resamples have a minimum at all); a warning for
    each that does not."""
    warnings = []
    for name in AXES:
        ci, (lo_f, hi_f) = intervals["optimum"][f"{name}_star"], optimum[f"{name}_fitted"]
        enough = ci["minimum_share"] >= level
        inside = bool(enough and lo_f < ci["low"] and ci["high"] < hi_f)
        optimum[f"{name}_interval_inside_fitted"] = inside
        if not enough:
            warnings.append(
                f"only {ci['minimum_share']:.0%} of the usable bootstrap refits have an {name} "
                f"optimum that is a minimum (needed: {level:.0%}): the data do not show a U in "
                f"{name}; the interval of {name}* is over those refits only")
        elif not inside:
            warnings.append(
                f"the {level:.0%} interval of {name}* [{ci['low']:.4g}, {ci['high']:.4g}] "
                f"is not inside the fitted {name} range [{lo_f:.4g}, {hi_f:.4g}]: the data "
                f"do not pin the optimum down; train more variants around {name}* or seeds")
    return warnings


@dataclass
class BootstrapSamples:
    """The bootstrap's refits: each usable resample's reported coefficients (one row per
    resample, columns `names`), and how many resamples were dropped and why."""

    names: tuple[str, ...]
    coefficients: np.ndarray
    n_resamples: int
    too_few_distinct: int
    not_converged: int

    def optima(self, form: LawForm, n: float | None = None) -> dict[str, tuple[np.ndarray,
                                                                                np.ndarray]]:
        """Per axis, each refit's optimum and whether it is a minimum (at `n` parameters for
        a form that depends on N)."""
        stars = {a: np.full(len(self.coefficients), np.nan) for a in AXES}
        minimum = {a: np.zeros(len(self.coefficients), dtype=bool) for a in AXES}
        for i, row in enumerate(self.coefficients):
            opt = form.optimum(dict(zip(self.names, row)), **form.n_keyword(n))
            for a in AXES:
                stars[a][i], minimum[a][i] = opt[a].star, opt[a].is_minimum
        return {a: (stars[a], minimum[a]) for a in AXES}


def bootstrap_coefficients(p0: np.ndarray, form: LawForm, x: np.ndarray, r: np.ndarray,
                           n: np.ndarray | None, used: pd.DataFrame, l_opt: np.ndarray,
                           n_resamples: int, seed: int) -> BootstrapSamples:
    """Refits on resampled runs, each run's seeds resampled too (archscale.fit.seeds).

    The resamples follow the runs' order in `used`; fit_conditional passes them in
    `canonical_order`, so the same runs give the same intervals in any listed order."""
    rng = np.random.default_rng(seed)
    k = len(x)
    rows, short, failed = [], 0, 0
    for _ in range(n_resamples):
        idx = rng.integers(0, k, size=k)
        if _short_axes(form, x[idx], r[idx]):
            short += 1
            continue
        loss = resample_losses(used, rng)
        n_idx = None if n is None else n[idx]
        res = _lm(p0, form, x[idx], r[idx], loss[idx], l_opt[idx], n_idx)
        if not (res.success and np.all(np.isfinite(res.x))):
            failed += 1
            continue
        c = form.report(res.x, r[idx]).coefficients
        rows.append([c[name] for name in form.coefficient_names])
    arr = np.array(rows, dtype=float).reshape(-1, len(form.coefficient_names))
    return BootstrapSamples(tuple(form.coefficient_names), arr, n_resamples, short, failed)


def optimum_interval(stars: np.ndarray, minimum: np.ndarray, level: float,
                     span: tuple[float, float] | None = None) -> dict[str, Any]:
    """The percentile interval of an optimum over the refits where it is a minimum (so it
    stays inside the domain, x and r > 0), with how many refits had none and, given the
    fitted `span`, how many put it outside."""
    good = stars[minimum & np.isfinite(stars) & (stars > 0)]
    out = percentile_interval(good, level)
    out["n_minimum"] = int(good.size)
    out["n_not_minimum"] = int(len(stars) - good.size)
    out["minimum_share"] = float(good.size / len(stars)) if len(stars) else 0.0
    if good.size:
        out["median"] = float(np.median(good))
    if span is not None:
        out["n_outside_fitted"] = int(np.sum((good <= span[0]) | (good >= span[1])))
    return out


def bootstrap_warnings(samples: BootstrapSamples, intervals: Mapping[str, Any]) -> list[str]:
    """The refits the intervals leave out, said in the output rather than folded into an SE."""
    out = []
    dropped = samples.too_few_distinct + samples.not_converged
    if dropped:
        out.append(f"{dropped} of {samples.n_resamples} bootstrap resamples were unusable "
                   f"({samples.too_few_distinct} with too few distinct x or r, "
                   f"{samples.not_converged} not converged) and are excluded")
    for name in AXES:
        ci = intervals["optimum"][f"{name}_star"]
        outside = ci.get("n_outside_fitted", 0)
        if outside and ci["n_minimum"]:
            out.append(f"{outside} of {ci['n_minimum']} bootstrap refits put {name}* outside "
                       "the fitted range")
    return out


def _intervals(samples: BootstrapSamples, form: LawForm, level: float, seed: int,
               n_reference: float | None, optimum: Mapping[str, Any]) -> dict[str, Any]:
    """conditional.json's confidence_intervals block."""
    optima = samples.optima(form, n_reference)
    return {"method": "percentile bootstrap over runs (shape and budget) and, within each, "
                      "over its seeds; each resample refit by LM from the full-data optimum; "
                      "L_opt held at each run's full-data value; an optimum's interval is over "
                      "the refits where it is a minimum",
            "level": level, "n_resamples": samples.n_resamples,
            "n_converged": int(len(samples.coefficients)),
            "n_too_few_distinct": samples.too_few_distinct,
            "n_not_converged": samples.not_converged, "seed": seed,
            "coefficients": {k: percentile_interval(samples.coefficients[:, j], level)
                             for j, k in enumerate(samples.names)},
            "optimum": {f"{a}_star": optimum_interval(*optima[a], level,
                                                       tuple(optimum[f"{a}_fitted"]))
                        for a in AXES},
            "refits": {"coefficient_names": list(samples.names),
                       "coefficients": samples.coefficients.tolist()}}


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def law_from_dict(doc: Mapping[str, Any]) -> ConditionalLaw:
    """Rebuild a ConditionalLaw from a conditional.json document; a coefficient that is not a
    finite number is an error (a NaN would otherwise predict NaN for every candidate and leave
    an empty frontier without a word)."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"not a conditional.json document: it holds a JSON "
                         f"{type(doc).__name__}, not an object; write it with "
                         "`archscale fit conditional`")
    if doc.get("law") != "conditional" or "coefficients" not in doc:
        raise ValueError("not a conditional.json document (needs 'law': 'conditional' and "
                         "'coefficients'); write it with `archscale fit conditional`")
    coefficients = doc["coefficients"]
    if not isinstance(coefficients, Mapping):
        raise ValueError("its 'coefficients' is not an object of name: value pairs")
    bad = {k: v for k, v in coefficients.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)}
    if bad:
        raise ValueError(f"coefficient(s) {bad} are not finite numbers; refit the law "
                         "(`archscale fit conditional`) or restore the file")
    l_opt = doc.get("l_opt") or {}
    chin = ChinchillaLaw.from_dict(l_opt["chinchilla"]) if l_opt.get("chinchilla") else None
    emp = (EmpiricalLopt.from_dict(l_opt["empirical"], fallback=chin)
           if l_opt.get("empirical") else None)
    optimum = doc.get("optimum") or {}
    spans = {k: tuple(float(v) for v in optimum[k]) if optimum.get(k) else None
             for k in ("x_fitted", "r_fitted")}
    intervals = doc.get("confidence_intervals") or {}
    refits = _refits_from_dict(intervals.get("refits"), forms.get(doc.get("form",
                                                                          "multiplicative")))
    return ConditionalLaw(form=doc.get("form", "multiplicative"), coefs=doc["coefficients"],
                          l_opt_source=l_opt.get("source", "chinchilla"), chinchilla=chin,
                          empirical=emp, normalisation=doc.get("normalisation", ""),
                          n_reference=optimum.get("n_reference"), refits=refits,
                          refit_level=float(intervals.get("level", 0.95)), **spans)


def _refits_from_dict(block: Any, form: LawForm) -> np.ndarray | None:
    """The refits' coefficient rows in the form's coefficient order; None when the file has
    none (no bootstrap, or written before refits were stored). Damaged rows are an error."""
    if not block:
        return None
    names, rows = block.get("coefficient_names"), block.get("coefficients")
    if sorted(names or []) != sorted(form.coefficient_names) or not isinstance(rows, list):
        raise ValueError(f"confidence_intervals.refits names {names}, not the form's "
                         f"coefficients {list(form.coefficient_names)}; refit the law "
                         "(`archscale fit conditional`)")
    arr = np.array(rows, dtype=float).reshape(-1, len(names))
    if not np.all(np.isfinite(arr)):
        raise ValueError("confidence_intervals.refits holds a value that is not a finite "
                         "number; refit the law (`archscale fit conditional`)")
    order = [names.index(k) for k in form.coefficient_names]
    return arr[:, order]


def load_conditional(path: str | Path) -> ConditionalLaw:
    """The law in a conditional.json, with its L_opt(N, D) (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"conditional law file {path} does not exist; run "
                                "`archscale fit conditional` or the Snakemake fit rule first")
    try:
        return law_from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
