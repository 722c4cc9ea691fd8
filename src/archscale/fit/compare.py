"""Several law forms fitted on the same runs, judged by held-out error against two null models,
with each form's optimum per grid size: what results/fits/forms.json holds.

Why: a law form that fits the runs equally well can put the optimum somewhere else (the
laptop study's paper form and a log-quadratic agree to 0.001 nats RMSE and disagree on r*),
and a law that extrapolates no better than ignoring architecture says little about
architecture. So the study fits every registered form (`archscale.fit.forms`) and reports:

- per form: coefficients, in-sample RMSE, and x*, r* at every grid size with percentile
  intervals over the refits where each is a minimum (`conditional.BootstrapSamples`);
- held-out error, leave-one-size-out and progressive (train on the smaller sizes, predict the
  next), for every form and two nulls: `no_architecture` (loss = L_opt) and `kind_ratio`
  (the held-out run's loss/L_opt ratio taken from the training runs of the nearest shape in
  (ln x, ln r), i.e. a constant penalty per kind of neighbour). Skill = 1 - MSE_form/MSE_null;
  Spearman is over the held-out size's architectures at one token budget (across budgets any
  D-aware law ranks correctly);
- the headline: the form with the lowest mean leave-one-size-out MSE (progressive when no
  leave-one-size-out fold could be fitted), the forms the held-out error rejects against it
  (worse in every one of 5+ folds: a sign test), and whether the optima of the others lie in
  the headline's intervals;
- the trained shapes' own evidence, independent of any form: the seed noise and, per grid
  size, the best shape's margins over its neighbours in SE (archscale.fit.seeds);
- the reference loss chosen by the rule of `archscale.fit.reference_rule`, and the headline
  form's optimum under the other L_opt sources (a sensitivity check, not a choice).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from archscale.fit import forms
from archscale.fit.chinchilla import FitError, fit_chinchilla
from archscale.fit.conditional import fit_conditional, optimum_interval
from archscale.fit.forms.base import AXES
from archscale.fit.io import size_groups
from archscale.fit.reference import chinchilla_points, empirical_l_opt_per_run
from archscale.fit.reference_rule import base_chinchilla, reference_by_rule
from archscale.fit.seeds import familywise_threshold, optimum_margins, seed_noise

NULLS = {
    "no_architecture": "loss = L_opt(N, D): the architecture does not matter",
    "kind_ratio": "loss = L_opt(N, D) times the mean loss/L_opt of the training runs of the "
                  "held-out run's nearest shape in (ln x, ln r): a constant penalty per kind of "
                  "neighbour, fitted on the training sizes",
}
#: Shapes within this factor in both x and r count as one kind for the kind_ratio null.
KIND_TOLERANCE = 1.25
#: L-BFGS starts of the Chinchilla fits inside held-out folds and the sensitivity check (the
#: configured n_starts serves the study's own reference fit): on degenerate small-model data
#: each start runs hundreds of iterations, and the 10 best grid starts reach the same optimum.
FOLD_STARTS = 10
#: Bootstrap refits of the base-shape Chinchilla fit, for the rule's interval test.
REFERENCE_BOOTSTRAP = 50
#: Leave-one-size-out folds a form must lose in, all of them, to be rejected (sign test).
SIGN_TEST_FOLDS = 5
SELECTION = ("the form with the lowest mean held-out MSE over the leave-one-size-out folds "
             "held out at a grid size that every form could fit (progressive folds when there "
             "is none)")


def grid_sizes(table: pd.DataFrame, size_tol: float = 0.25, min_shapes: int = 3
               ) -> list[dict[str, Any]]:
    """The sizes that vary the architecture: for each size, the token budget with the most
    distinct shapes (the largest on a tie), kept when it has `min_shapes` or more."""
    sizes = size_groups(table["N"].to_numpy(), size_tol)
    names = table["name"] if "name" in table.columns else pd.Series(range(len(table)))
    out = []
    for size in range(int(sizes.max()) + 1 if len(sizes) else 0):
        here = table[sizes == size]
        counts = here.assign(_n=names[sizes == size].to_numpy()).groupby("D")["_n"].nunique()
        if counts.empty or counts.max() < min_shapes:
            continue
        d = float(max(counts[counts == counts.max()].index))
        out.append({"size": size, "N": float(np.exp(np.log(here["N"]).mean())), "D": d,
                    "n_shapes": int(counts.max())})
    return out


# ---------------------------------------------------------------------------------------------
# Held-out error
# ---------------------------------------------------------------------------------------------

def kind_ratio(train: pd.DataFrame, train_l_opt: np.ndarray, held: pd.DataFrame) -> np.ndarray:
    """The kind_ratio null's multiplier for each held-out run (see NULLS)."""
    lx, lr = np.log(train["x"].to_numpy(float)), np.log(train["r"].to_numpy(float))
    ratio = train["loss"].to_numpy(float) / train_l_opt
    tol = math.log(KIND_TOLERANCE)
    out = np.empty(len(held))
    for i, (x, r) in enumerate(zip(np.log(held["x"].to_numpy(float)),
                                   np.log(held["r"].to_numpy(float)))):
        dist = np.hypot(lx - x, lr - r)
        near = dist.argmin()
        kind = (np.abs(lx - lx[near]) <= tol) & (np.abs(lr - lr[near]) <= tol)
        out[i] = ratio[kind].mean()
    return out


