"""Seed noise: the pooled seed SD, the seed-resampling bootstrap, the optimum margins."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from archscale.fit import fit_conditional, paper_law
from archscale.fit.io import read_runs
from archscale.fit.seeds import familywise_threshold, optimum_margins, resample_losses, seed_noise

from test_fit_conditional import TRUE_CHIN


def runs_with_seeds(seed_sd: float, n_seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    """A runs.csv-like table from the paper's law at two sizes, every shape with n_seeds seeds
    whose losses scatter with SD seed_sd around the law."""
    rng = np.random.default_rng(seed)
    truth = paper_law(l_opt=TRUE_CHIN, normalise=True)
    rows = []
    for n in (1e8, 4e8):
        for x, r in [(0.03, 1.0), (0.08, 1.0), (0.25, 1.0), (0.08, 0.3), (0.08, 4.0)]:
            base = float(truth.predict_at(x, r, n, 2e10))
            for s in range(n_seeds):
                rows.append({"name": f"n{n:.0e}-x{x}-r{r}", "seed": s,
                             "n_params_non_embedding": n, "tokens": 2e10, "d_over_sqrt_n": x,
                             "r_mlp_attn": r, "val_loss": base + rng.normal(0, seed_sd)})
    return pd.DataFrame(rows)


def test_read_runs_keeps_each_seeds_loss():
    table = read_runs(runs_with_seeds(0.01))
    assert len(table) == 10 and (table["n_seeds"] == 3).all()
    first = table.iloc[0]
    assert len(first.seed_losses) == 3
    assert np.mean(first.seed_losses) == pytest.approx(first.loss)
    assert np.std(first.seed_losses, ddof=1) == pytest.approx(first.loss_sd)


def test_pooled_seed_sd_recovers_the_true_spread():
    noise = seed_noise(read_runs(runs_with_seeds(0.02, n_seeds=6)))
    assert noise["n_shapes"] == 10 and noise["degrees_of_freedom"] == 50
    assert noise["pooled_sd"] == pytest.approx(0.02, rel=0.25)
    by_hand = math.sqrt(np.mean([g["sd"] ** 2 for g in noise["shapes"]]))  # equal n: plain mean
    assert noise["pooled_sd"] == pytest.approx(by_hand)


def test_one_seed_per_shape_leaves_the_noise_unmeasured():
    table = read_runs(runs_with_seeds(0.02, n_seeds=1))
    assert seed_noise(table)["pooled_sd"] is None
    fit = fit_conditional(table, l_opt="chinchilla", chinchilla=TRUE_CHIN, r_range=(0.2, 5))
    assert any(w.startswith("seed noise is unmeasured") for w in fit.warnings)


def test_resampling_draws_only_from_a_shapes_own_seeds():
    table = read_runs(runs_with_seeds(0.05))
    rng = np.random.default_rng(1)
    draws = np.array([resample_losses(table, rng) for _ in range(200)])
    for i, seeds in enumerate(table["seed_losses"]):
        assert draws[:, i].min() >= min(seeds) - 1e-12 and draws[:, i].max() <= max(seeds) + 1e-12
        assert np.ptp(draws[:, i]) > 0  # three distinct seeds: the mean moves between draws


def test_seed_noise_widens_the_bootstrap_interval():
    """Same seed means, more spread between seeds: the optimum's interval must widen."""
    quiet, noisy = read_runs(runs_with_seeds(0.0005)), read_runs(runs_with_seeds(0.0005))
    rng = np.random.default_rng(3)
    spread = [rng.normal(0, 0.03, len(s)) for s in noisy["seed_losses"]]
    noisy["seed_losses"] = [tuple(m + e - e.mean()) for m, e in zip(noisy["loss"], spread)]

    def width(table):
        fit = fit_conditional(table, l_opt="chinchilla", chinchilla=TRUE_CHIN, r_range=(0.2, 5),
                              bootstrap=200, seed=0)
        ci = fit.intervals["optimum"]["x_star"]
        return ci["high"] - ci["low"]

    assert width(noisy) > 2 * width(quiet)


def test_margins_name_the_best_shape_and_its_neighbours_in_se_of_the_difference():
    table = read_runs(runs_with_seeds(0.001))
    margins = optimum_margins(table, seed_sd=0.001)
    threshold = familywise_threshold(margins)
    assert len(margins) == 2  # one entry per size
    assert threshold["comparisons"] == 8  # 2 sizes x 2 axes x 2 sides
    assert threshold["threshold_se"] == pytest.approx(2.498, abs=1e-3)  # z(1 - 0.05/8)
    for m in margins:
        assert m["best"]["x"] == 0.08 and m["best"]["r"] == 1.0
        assert m["x"]["below"]["x"] == 0.03 and m["x"]["above"]["x"] == 0.25
        assert m["r"]["below"]["r"] == 0.3 and m["r"]["above"]["r"] == 4.0
        for axis in ("x", "r"):
            for side in ("below", "above"):
                nb = m[axis][side]
                assert nb["margin"] > 0
                # each side's own seed count: the SE of a difference of two means
                se = 0.001 * (1 / m["best"]["n_seeds"] + 1 / nb["n_seeds"]) ** 0.5
                assert nb["margin_in_se"] == pytest.approx(nb["margin"] / se)
            assert m[axis]["bracketed"] and m[axis]["clear"]
    # a seed SD as large as the margins: bracketed, but not clear
    noisy = optimum_margins(table, seed_sd=1.0)
    familywise_threshold(noisy)
    assert not any(m["x"]["clear"] for m in noisy)


def test_an_unbracketed_optimum_says_so():
    table = read_runs(runs_with_seeds(0.001))
    one_side = table[table["x"] <= 0.08]
    margins = optimum_margins(one_side, seed_sd=0.001)
    familywise_threshold(margins)
    assert all(m["x"]["above"] is None and not m["x"]["bracketed"] for m in margins)
    assert all(not m["x"]["clear"] for m in margins)


def test_the_fit_reports_noise_and_margins_in_its_json():
    table = read_runs(runs_with_seeds(0.002))
    doc = fit_conditional(table, l_opt="chinchilla", chinchilla=TRUE_CHIN, r_range=(0.2, 5),
                          bootstrap=50).to_dict()
    assert doc["seed_noise"]["pooled_sd"] == pytest.approx(0.002, rel=0.5)
    assert len(doc["optimum_margins"]) == 2
    assert "seeds" in doc["confidence_intervals"]["method"]
    assert isinstance(doc["optimum"]["x_interval_inside_fitted"], bool)


def test_margins_use_the_seed_sd_of_their_own_budget():
    quiet = runs_with_seeds(0.001, n_seeds=4, seed=1)
    noisy = runs_with_seeds(0.05, n_seeds=4, seed=2).assign(tokens=5e9)  # shorter, noisier
    table = read_runs(pd.concat([quiet, noisy], ignore_index=True))
    noise = seed_noise(table)
    by_d = {b["D"]: b["pooled_sd"] for b in noise["by_budget"]}
    assert by_d[2e10] == pytest.approx(0.001, rel=0.5) and by_d[5e9] == pytest.approx(0.05, rel=0.5)
    for m in optimum_margins(table, noise):
        assert m["seed_sd"] == by_d[m["D"]]
