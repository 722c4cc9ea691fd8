"""The simulated comparison of the closed loop with a uniform extension of the starting grid
(archscale.search.design_simulation, issue 28 item 4), on the committed laptop study's law,
noise and costs, at a few repeats with a cheap bootstrap."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archscale.search.design_loop import STOP_REASONS, LoopSettings
from archscale.search.design_simulation import (laptop_setup, misfit_sd, reference_chinchilla,
                                                run_repeat, simulate, summarise,
                                                uniform_candidates, uniform_extension)

STUDY = Path(__file__).resolve().parents[1] / "docs" / "laptop-science"
LOOP = LoopSettings(rounds=2, budget_hours=0.12, runs_per_round=4)


@pytest.fixture(scope="module")
def study():
    return json.loads((STUDY / "conditional.json").read_text()), pd.read_csv(STUDY / "runs.csv")


@pytest.fixture(scope="module")
def setup(study):
    conditional, runs = study
    return laptop_setup(conditional, runs, LOOP, seq_len=128, eval_seconds=4.0,
                        sizes=(32000, 64000, 128000), tokens=1.28e6, bootstrap=20)


@pytest.fixture(scope="module")
def candidates(setup):
    return uniform_candidates(setup.start, setup)


def test_the_setup_is_the_studys_grid_noise_and_costs(study, setup):
    conditional, _ = study
    assert len(setup.start) == 30 and set(setup.start["seed"]) == {0, 1}
    assert setup.seed_sd == pytest.approx(conditional["seed_noise"]["by_budget"][2]["pooled_sd"])
    assert (setup.start["cost_device_hours"] > 0).all()
    truth = setup.truth.optimum()
    assert truth["x"].star == pytest.approx(conditional["optimum"]["x_star"])
    assert truth["r"].star == pytest.approx(conditional["optimum"]["r_star"])
    # the known L_opt follows the study's empirical points
    points = np.array(conditional["l_opt"]["empirical"]["points"])
    chin = reference_chinchilla(points)
    assert np.sqrt(np.mean((chin(points[:, 0], points[:, 1]) - points[:, 2]) ** 2)) < 0.05
    assert 0 < misfit_sd(conditional) < 0.05


def test_the_uniform_extension_spreads_over_the_starting_span(setup, candidates):
    trained = {tuple(row) for row in setup.start[["d_model", "n_layers", "n_heads",
                                                  "ffn_dim", "head_dim"]].to_numpy()}
    assert not any(tuple(row) in trained for row in candidates[["d_model", "n_layers",
                                                                "n_heads", "ffn_dim",
                                                                "head_dim"]].to_numpy())
    # round-robin over the three sizes
    sizes = np.round(np.log2(candidates["n_params_non_embedding"].to_numpy() / 32000))
    assert sorted(sizes[:3]) == [0, 1, 2]
    # inside the starting grid's span (the solver may miss a target by a little)
    for axis in ("d_over_sqrt_n", "r_mlp_attn"):
        lo, hi = setup.start[axis].min(), setup.start[axis].max()
        assert candidates[axis].between(lo / 1.25, hi * 1.25).all(), axis
    taken = uniform_extension(candidates, 0.1)
    assert taken["cost_device_hours"].sum() <= 0.1
    assert 0.1 - taken["cost_device_hours"].sum() < candidates["cost_device_hours"].min()


def test_both_designs_spend_the_same_hours_within_the_budget(setup, candidates):
    rows, rounds = run_repeat(setup, seed=0, repeat=0, candidates=candidates)
    by = {row["design"]: row for row in rows}
    loop, uniform = by["loop"], by["uniform"]
    assert 0 < loop["hours_added"] <= LOOP.budget_hours + 1e-12
    assert uniform["hours_added"] <= loop["hours_added"] + 1e-12
    assert loop["hours_added"] - uniform["hours_added"] < candidates["cost_device_hours"].max()
    assert loop["n_runs"] == 30 + loop["runs_added"] and uniform["n_runs"] == 30 + uniform[
        "runs_added"]
    assert rounds[-1]["stop"] and rounds[-1]["reason"] in STOP_REASONS
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))


def test_with_almost_no_noise_the_loop_finds_the_true_optimum(setup, candidates):
    """Seed SD 1e-4 (not 0: the proposals weigh runs by 1/SD^2): the loop's refits land on
    the known law's optimum, their intervals are narrow and hold it; the bootstrap is not
    blind to the design either (the widths are not exactly 0)."""
    quiet = dataclasses.replace(setup, seed_sd=1e-4)
    rows, _ = run_repeat(quiet, seed=0, repeat=1, candidates=candidates)
    for row in rows:
        for axis in ("x", "r"):
            assert row[f"{axis}_star"] == pytest.approx(row[f"{axis}_true"], rel=2e-3)
            assert 0 < row[f"{axis}_width"] < 0.02 * row[f"{axis}_true"], (row["design"], axis)
            assert row[f"{axis}_contains_truth"], (row["design"], axis)
        assert row["u_x"] == "supported" and row["u_r"] == "supported"


def test_repeats_are_reproducible_and_summarised(setup, candidates):
    table, rounds = simulate(setup, repeats=2, seed=3)
    again, _ = run_repeat(setup, seed=3, repeat=1, candidates=candidates)
    pd.testing.assert_frame_equal(table[table["repeat"] == 1].reset_index(drop=True),
                                  pd.DataFrame(again), check_dtype=False)
    summary = summarise(table, rounds)
    assert summary["repeats"] == 2 and set(summary["designs"]) == {"start", "loop", "uniform"}
    start = rounds[rounds["round"] == 1]["r_width_before"]
    assert summary["designs"]["start"]["r_width"]["median"] == pytest.approx(start.median())
    assert [r["round"] for r in summary["loop_rounds"]] == sorted(set(rounds["round"]))
    loop = summary["designs"]["loop"]
    widths = table.loc[table["design"] == "loop", "r_width"]
    assert loop["r_width"]["median"] == pytest.approx(widths.median())
    assert loop["r_width"]["q25"] <= loop["r_width"]["median"] <= loop["r_width"]["q75"]
    assert 0 <= summary["loop_narrower_share"]["x"] <= 1
    json.dumps(summary, allow_nan=False)
    assert set(rounds["repeat"]) == {0, 1} and not math.isnan(rounds["x_width_before"].iloc[0])