def spearman_tokens(held: pd.DataFrame) -> float | None:
    """The held-out size's token budget D with the most runs (the largest on a tie), when 3 or more."""
    counts = held.groupby("D").size()
    if counts.empty or counts.max() < 3:
        return None
    return float(max(counts[counts == counts.max()].index))


def _fold(table, train_mask, held_mask, form_names, r_range, size_tol, huber_delta, n_starts
          ) -> dict[str, Any]:
    """One held-out fold: every form and null fitted on the training runs, scored on the
    held-out ones."""
    lo, hi = r_range
    in_range = ((table["r"] >= lo) & (table["r"] <= hi)).to_numpy()
    train, held = table[train_mask], table[held_mask & in_range]
    row: dict[str, Any] = {"n_train": int((train_mask & in_range).sum()),
                           "n_heldout": int(len(held)), "status": "skipped", "reason": ""}
    if held.empty:
        row["reason"] = f"no held-out runs with r in [{lo:g}, {hi:g}]"
        return row
    try:
        chin, bad, _, _ = base_chinchilla(train, size_tol, huber_delta, n_starts)
    except FitError as exc:
        row["reason"] = f"no Chinchilla law on the training sizes' base shapes: {exc}"
        return row
    row["chinchilla_degenerate"] = "; ".join(bad)
    l_train = np.asarray(chin(train["N"], train["D"]), dtype=float)
    l_held = np.asarray(chin(held["N"], held["D"]), dtype=float)
    obs = held["loss"].to_numpy(float)
    preds = {"no_architecture": l_held,
             "kind_ratio": l_held * kind_ratio(train[in_range[train_mask]],
                                               l_train[in_range[train_mask]], held)}
    for name in form_names:
        try:
            law = fit_conditional(train, form=name, l_opt=l_train, chinchilla=chin,
                                  r_range=(lo, hi), size_tol=size_tol).law
        except FitError as exc:
            row[f"reason_{name}"] = str(exc)
            continue
        preds[name] = law.predict(held["x"], held["r"], l_held, n=held["N"].to_numpy(float))
    tokens = spearman_tokens(held)
    at = (held["D"] == tokens).to_numpy() if tokens is not None else None
    row["spearman_D"] = tokens
    for name, pred in preds.items():
        err = np.asarray(pred, dtype=float) - obs
        row[f"mse_{name}"] = float(np.mean(err ** 2))
        if at is not None and np.ptp(pred[at]) > 0:
            row[f"spearman_{name}"] = float(spearmanr(pred[at], obs[at]).statistic)
    row["status"] = "ok"
    return row


def heldout_table(table: pd.DataFrame, form_names: Sequence[str], r_range: Sequence[float],
                  size_tol: float = 0.25, huber_delta: float = 1e-3, n_starts: int = 50,
                  min_train_sizes: int = 3) -> pd.DataFrame:
    """One row per fold: scheme ('loso' or 'progressive'), held-out size and N, whether that
    size is a grid size (`heldout_is_grid`: 3+ shapes at one token budget, so the fold tests the
    architecture terms, not only the base shape's N-dependence), counts, status and reason,
    and per model (each form, each null) mse_<model> and spearman_<model>, plus
    skill_<form>_vs_<null>. A fold needs `min_train_sizes` training sizes (the Chinchilla law
    that gives the held-out L_opt extrapolates in N)."""
    sizes = size_groups(table["N"].to_numpy(), size_tol)
    grid = {g["size"] for g in grid_sizes(table, size_tol)}
    n_sizes = int(sizes.max()) + 1 if len(sizes) else 0
    rows = []
    schemes = [("loso", k, sizes != k) for k in range(n_sizes)]
    schemes += [("progressive", k, sizes < k) for k in range(1, n_sizes)]
    for scheme, k, train_mask in schemes:
        row = {"scheme": scheme, "heldout_size": k, "heldout_is_grid": k in grid,
               "heldout_N": float(np.exp(np.log(table.loc[sizes == k, "N"]).mean())),
               "train_sizes": int(len(np.unique(sizes[train_mask])))}
        if row["train_sizes"] < min_train_sizes:
            row.update(status="skipped", reason=f"{row['train_sizes']} training size(s); the "
                       f"held-out L_opt needs {min_train_sizes} to extrapolate in N")
        else:
            row.update(_fold(table, train_mask, sizes == k, form_names,
                             (float(r_range[0]), float(r_range[1])), size_tol, huber_delta,
                             min(n_starts, FOLD_STARTS)))
        rows.append(row)
    out = pd.DataFrame(rows)
    for name in form_names:
        for null in NULLS:
            if f"mse_{name}" in out and f"mse_{null}" in out:
                out[f"skill_{name}_vs_{null}"] = 1 - out[f"mse_{name}"] / out[f"mse_{null}"]
    return out


