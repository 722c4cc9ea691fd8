"""Seed noise: how much val_loss moves when only the seed changes, and what that means for a fit.

Small models trained briefly differ by a few hundredths of a nat between seeds, which can be as
large as the architecture effect a study looks for. This module measures that spread and puts
it where a reader of the fit sees it:

- `seed_noise`: the pooled standard deviation of val_loss over the shapes trained with two or
  more seeds (pooled as in a one-way ANOVA: sum of (n_i - 1) s_i^2 over sum of (n_i - 1)),
  over all of them and per token budget (shorter runs are noisier).
- `resample_losses`: one bootstrap draw of the per-shape mean losses, resampling each shape's
  seeds with replacement, so that a bootstrap over runs also carries the seed noise.
- `optimum_margins`: per size and token budget, the best trained shape against its nearest
  trained neighbours below and above it in x = d/sqrt(N) and in r, in standard errors of the
  difference of the two means (SD * sqrt(1/n_best + 1/n_neighbour), each side's own seed
  count), and `familywise_threshold`: the margin, in those SEs, that every one of the study's
  comparisons must clear for all of them together to hold at 5 % (Bonferroni, one-sided).

The runs table is the one `archscale.fit.io.read_runs` returns: one row per (name, D), with the
seed mean in `loss`, the seed count in `n_seeds` and the seeds' own losses in `seed_losses`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from archscale.fit.io import size_groups

#: Shapes of one series: r (for an x series) or x (for an r series) within this factor.
SERIES_TOLERANCE = 1.25


def _pooled(groups: list[dict[str, Any]]) -> tuple[float | None, int]:
    dof = sum(g["n_seeds"] - 1 for g in groups)
    if not dof:
        return None, 0
    return math.sqrt(sum((g["n_seeds"] - 1) * g["sd"] ** 2 for g in groups) / dof), dof


def seed_noise(table: pd.DataFrame) -> dict[str, Any]:
    """The pooled seed SD of the loss, overall and per token budget, with each multi-seed
    shape's own spread."""
    groups = []
    if {"seed_losses", "n_seeds"} <= set(table.columns):
        for rec in table[table["n_seeds"] >= 2].itertuples(index=False):
            losses = np.asarray(rec.seed_losses, dtype=float)
            groups.append({"name": None if pd.isna(rec.name) else str(rec.name),
                           "N": float(rec.N), "D": float(rec.D), "n_seeds": int(len(losses)),
                           "mean": float(losses.mean()), "sd": float(losses.std(ddof=1))})
    pooled, dof = _pooled(groups)
    mean_loss = float(np.mean([g["mean"] for g in groups])) if groups else None
    by_budget = []
    for d in sorted({g["D"] for g in groups}):
        sd, k = _pooled([g for g in groups if g["D"] == d])
        by_budget.append({"D": d, "pooled_sd": sd, "degrees_of_freedom": k})
    return {"pooled_sd": pooled, "degrees_of_freedom": dof, "n_shapes": len(groups),
            "relative_sd": pooled / mean_loss if pooled is not None else None,
            "by_budget": by_budget,
            "method": "pooled over shapes with 2 or more seeds: sqrt(sum (n_i - 1) s_i^2 / "
                      "sum (n_i - 1)); the SD of one run's val_loss, not of a mean",
            "shapes": groups}


def noise_warnings(noise: dict[str, Any]) -> list[str]:
    """A warning when `seed_noise` found no shape with two or more seeds."""
    if noise["pooled_sd"] is not None:
        return []
    return ["seed noise is unmeasured: no shape was trained with 2 or more seeds, so nothing "
            "says whether loss differences between shapes exceed it; give one size's shapes "
            "`training: {seeds: [0, 1]}`"]


def seed_sd_at(noise: dict[str, Any], d: float) -> float | None:
    """The pooled seed SD at token budget d when measured there, else over all budgets."""
    for entry in noise.get("by_budget", []):
        if entry["D"] == d and entry["pooled_sd"] is not None:
            return entry["pooled_sd"]
    return noise.get("pooled_sd")


