"""Fit quality as the paper reports it: progressive extrapolation over model sizes.

Sizes are ordered by N (variants of one nominal size grouped by io.size_groups). Fold k fits on
the k smallest sizes and predicts the next one: MSE and Spearman rank correlation between
predicted and observed loss of the held-out size's runs (those with r in r_range).

No leakage: the held-out size's L_opt cannot be its own best run, so every fold takes L_opt
from a Chinchilla fit on the training sizes' base shapes only (archscale.fit.reference_rule;
the best shape of each size and token budget when no shape is trained at several budgets), for
training and held-out runs alike, and says when that fit is degenerate. That fit
extrapolates in N, which needs at least `min_train_sizes` (default 3) distinct training
sizes (E + A/N^alpha has 3 coefficients in N); a held-out token budget not among the training
ones likewise needs 3 distinct training token budgets. A fold that cannot meet this, or whose
conditional fit has too few points, is written as `skipped` with its reason, never filled in
from the held-out data.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from archscale.fit import forms
from archscale.fit.chinchilla import FitError
from archscale.fit.compare import kind_ratio, spearman_tokens
from archscale.fit.conditional import fit_conditional
from archscale.fit.defaults import DEFAULT_R_RANGE
from archscale.fit.io import size_groups
from archscale.fit.reference_rule import base_chinchilla
from archscale.fit.values import absent_from, distinct_count

#: spearman is over the held-out size's architectures at one token budget (spearman_D: the one
#: with the most held-out runs), since across token budgets any D-aware law ranks correctly; the
#: nulls (archscale.fit.compare.NULLS) are scored on the same runs, skill = 1 - mse/mse_null.
COLUMNS = ["fold", "train_sizes", "heldout_size", "heldout_n_params", "n_train", "n_heldout",
           "status", "reason", "mse", "rmse", "spearman", "spearman_D", "mean_abs_rel_error",
           "mse_no_architecture", "mse_kind_ratio", "skill_vs_no_architecture",
           "skill_vs_kind_ratio", "form", "l_opt_source", "chinchilla_degenerate"]


def progressive_extrapolation(runs: pd.DataFrame, *, form: str = "multiplicative",
                              r_range: Sequence[float] = DEFAULT_R_RANGE,
                              huber_delta: float = 1e-3, size_tol: float = 0.25,
                              min_train_sizes: int = 3, n_starts: int = 50) -> pd.DataFrame:
    """One row per fold (columns COLUMNS); runs need N, D, loss, x, r (see io.read_runs).
    form: a registered law form (archscale.fit.forms.names())."""
    forms.get(form)  # an unknown form fails here, even when every fold is skipped
    table = runs.reset_index(drop=True)
    sizes = size_groups(table["N"].to_numpy(), size_tol)
    n_sizes = int(sizes.max()) + 1 if len(sizes) else 0
    lo, hi = (float(v) for v in r_range)
    in_range = ((table["r"] >= lo) & (table["r"] <= hi)).to_numpy()
    rows = []
    for k in range(1, n_sizes):
        train, held = sizes < k, (sizes == k) & in_range
        row = {"fold": k, "train_sizes": k, "heldout_size": k,
               "heldout_n_params": float(np.exp(np.log(table.loc[sizes == k, "N"]).mean())),
               "n_train": int((train & in_range).sum()), "n_heldout": int(held.sum()),
               "status": "skipped", "reason": "", "mse": np.nan, "rmse": np.nan,
               "spearman": np.nan, "spearman_D": np.nan, "mean_abs_rel_error": np.nan,
               "mse_no_architecture": np.nan, "mse_kind_ratio": np.nan,
               "skill_vs_no_architecture": np.nan, "skill_vs_kind_ratio": np.nan, "form": form,
               "l_opt_source": "chinchilla fit on the training sizes' base shapes",
               "chinchilla_degenerate": ""}
        rows.append(row)
        tr, ho = table[train], table[held]
        new_d = len(absent_from(ho["D"], tr["D"])) > 0
        if k < min_train_sizes:
            row["reason"] = (f"{k} training size(s): the Chinchilla fit that supplies the "
                             f"held-out L_opt needs {min_train_sizes} to extrapolate in N")
            continue
        if new_d and distinct_count(tr["D"]) < 3:
            row["reason"] = ("held-out token budget(s) absent from the training sizes, and fewer "
                             "than 3 training budgets to extrapolate L_opt in D")
            continue
        if len(ho) == 0:
            row["reason"] = f"no held-out runs with r in [{lo:g}, {hi:g}]"
            continue
        try:
            chin, degenerate, _, _ = base_chinchilla(table[train], size_tol, huber_delta,
                                                     n_starts)
            cond = fit_conditional(tr, form=form, l_opt="chinchilla", chinchilla=chin,
                                   r_range=(lo, hi), size_tol=size_tol).law
        except FitError as exc:
            row["reason"] = f"fit on the training sizes failed: {exc}"
            continue
        l_held = np.asarray(chin(ho["N"], ho["D"]), dtype=float)
        fitted = table[train & in_range]  # the runs the law was fitted on, as in compare
        pred = cond.predict(ho["x"], ho["r"], l_held, n=ho["N"].to_numpy(float))
        obs = ho["loss"].to_numpy()
        err = pred - obs
        nulls = {"no_architecture": l_held,
                 "kind_ratio": l_held * kind_ratio(fitted, np.asarray(
                     chin(fitted["N"], fitted["D"]), dtype=float), ho)}
        row.update(status="ok", mse=float(np.mean(err ** 2)),
                   rmse=float(np.sqrt(np.mean(err ** 2))),
                   mean_abs_rel_error=float(np.mean(np.abs(err) / obs)),
                   chinchilla_degenerate="; ".join(degenerate))
        for null, values in nulls.items():
            row[f"mse_{null}"] = float(np.mean((values - obs) ** 2))
            row[f"skill_vs_{null}"] = 1 - row["mse"] / row[f"mse_{null}"]
        tokens = spearman_tokens(ho)
        at = (ho["D"] == tokens).to_numpy() if tokens is not None else None
        if at is not None and np.ptp(obs[at]) > 0 and np.ptp(pred[at]) > 0:
            row["spearman"] = float(spearmanr(pred[at], obs[at]).statistic)
            row["spearman_D"] = tokens
        else:
            row["reason"] = ("Spearman undefined (fewer than 3 held-out architectures at one "
                             "token budget, or constant values)")
    return pd.DataFrame(rows, columns=COLUMNS)