def architecture_folds(folds: pd.DataFrame, scheme: str) -> pd.DataFrame:
    """A scheme's fitted folds held out at a grid size: the ones that judge the architecture
    terms (a size trained only as its base shape tests nothing but the N-dependence)."""
    if folds.empty:
        return folds
    return folds[(folds["scheme"] == scheme) & (folds["status"] == "ok")
                 & folds["heldout_is_grid"].astype(bool)]


def heldout_summary(folds: pd.DataFrame, model: str, scheme: str) -> dict[str, Any]:
    """Mean MSE, skill against each null and Spearman of one model over a scheme's fitted
    folds at grid sizes (`architecture_folds`)."""
    ok = architecture_folds(folds, scheme)
    col = f"mse_{model}"
    if ok.empty or col not in ok or ok[col].isna().all():
        return {"folds": 0}
    have = ok[ok[col].notna()]
    out: dict[str, Any] = {"folds": int(len(have)), "mse_mean": float(have[col].mean()),
                           "mse_by_fold": [float(v) for v in have[col]]}
    for null in NULLS:
        key = f"skill_{model}_vs_{null}"
        if key in have:
            out[f"skill_vs_{null}"] = [None if pd.isna(v) else float(v) for v in have[key]]
    if f"spearman_{model}" in have:
        out["spearman_by_fold"] = [None if pd.isna(v) else float(v)
                                   for v in have[f"spearman_{model}"]]
    return out


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------

def _optimum_by_size(fit, grid: list[dict[str, Any]], level: float) -> list[dict[str, Any]]:
    form = fit.law.law_form
    out = []
    for g in grid:
        n = g["N"] if form.depends_on_n else None
        opt = fit.law.optimum(n)
        entry = {"size": g["size"], "N": g["N"], "D": g["D"]}
        optima = fit.samples.optima(form, n) if fit.samples is not None else None
        for a in AXES:
            entry[f"{a}_star"] = opt[a].star if math.isfinite(opt[a].star) else None
            entry[f"{a}_is_minimum"] = opt[a].is_minimum
            if optima is not None:
                entry[f"{a}_interval"] = optimum_interval(
                    *optima[a], level, tuple(fit.optimum[f"{a}_fitted"]))
        out.append(entry)
    return out


def _select(folds: pd.DataFrame, names: Sequence[str], default: str) -> dict[str, Any]:
    for scheme in ("loso", "progressive"):
        ok = architecture_folds(folds, scheme)
        cols = [f"mse_{n}" for n in names]
        if ok.empty or not all(c in ok for c in cols):
            continue
        common = ok.dropna(subset=cols)
        if common.empty:
            continue
        scores = {n: float(common[f"mse_{n}"].mean()) for n in names}
        best = min(scores, key=scores.get)
        return {"form": best, "scheme": scheme, "folds": int(len(common)), "scores": scores,
                "reason": f"lowest mean {scheme} held-out MSE ({scores[best]:.4g}) over "
                          f"{len(common)} fold(s) every form could fit"}
    return {"form": default, "scheme": None, "folds": 0, "scores": {},
            "reason": "no held-out fold could be fitted (too few sizes); the configured form "
                      "is the headline by default, unchosen"}