def resample_losses(table: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Each row's loss recomputed from a with-replacement draw of its seeds (one-seed rows
    keep their loss)."""
    loss = table["loss"].to_numpy(dtype=float).copy()
    if "seed_losses" not in table.columns:
        return loss
    for i, seeds in enumerate(table["seed_losses"]):
        seeds = np.sort(np.asarray(seeds, dtype=float))  # the same draw in any listed order
        if seeds.size >= 2:
            loss[i] = rng.choice(seeds, size=seeds.size, replace=True).mean()
    return loss


def _neighbour(cands: pd.DataFrame, axis: str, centre: float, side: str) -> pd.Series | None:
    pool = cands[cands[axis] < centre] if side == "below" else cands[cands[axis] > centre]
    if pool.empty:
        return None
    return pool.loc[np.abs(np.log(pool[axis] / centre)).idxmin()]


def _series(group: pd.DataFrame, axis: str, other: str, best: pd.Series) -> pd.DataFrame:
    """The shapes that vary `axis` at one value of `other` (within SERIES_TOLERANCE): the
    series with the most shapes, the one through the overall best shape on a tie. Choosing the
    longest series, not the one through the best shape, keeps an axis with a clear U readable
    when the best shape is a variant along the other, flat, axis."""
    tol = math.log(SERIES_TOLERANCE)
    logs = np.log(group[other].to_numpy(float))
    candidates = []
    for centre in logs:
        members = np.abs(logs - centre) <= tol
        through_best = bool(abs(math.log(float(best[other])) - centre) <= tol)
        candidates.append((int(members.sum()), through_best, -abs(centre - np.median(logs)),
                           tuple(np.flatnonzero(members))))
    count, _, _, members = max(candidates)
    return group.iloc[list(members)]


#: Shapes a (size, token budget) needs before its margins are computed: a best shape and a
#: neighbour on each side of it along one axis. Those points are the U verdicts' (and
#: proposals.candidates: verdict_points places runs only there).
MIN_MARGIN_SHAPES = 3


def optimum_margins(table: pd.DataFrame, seed_sd: float | dict[str, Any] | None,
                    size_tol: float = 0.25, min_shapes: int = MIN_MARGIN_SHAPES) -> list[dict[str, Any]]:
    """Per (size, token budget) with `min_shapes` or more shapes: the best trained shape, and per
    axis (x, r) the series of shapes that varies it (`_series`), that series' best shape and
    its nearest trained neighbour on each side, each neighbour's loss margin over it, the SE of
    that difference (each side's own seed count) and the margin in those SEs.

    seed_sd: one SD, or `seed_noise`'s result (then the SD at each comparison's budget)."""
    if table.empty:
        return []
    table = table.assign(size=size_groups(table["N"].to_numpy(), size_tol))
    out = []
    for (_, d), group in table.groupby(["size", "D"], sort=True):
        if len(group) < min_shapes:
            continue
        best = group.loc[group["loss"].idxmin()]
        sd = seed_sd_at(seed_sd, float(d)) if isinstance(seed_sd, dict) else seed_sd
        entry: dict[str, Any] = {
            "N": float(np.exp(np.log(group["N"]).mean())), "D": float(d), "seed_sd": sd,
            "n_shapes": int(len(group)), "best": _shape(best)}
        for axis, other in (("x", "r"), ("r", "x")):
            series = _series(group, axis, other, best)
            top = series.loc[series["loss"].idxmin()]
            n_top = int(top.get("n_seeds", 1))
            sides = {}
            for side in ("below", "above"):
                nb = _neighbour(series, axis, float(top[axis]), side)
                if nb is None:
                    sides[side] = None
                    continue
                margin = float(nb.loss - top.loss)
                n_nb = int(nb.get("n_seeds", 1))
                se = sd * math.sqrt(1 / n_top + 1 / n_nb) if sd else None
                sides[side] = {"name": None if pd.isna(nb.get("name")) else str(nb.get("name")),
                               axis: float(nb[axis]), "loss": float(nb.loss), "margin": margin,
                               "n_seeds": n_nb, "se": se,
                               "margin_in_se": margin / se if se else None}
            entry[axis] = {"series_best": _shape(top), "n_series": int(len(series)), **sides,
                           "bracketed": all(sides[s] is not None for s in sides)}
        out.append(entry)
    return out


def _shape(row: pd.Series) -> dict[str, Any]:
    return {"name": None if pd.isna(row.get("name")) else str(row.get("name")),
            "x": float(row.x), "r": float(row.r), "loss": float(row.loss),
            "n_seeds": int(row.get("n_seeds", 1))}


def familywise_threshold(margins: list[dict[str, Any]], alpha: float = 0.05
                         ) -> dict[str, Any]:
    """The margin (in SE of the difference) each one-sided comparison in `margins` must clear
    so that all of them hold together at `alpha` (Bonferroni over the comparisons made), and
    marks each axis entry `clear` when both its sides clear it."""
    m = sum(1 for e in margins for axis in ("x", "r") for side in ("below", "above")
            if e[axis][side] is not None)
    z = float(norm.ppf(1 - alpha / m)) if m else None
    for e in margins:
        for axis in ("x", "r"):
            sides = [e[axis][s] for s in ("below", "above")]
            e[axis]["clear"] = bool(z is not None and e[axis]["bracketed"] and all(
                s["margin_in_se"] is not None and s["margin_in_se"] >= z for s in sides))
    return {"comparisons": m, "alpha": alpha, "threshold_se": z,
            "method": "Bonferroni, one-sided: each margin over the best trained shape must "
                      "exceed the normal quantile 1 - alpha/m in SE of the difference"}
