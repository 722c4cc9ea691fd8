"""Stage 1's other half: the reference loss L_opt(N, D) the conditional law corrects, from
whichever source the config names, in one place.

Sources (fit.l_opt):
- "empirical": the lowest loss among the trained variants of each size at each token budget
  (what the paper used at small scale); `EmpiricalLopt` interpolates those points for the
  search and, outside them, anchors a Chinchilla fit's shape to the nearest point.
- "chinchilla": a Chinchilla law fitted on every run.
- "best_shapes": a Chinchilla law fitted on the best shape of each size and token budget (the
  paper's "optimal reference loss"), which extrapolates.
- "given" (library callers only): per-run values passed in.

`chinchilla_points` says what the Chinchilla stage fits for each source, `reference_chinchilla`
gets the law the conditional stage uses (read from a chinchilla.json or fitted on the runs),
and `reference_loss` gives each run its L_opt.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from archscale.fit.chinchilla import ChinchillaLaw, FitError, fit_chinchilla, load_chinchilla
from archscale.fit.io import size_groups

L_OPT_SOURCES = ("chinchilla", "best_shapes", "empirical")
LAW_L_OPT_SOURCES = L_OPT_SOURCES + ("given",)  # "given": per-run values passed by the caller

#: What the Chinchilla stage fits, by the config's fit.l_opt: every run, or ("best_shapes") the
#: best shape of each (size, token budget), the paper's "optimal reference loss".
CHINCHILLA_POINTS = {"chinchilla": "all_runs", "empirical": "all_runs",
                     "best_shapes": "best_shape_per_size_and_budget"}


def empirical_points(runs: pd.DataFrame, size_tol: float = 0.25) -> pd.DataFrame:
    """The lowest loss among the variants of each (size, token budget).

    runs needs columns N, D, loss (see io.read_runs). Sizes are grouped by `io.size_groups`
    (variants of one nominal size differ a little in N); a group's N is the geometric mean of
    its members'. Returns columns size, N, D, loss, best_row (the runs row that won) and
    n_variants.
    """
    sizes = size_groups(runs["N"].to_numpy(), size_tol)
    frame = runs.assign(_size=sizes, _row=np.arange(len(runs)))
    rows = []
    for (size, d), group in frame.groupby(["_size", "D"], sort=True):
        win = group.loc[group["loss"].idxmin()]
        rows.append({"size": int(size),
                     "N": float(np.exp(np.log(frame.loc[frame["_size"] == size, "N"]).mean())),
                     "D": float(d), "loss": float(win["loss"]), "best_row": int(win["_row"]),
                     "n_variants": int(len(group))})
    return pd.DataFrame(rows)


def chinchilla_points(runs: pd.DataFrame, l_opt: str, size_tol: float = 0.25
                      ) -> tuple[pd.DataFrame, str]:
    """The (N, D, loss, name) points the Chinchilla stage fits, and what they are.

    With fit.l_opt 'best_shapes' these are the per-(size, token budget) minima of `empirical_points`
    (one point each, N the size's geometric mean); otherwise every run.
    """
    if l_opt not in CHINCHILLA_POINTS:
        raise FitError(f"fit.l_opt must be one of {sorted(CHINCHILLA_POINTS)}, got {l_opt!r}")
    names = runs["name"] if "name" in runs.columns else pd.Series([None] * len(runs))
    if CHINCHILLA_POINTS[l_opt] == "all_runs":
        points = runs[["N", "D", "loss"]].assign(name=names.to_numpy())
    else:
        best = empirical_points(runs, size_tol)
        points = best[["N", "D", "loss"]].assign(
            name=names.to_numpy()[best["best_row"].to_numpy()] if len(best) else [])
    return points.reset_index(drop=True), CHINCHILLA_POINTS[l_opt]


def empirical_l_opt_per_run(runs: pd.DataFrame, size_tol: float = 0.25) -> np.ndarray:
    """For each run, the lowest loss among runs of its size at its token budget."""
    sizes = size_groups(runs["N"].to_numpy(), size_tol)
    return runs.assign(_size=sizes).groupby(["_size", "D"])["loss"].transform("min").to_numpy()


@dataclass
class EmpiricalLopt:
    """L_opt at any (N, D) from the empirical points, for the search stage.

    Inside the points: linear interpolation of the loss in (ln N, ln D) (over ln N alone when
    every point has the same D, and vice versa). Outside them: the Chinchilla fit's shape
    anchored to the nearest empirical point, L = L_emp(p) * chinchilla(N, D) / chinchilla(p),
    which is continuous at the edge; without a Chinchilla fit such a query is an error.
    """

    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    fallback: ChinchillaLaw | None = None

    def __post_init__(self) -> None:
        self.n, self.d, self.loss = (np.asarray(v, dtype=float).ravel()
                                     for v in (self.n, self.d, self.loss))
        if len(self.n) == 0:
            raise FitError("no empirical L_opt points")
        self._ln, self._ld = np.log(self.n), np.log(self.d)
        self._one_d = np.ptp(self._ld) < 1e-9
        self._one_n = np.ptp(self._ln) < 1e-9
        self._interp = None
        if not (self._one_d or self._one_n):
            from scipy.interpolate import LinearNDInterpolator

            try:
                self._interp = LinearNDInterpolator(np.column_stack([self._ln, self._ld]),
                                                    self.loss)
            except Exception:  # collinear points (e.g. 2 points): treat as outside
                self._interp = None

    def _inside(self, ln: np.ndarray, ld: np.ndarray) -> np.ndarray:
        out = np.full(ln.shape, np.nan)
        tol = 1e-6
        if self._one_d and self._one_n:
            hit = (np.abs(ln - self._ln[0]) < tol) & (np.abs(ld - self._ld[0]) < tol)
            out[hit] = self.loss[0]
        elif self._one_d or self._one_n:
            axis_pts, other_pts, q, other_q = ((self._ln, self._ld, ln, ld) if self._one_d
                                               else (self._ld, self._ln, ld, ln))
            order = np.argsort(axis_pts)
            xs, ys = axis_pts[order], self.loss[order]
            hit = (np.abs(other_q - other_pts[0]) < tol) & (q >= xs[0] - tol) & (q <= xs[-1] + tol)
            out[hit] = np.interp(q[hit], xs, ys)
        elif self._interp is not None:
            out = np.asarray(self._interp(ln, ld), dtype=float)
        return out

    def __call__(self, n: Any, d: Any) -> np.ndarray:
        n, d = np.broadcast_arrays(np.asarray(n, dtype=float), np.asarray(d, dtype=float))
        ln, ld = np.log(n).ravel(), np.log(d).ravel()
        out = self._inside(ln, ld)
        outside = np.isnan(out)
        if outside.any():
            if self.fallback is None:
                raise FitError(
                    f"empirical L_opt asked at {int(outside.sum())} (N, D) point(s) outside the "
                    f"trained sizes N {self.n.min():.4g}..{self.n.max():.4g} and budgets D "
                    f"{self.d.min():.4g}..{self.d.max():.4g}, and no Chinchilla fit is "
                    "available to extrapolate; give one (l_opt fallback) or query inside")
            scale = [max(float(np.ptp(v)), 1e-9) if np.ptp(v) > 1e-9 else 1.0
                     for v in (self._ln, self._ld)]
            dist = (((ln[outside, None] - self._ln) / scale[0]) ** 2
                    + ((ld[outside, None] - self._ld) / scale[1]) ** 2)
            near = np.argmin(dist, axis=1)
            ratio = self.loss[near] / self.fallback(self.n[near], self.d[near])
            out[outside] = ratio * self.fallback(np.exp(ln[outside]), np.exp(ld[outside]))
        return out.reshape(n.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": ["N", "D", "loss"],
                "points": [[float(a), float(b), float(c)]
                           for a, b, c in zip(self.n, self.d, self.loss)]}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], fallback: ChinchillaLaw | None = None
                  ) -> "EmpiricalLopt":
        """The inverse of `to_dict` (conditional.json's l_opt.empirical)."""
        pts = np.asarray(doc["points"], dtype=float).reshape(-1, 3)
        return cls(pts[:, 0], pts[:, 1], pts[:, 2], fallback=fallback)


def reference_chinchilla(table: pd.DataFrame, settings: Mapping[str, Any],
                         path: str | Path | None = None
                         ) -> tuple[ChinchillaLaw | None, list[str]]:
    """The Chinchilla law the conditional stage uses, and notes for its warnings.

    Read from `path` (a chinchilla.json) when given, else fitted on the runs without bootstrap
    (on the best shape per (size, token budget) for 'best_shapes'). It is the L_opt for 'chinchilla'
    and 'best_shapes', and the extrapolation outside the empirical points for 'empirical',
    where a table too small for a Chinchilla fit is allowed: the law is then None and answers
    L_opt only at its points. `settings` is the fit section (l_opt, size_tolerance,
    huber_delta, n_starts).
    """
    if path:
        return load_chinchilla(path), []
    try:
        points, _ = chinchilla_points(table, settings["l_opt"], settings["size_tolerance"])
        law = fit_chinchilla(points["N"], points["D"], points["loss"],
                             huber_delta=settings["huber_delta"],
                             n_starts=settings["n_starts"]).law
    except FitError as exc:
        if settings["l_opt"] != "empirical":
            raise
        return None, [f"no Chinchilla fit for extrapolating L_opt ({exc}); the law answers "
                      "L_opt only inside the empirical points"]
    return law, []


def reference_loss(table: pd.DataFrame, l_opt: str | np.ndarray,
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