def rejected_forms(folds: pd.DataFrame, names: Sequence[str], headline: str
                   ) -> dict[str, str]:
    """The forms the held-out error rejects against the headline, with why: worse in every one
    of SIGN_TEST_FOLDS or more leave-one-size-out folds (a one-sided sign test, p <= 2^-5 =
    0.03). With fewer folds nothing is rejected, so every form's optimum must agree."""
    ok = architecture_folds(folds, "loso")
    cols = [f"mse_{n}" for n in names]
    if ok.empty or not all(c in ok for c in cols):
        return {}
    common = ok.dropna(subset=cols)
    if len(common) < SIGN_TEST_FOLDS:
        return {}
    head = common[f"mse_{headline}"].to_numpy()
    return {n: f"held-out MSE above the headline's in all {len(common)} leave-one-size-out "
               f"folds (sign test p = {0.5 ** len(common):.3g})"
            for n in names if n != headline and np.all(common[f"mse_{n}"].to_numpy() > head)}


def _agreement(results: Mapping[str, Any], headline: str, rejected: Mapping[str, str],
               level: float) -> list[dict[str, Any]]:
    """Per grid size and axis: each form's optimum, whether it lies in the headline's
    interval, and whether all the forms held-out error does not reject do."""
    out = []
    head = results[headline]["optimum_by_size"]
    for i, entry in enumerate(head):
        for a in AXES:
            ci = entry.get(f"{a}_interval") or {}
            stars = {name: res["optimum_by_size"][i][f"{a}_star"]
                     if res["optimum_by_size"][i][f"{a}_is_minimum"] else None
                     for name, res in results.items()}
            low, high = ci.get("low"), ci.get("high")
            # an interval over fewer than `level` of the refits (the rest had no minimum)
            # does not pin the optimum down, so it counts as none
            have = low is not None and high is not None and math.isfinite(low) \
                and math.isfinite(high) and ci.get("minimum_share", 0.0) >= level
            inside = {name: bool(have and s is not None and low <= s <= high)
                      for name, s in stars.items()}
            vals = [s for s in stars.values() if s]
            considered = [n for n in inside if n not in rejected]
            out.append({"size": entry["size"], "N": entry["N"], "axis": a,
                        "headline_interval": [low, high] if have else None,
                        "stars": stars, "inside": inside, "considered": considered,
                        "all_inside": all(inside[n] for n in considered),
                        "spread_ratio": max(vals) / min(vals) if len(vals) >= 2 else None})
    return out


def _sensitivity(table, headline: str, r_range, size_tol, huber_delta, n_starts, n_at
                 ) -> list[dict[str, Any]]:
    """The headline form's x*, r* (at the largest grid size) under each other L_opt source."""
    out = []
    sources = {"chinchilla on all runs": "chinchilla", "chinchilla on the best shapes":
               "best_shapes", "empirical best shape of each size and budget": "empirical"}
    for label, key in sources.items():
        try:
            if key == "empirical":
                l_opt, chin = empirical_l_opt_per_run(table, size_tol), None
            else:
                pts, _ = chinchilla_points(table, key, size_tol)
                chin = fit_chinchilla(pts["N"], pts["D"], pts["loss"], huber_delta=huber_delta,
                                      n_starts=n_starts).law
                l_opt = np.asarray(chin(table["N"], table["D"]), dtype=float)
            law = fit_conditional(table, form=headline, l_opt=l_opt, chinchilla=chin,
                                  r_range=r_range, size_tol=size_tol).law
        except FitError as exc:
            out.append({"source": label, "x_star": None, "r_star": None, "note": str(exc)})
            continue
        opt = law.optimum(n_at if law.law_form.depends_on_n else None)
        out.append({"source": label,
                    **{f"{a}_star": opt[a].star if opt[a].is_minimum else None for a in AXES},
                    "note": "" if all(opt[a].is_minimum for a in AXES) else
                    "an optimum that is not a minimum is given as null"})
    return out


