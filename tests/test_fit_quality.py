"""Fit quality by progressive extrapolation, without leaking the held-out size's loss."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from archscale.fit import ChinchillaLaw, fit_chinchilla, fit_conditional, paper_law
from archscale.fit.quality import COLUMNS, progressive_extrapolation
from archscale.fit.reference import empirical_points
from archscale.fit.stages import quality_stage

TRUE_CHIN = ChinchillaLaw(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37)
SIZES = (5e7, 1e8, 2e8, 4e8, 8e8)


def runs_from_paper_law(sizes=SIZES, tokens=(2e9, 8e9), noise=0.002, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    law = paper_law(l_opt=TRUE_CHIN)
    rows = [(n * rng.uniform(0.97, 1.03), d, x, r) for n in sizes for d in tokens
            for x in (0.04, 0.06, 0.08, 0.12) for r in (0.6, 1.0, 2.0, 4.0)]
    runs = pd.DataFrame(rows, columns=["N", "D", "x", "r"])
    runs["loss"] = law.predict_at(runs["x"], runs["r"], runs["N"], runs["D"]) + rng.normal(
        0, noise, len(runs))
    return runs


@pytest.fixture(scope="module")
def runs():
    return runs_from_paper_law()


@pytest.fixture(scope="module")
def quality(runs):
    return progressive_extrapolation(runs, n_starts=10)


def test_one_row_per_fold_and_small_folds_are_skipped_with_a_reason(quality):
    assert list(quality.columns) == COLUMNS
    assert quality["fold"].tolist() == [1, 2, 3, 4]
    skipped = quality[quality["status"] == "skipped"]
    assert skipped["fold"].tolist() == [1, 2]
    assert skipped["reason"].str.contains("needs 3 to extrapolate in N").all()
    assert skipped["mse"].isna().all()


def test_extrapolation_is_accurate_on_a_true_law(quality):
    ok = quality[quality["status"] == "ok"]
    assert ok["fold"].tolist() == [3, 4]
    assert (ok["rmse"] < 0.01).all()
    assert (ok["spearman"] > 0.8).all()
    assert (ok["n_heldout"] == 32).all() and (ok["l_opt_source"].str.contains("training")).all()


def test_held_out_l_opt_comes_from_training_sizes_only(runs, quality):
    """Redo fold 3 by hand on the three smallest sizes: identical MSE means nothing leaked."""
    from archscale.fit.io import size_groups

    sizes = size_groups(runs["N"].to_numpy())
    train, held = runs[sizes < 3], runs[sizes == 3]
    # unnamed runs: the best shape of each training size and budget stands in for base shapes
    best = empirical_points(train)
    chin = fit_chinchilla(best["N"], best["D"], best["loss"], n_starts=10).law
    cond = fit_conditional(train, l_opt="chinchilla", chinchilla=chin).law
    pred = cond.predict(held["x"], held["r"], chin(held["N"], held["D"]))
    row = quality[quality["fold"] == 3].iloc[0]
    assert row["mse"] == pytest.approx(np.mean((pred - held["loss"]) ** 2), rel=1e-9)
    at = (held["D"] == held["D"].max()).to_numpy()  # Spearman within one budget
    assert row["spearman_D"] == held["D"].max()
    assert row["spearman"] == pytest.approx(spearmanr(pred[at], held["loss"][at]).statistic)
    # the nulls are scored on the same held-out runs
    assert row["mse_no_architecture"] == pytest.approx(
        np.mean((chin(held["N"], held["D"]) - held["loss"]) ** 2), rel=1e-9)
    assert row["skill_vs_no_architecture"] > 0.5

    # Changing the held-out losses moves only the observed side of the comparison.
    shifted = runs.copy()
    shifted.loc[sizes == 3, "loss"] += 0.05
    again = progressive_extrapolation(shifted[sizes <= 3], n_starts=10)
    row2 = again[again["fold"] == 3].iloc[0]
    assert row2["mse"] == pytest.approx(np.mean((pred - held["loss"] - 0.05) ** 2), rel=1e-9)


def test_three_sizes_and_one_budget_skip_every_fold(tmp_path):
    """Like the default study: no fold can be evaluated without leaking, and it says so."""
    runs = runs_from_paper_law(sizes=(1e5, 2e5, 4e5), tokens=(2e5,))
    table = pd.DataFrame({"n_params_non_embedding": runs["N"], "tokens": runs["D"],
                          "val_loss": runs["loss"], "d_over_sqrt_n": runs["x"],
                          "r_mlp_attn": runs["r"]})
    path = tmp_path / "runs.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "fits" / "quality.csv"
    result = quality_stage(path, out, {"bootstrap": 0})
    written = pd.read_csv(out)
    assert written["status"].tolist() == ["skipped", "skipped"] == result["status"].tolist()
    assert written["reason"].notna().all()


def test_new_held_out_budget_needs_three_training_budgets():
    runs = runs_from_paper_law(tokens=(2e9, 8e9))
    largest = runs["N"] > 6e8
    runs.loc[largest, "D"] = 3.2e10
    quality = progressive_extrapolation(runs, n_starts=10)
    last = quality.iloc[-1]
    assert last["status"] == "skipped" and "token budget" in last["reason"]


def test_a_budget_within_one_percent_of_a_training_budget_is_not_new():
    """The held-out size trained at 8.04e9 tokens is at the training sizes' 8e9 budget by the
    fits' one distinct-values rule (archscale.fit.values), so its fold is evaluated."""
    runs = runs_from_paper_law(tokens=(2e9, 8e9))
    runs.loc[(runs["N"] > 6e8) & (runs["D"] == 8e9), "D"] = 8.04e9
    last = progressive_extrapolation(runs, n_starts=10).iloc[-1]
    assert last["status"] == "ok", last["reason"]
