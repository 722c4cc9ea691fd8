"""The reference loss L_opt the study's comparison of law forms uses, chosen by a rule fixed in
advance (docs/science.md, "The reference loss"), and the check that flags a degenerate
Chinchilla fit.

The rule: L_opt(N, D) is a Chinchilla law fitted on the base shapes (the shape each size trains
at every token budget, `base_shapes`), unless that fit is degenerate (`degeneracy`); then each
run's L_opt is its own size's base-shape loss at its token budget. Choosing among sources by
held-out error would be selection noise on two or three folds, and an empirical L_opt at a
held-out size leaks the held-out losses, so held-out folds always use the Chinchilla law of
their training sizes and say when it is degenerate. The other sources are reported beside the
rule's as a sensitivity check (archscale.fit.compare).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from archscale.fit.chinchilla import (E_COLLAPSED, MAX_DECADES, PLAUSIBLE_EXPONENTS,
                                      ChinchillaLaw, FitError, degeneracy, fit_chinchilla)
from archscale.fit.io import canonical_order, size_groups
from archscale.fit.reference import empirical_points

RULE = ("L_opt = a Chinchilla law fitted on the base shapes (each size's shape trained at "
        f"every token budget), unless that fit is degenerate (E below {E_COLLAPSED:.1%} of the "
        "lowest loss, an exponent "
        f"outside {PLAUSIBLE_EXPONENTS[0]}-{PLAUSIBLE_EXPONENTS[1]}, or a bootstrap interval "
        f"wider than {MAX_DECADES:g} decades); then each run's own size's base-shape loss at "
        "its token budget. Held-out folds always use the Chinchilla law of their training "
        "sizes' base shapes (without the interval test: one fit per fold).")


def base_shapes(table: pd.DataFrame, size_tol: float = 0.25) -> tuple[list[str], str]:
    """The base shape of each size (the name trained at the most token budgets; on a tie, the
    lower loss at the largest budget they share) and how they were chosen. Without names, or
    when no size trains any shape at 2+ budgets, the best shape of each size and token budget stands
    in (returned as an empty list and said in the text)."""
    if "name" not in table.columns or table["name"].isna().all():
        return [], "no shape names: the best shape of each size and budget stands in"
    frame = table.assign(_size=size_groups(table["N"].to_numpy(), size_tol))
    chosen = []
    for _, group in frame.groupby("_size", sort=True):
        budgets = group.groupby("name")["D"].nunique()
        most = budgets[budgets == budgets.max()].index
        if budgets.max() < 2:
            continue
        top = group[group["name"].isin(most)]
        at = top[top["D"] == top["D"].max()]
        chosen.append(str(at.loc[at["loss"].idxmin(), "name"]))
    if not chosen:
        return [], ("no size trains a shape at 2 or more token budgets: the best shape of "
                    "each size and budget stands in for the base shapes")
    return chosen, "per size, the shape trained at the most token budgets"


def base_points(table: pd.DataFrame, size_tol: float = 0.25) -> tuple[pd.DataFrame, str]:
    """The (N, D, loss) points of the base shapes (or the stand-in), and how they were chosen."""
    names, how = base_shapes(table, size_tol)
    if names:
        return table[table["name"].isin(names)][["N", "D", "loss", "name"]], how
    best = empirical_points(table, size_tol)
    return best[["N", "D", "loss"]].assign(name=None), how


@dataclass
class Reference:
    """The L_opt the rule chose: per-run values, the Chinchilla law of the base shapes (used
    for held-out sizes and the search), and what was decided and why."""

    values: np.ndarray
    source: str
    chinchilla: ChinchillaLaw | None
    degenerate: list[str] = field(default_factory=list)
    base: list[str] = field(default_factory=list)
    how: str = ""

    def describe(self) -> dict[str, Any]:
        return {"rule": RULE, "source": self.source, "base_shapes": self.base,
                "base_shapes_chosen": self.how,
                "chinchilla": self.chinchilla.as_dict() if self.chinchilla else None,
                "degenerate": bool(self.degenerate), "degeneracy": self.degenerate}


def base_chinchilla(table: pd.DataFrame, size_tol: float = 0.25, huber_delta: float = 1e-3,
                    n_starts: int = 50, bootstrap: int = 0, seed: int = 0
                    ) -> tuple[ChinchillaLaw, list[str], list[str], str]:
    """The Chinchilla law of the base shapes, its degeneracy reasons, the base names and how
    they were chosen; a FitError when there are too few points. With `bootstrap` refits the
    interval test of `degeneracy` applies too (held-out folds skip it: one fit per fold)."""
    points, how = base_points(table, size_tol)
    points = canonical_order(points)
    fit = fit_chinchilla(points["N"], points["D"], points["loss"], huber_delta=huber_delta,
                         n_starts=n_starts, bootstrap=bootstrap, seed=seed, workers=1)
    intervals = (fit.intervals or {}).get("coefficients")
    names = [n for n in points["name"].dropna().unique()]
    return fit.law, degeneracy(fit.law, points["loss"], intervals), names, how


def reference_by_rule(table: pd.DataFrame, size_tol: float = 0.25, huber_delta: float = 1e-3,
                      n_starts: int = 50, bootstrap: int = 50, seed: int = 0) -> Reference:
    """Each run's L_opt by RULE (`bootstrap` refits for its interval test). Runs whose size has
    no base-shape run at their budget keep the Chinchilla value even when it is degenerate
    (said in `how`)."""
    try:
        law, bad, names, how = base_chinchilla(table, size_tol, huber_delta, n_starts,
                                               bootstrap, seed)
    except FitError as exc:
        law, bad, names, how = None, [f"no Chinchilla fit on the base shapes: {exc}"], \
            base_shapes(table, size_tol)[0], "Chinchilla fit impossible"
    if not bad:
        return Reference(np.asarray(law(table["N"], table["D"]), dtype=float),
                         "chinchilla on the base shapes", law, [], names, how)
    sizes = size_groups(table["N"].to_numpy(), size_tol)
    frame = table.assign(_size=sizes)
    ref = frame[frame["name"].isin(names)] if names else frame
    lookup = ref.groupby(["_size", "D"])["loss"].min()
    values = np.array([lookup.get((s, d), np.nan) for s, d in zip(sizes, table["D"])])
    missing = np.isnan(values)
    if missing.any():
        if law is None:
            raise FitError(f"{int(missing.sum())} run(s) have no base-shape run at their size "
                           "and budget, and no Chinchilla law can stand in; train each size's "
                           "base shape at every budget")
        values[missing] = law(table["N"].to_numpy()[missing], table["D"].to_numpy()[missing])
        how += (f"; {int(missing.sum())} run(s) without a base-shape run at their size and "
                "budget use the Chinchilla value")
    return Reference(values, "base-shape loss at each size and budget (the base-shape "
                     "Chinchilla fit is degenerate)", law, bad, names, how)