def compare_forms(table: pd.DataFrame, *, form_names: Sequence[str] | None = None,
                  configured: str = "multiplicative", r_range: Sequence[float] = (0.5, 5.0),
                  bootstrap: int = 200, seed: int = 0, level: float = 0.95,
                  size_tol: float = 0.25, huber_delta: float = 1e-3, n_starts: int = 50,
                  min_train_sizes: int = 3) -> dict[str, Any]:
    """The forms.json document (see the module docstring) for a runs table from read_runs."""
    names = list(form_names or forms.names())
    if configured not in names:
        names.insert(0, configured)
    grid = grid_sizes(table, size_tol)
    ref = reference_by_rule(table, size_tol, huber_delta, n_starts,
                            bootstrap=min(bootstrap, REFERENCE_BOOTSTRAP), seed=seed)
    results: dict[str, Any] = {}
    for name in names:
        form = forms.get(name)
        try:
            fit = fit_conditional(table, form=name, l_opt=ref.values, chinchilla=ref.chinchilla,
                                  r_range=r_range, bootstrap=bootstrap, seed=seed,
                                  size_tol=size_tol)
        except FitError as exc:
            results[name] = {"formula": form.formula, "error": str(exc)}
            continue
        results[name] = {"formula": form.formula, "n_free": form.n_free,
                         "depends_on_n": form.depends_on_n,
                         "coefficients": fit.law.coefficients(),
                         "rmse": fit.fit_info["rmse"], "n_points": fit.fit_info["n_points"],
                         "optimum_by_size": _optimum_by_size(fit, grid, level),
                         "warnings": fit.warnings}
    fitted = [n for n in names if "error" not in results[n]]
    folds = heldout_table(table, fitted, r_range, size_tol, huber_delta, n_starts,
                          min_train_sizes)
    for name in fitted:
        results[name]["heldout"] = {s: heldout_summary(folds, name, s)
                                    for s in ("loso", "progressive")}
    nulls = {null: {"definition": text,
                    **{s: heldout_summary(folds, null, s) for s in ("loso", "progressive")}}
             for null, text in NULLS.items()}
    selection = _select(folds, fitted, configured if configured in fitted else
                        (fitted[0] if fitted else configured))
    headline = selection["form"]
    lo, hi = (float(v) for v in r_range)
    used = table[(table["r"] >= lo) & (table["r"] <= hi)]
    noise = seed_noise(used)
    margins = optimum_margins(used, noise, size_tol)
    doc: dict[str, Any] = {
        "what": "every registered law form fitted on the same runs with the same L_opt, "
                "judged by held-out error against two nulls (archscale.fit.compare)",
        "reference": ref.describe(), "grid": grid,
        "margins": {"seed_noise": noise, "optimum_margins": margins,
                    "margin_threshold": familywise_threshold(margins)},
        "forms": results, "nulls": nulls,
        "selection": {"rule": SELECTION, **selection},
        "heldout": {"columns": list(folds.columns),
                    "rows": [[_plain(v) for v in row] for row in folds.itertuples(index=False)]},
    }
    if headline in fitted:
        by_size = [dict(e) for e in results[headline]["optimum_by_size"]]
        for entry in by_size:
            entry.update(_base_at(table, entry, ref.base, size_tol))
            entry.update(_trained_at(table, ref.values, entry, size_tol))
        doc["headline"] = {"form": headline, "reason": selection["reason"],
                           "optimum_by_size": by_size}
        rejected = rejected_forms(folds, fitted, headline)
        doc["rejected"] = rejected
        doc["agreement"] = _agreement({n: results[n] for n in fitted}, headline, rejected,
                                      level)
        doc["sensitivity"] = _sensitivity(table, headline, r_range, size_tol, huber_delta,
                                          min(n_starts, FOLD_STARTS),
                                          grid[-1]["N"] if grid else None)
    else:
        doc["headline"] = None
    return doc


def _base_at(table: pd.DataFrame, entry: Mapping[str, Any], base: Sequence[str],
             size_tol: float) -> dict[str, Any]:
    """The base shape at a grid size and the seeds it was trained with at the grid token budget."""
    sizes = size_groups(table["N"].to_numpy(), size_tol)
    here = table[(sizes == entry["size"]) & (table["D"] == entry["D"])]
    rows = here[here["name"].isin(base)] if "name" in here and len(base) else here.iloc[0:0]
    if rows.empty:
        return {"base": None, "seeds": []}
    row = rows.iloc[0]
    seeds = [int(s) for s in row["seeds"]] if "seeds" in row else []
    return {"base": str(row["name"]), "seeds": seeds}


def _trained_at(table: pd.DataFrame, l_opt: np.ndarray, entry: Mapping[str, Any],
                size_tol: float) -> dict[str, Any]:
    """At a grid size and token budget: the reference loss the law predicts from (their mean over
    the size's runs there; one value when L_opt depends on (size, D) only) and the trained
    shapes (name, x, r, N, loss, seed count, seed losses), which the optimum check compares
    the trained optimum with."""
    sizes = size_groups(table["N"].to_numpy(), size_tol)
    here = (sizes == entry["size"]) & (table["D"] == entry["D"]).to_numpy()
    rows = table[here]
    shapes = [{"name": None if pd.isna(r.get("name")) else str(r.get("name")),
               "x": float(r["x"]), "r": float(r["r"]), "N": float(r["N"]),
               "loss": float(r["loss"]), "n_seeds": int(r.get("n_seeds", 1)),
               "seed_losses": [float(v) for v in r.get("seed_losses", (r["loss"],))]}
              for _, r in rows.iterrows()]
    return {"l_opt": float(np.mean(l_opt[here])) if here.any() else None, "trained": shapes}


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: numpy numbers as Python, NaN as None."""
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
