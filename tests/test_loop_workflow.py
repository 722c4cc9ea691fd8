"""The closed loop through real Snakemake (rules/loop.smk): switched on in a copy of the finished
tiny study, one command runs every round, from the first decision to the table of rounds, and
stops at the device-hour budget; nothing of the study itself reruns. The round policy's own
cases (targets, budget, bad settings) are tests/test_design_loop.py's."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from archscale.config import load_study

LOOP = {"enabled": True, "rounds": 3, "runs_per_round": 2}


@pytest.fixture(scope="module")
def looped(tiny_study_done, tmp_path_factory):
    """The complete tiny study with the loop on and run: its folder, the snapshot of results/
    before, the dry run that switching it on gave, and the first round's proposed cost."""
    from test_reruns import (complete_study, copy_study, dry_run, read_config, run_snakemake,
                             snapshot, write_config)

    workdir = copy_study(complete_study(tiny_study_done, tmp_path_factory),
                         tmp_path_factory.mktemp("looped") / "study")
    before = snapshot(workdir)
    proposals = pd.read_csv(workdir / "results/proposals.csv")
    first = proposals.sort_values("rank")["cost_device_hours"].iloc[:2].sum()
    # a budget for the first round's two runs and a little more: the loop must stop on it
    config = read_config(workdir)
    config["loop"] = {**LOOP, "budget_hours": float(first) * 1.5}
    write_config(workdir, config)
    planned = dry_run(workdir)
    run_snakemake(workdir, "--cores", "2", check=True, timeout=900)
    return workdir, before, planned, config["loop"]


@pytest.mark.workflow
def test_switching_the_loop_on_schedules_only_the_loop(looped):
    _, _, planned, _ = looped
    assert planned.rules() == {"loop_round", "loop_rounds"}, planned.rules()


@pytest.mark.workflow
def test_the_loop_trains_the_top_proposals_and_stops_at_the_budget(looped):
    workdir, _, _, loop = looped
    rounds = pd.read_csv(workdir / "results/loop/rounds.csv")
    assert list(rounds["round"]) == list(range(1, len(rounds) + 1))
    assert rounds["reason"].iloc[-1] in ("budget spent", "rounds done")
    assert (rounds["reason"].iloc[:-1] == "train").all()
    assert rounds["spent_after_hours"].iloc[-1] <= loop["budget_hours"] * (1 + 1e-9)
    first = json.loads((workdir / "results/loop/round1/decision.json").read_text())
    proposals = pd.read_csv(workdir / "results/proposals.csv").sort_values("rank")
    assert first["picked_names"] == list(proposals["name"].iloc[:2])
    # round 1 decided from the study's own fit: its x* and interval are conditional.json's
    # (the tiny study's bootstrap finds too few minima for an interval: its width is empty)
    doc = json.loads((workdir / "results/fits/conditional.json").read_text())
    ci = doc["confidence_intervals"]["optimum"]["x_star"]
    assert math.isclose(rounds["x_star"].iloc[0], doc["optimum"]["x_star"])
    width = ci["high"] - ci["low"] if ci["low"] is not None else math.nan
    assert (math.isclose(rounds["x_width"].iloc[0], width) if math.isfinite(width)
            else math.isnan(rounds["x_width"].iloc[0]))


@pytest.mark.workflow
def test_each_round_keeps_its_runs_fits_and_verdicts(looped):
    workdir, _, _, _ = looped
    study_runs = pd.read_csv(workdir / "results/runs.csv")
    plan = pd.read_csv(workdir / "results/loop/round1/plan.csv")
    round_runs = pd.read_csv(workdir / "results/loop/round1/runs.csv")
    assert len(round_runs) == len(study_runs) + len(plan)
    added = round_runs.iloc[len(study_runs):]
    assert list(added["name"]) == list(plan["name"]) and list(added["seed"]) == list(plan["seed"])
    assert all(math.isfinite(v) and 0 < v < 10 for v in added["val_loss"])
    for name in ("chinchilla.json", "conditional.json", "forms.json", "verdicts.json",
                 "recommendations.json", "proposals.csv"):
        assert (workdir / "results/loop/round1" / name).is_file(), name
    # a proposed run trains with the study's settings, in the loop's own folder
    name, tokens, seed = plan.loc[0, ["name", "tokens", "seed"]]
    metrics = json.loads((workdir / f"results/loop/runs/{name}/{tokens}/seed{seed}/metrics.json")
                         .read_text())
    assert metrics["seed"] == seed and metrics["tokens_budget"] == tokens


@pytest.mark.workflow
def test_the_loop_feeds_nothing_back_and_a_second_run_does_nothing(looped):
    from test_reruns import dry_run, snapshot, snapshot_diff

    workdir, before, _, _ = looped
    diff = snapshot_diff(before, snapshot(workdir))
    changed = diff["changed"] + diff["removed"]
    assert changed == [], changed
    assert all(p.startswith(("results/loop/", "results/plots/loop_rounds"))
               for p in diff["added"]), diff["added"]
    assert dry_run(workdir).rules() == set()


def test_a_bad_loop_setting_fails_at_load_with_the_key(tmp_path):
    from conftest import run_snakemake, tiny_config, write_workflow

    config = tiny_config()
    config["loop"] = {"enabled": True, "rounds": 2, "budget_hours": 1.0,
                      "target_widths": {"z": 0.1}}
    workdir = write_workflow(tmp_path / "study", config)
    proc = run_snakemake(workdir, "-n", "--cores", "1")
    assert proc.returncode != 0
    assert "target_widths" in proc.stderr + proc.stdout


def test_the_loop_is_off_by_default():
    from conftest import tiny_config

    assert load_study(tiny_config()).settings.loop.enabled is False


@pytest.mark.workflow
def test_a_dry_run_of_the_paper_config_shows_the_first_round(tmp_path):
    """configs/paper-1b.yaml runs the loop after its grid: its dry run plans round 1's
    decision and the table of rounds (the round's runs follow from the decision)."""
    from conftest import REPO, run_snakemake, write_workflow
    from archscale.config import read_config_file

    workdir = write_workflow(tmp_path / "study", read_config_file(REPO / "configs/paper-1b.yaml"))
    proc = run_snakemake(workdir, "-n", "--cores", "2", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "results/loop/round1/decision.json" in text and "loop_rounds" in text


def test_the_rounds_figure_draws_an_interval_that_misses_its_optimum(tmp_path):
    """A bootstrap percentile interval can leave out the fitted optimum (the laptop loop
    study's round 2 did); the figure draws it as it is instead of failing."""
    from archscale.search.loop_rounds import ROUND_COLUMNS
    from archscale.search.plots import plot_loop_rounds

    rounds = pd.DataFrame([
        {"round": 1, "device_hours": 0.03, "spent_after_hours": 0.03, "x_star": 0.3,
         "x_star_low": 0.1, "x_star_high": 0.2, "r_star": 3.0, "r_star_low": 1.0,
         "r_star_high": 9.0},
        {"round": 2, "device_hours": 0.0, "spent_after_hours": 0.03, "x_star": 0.2,
         "x_star_low": None, "x_star_high": None, "r_star": 2.0, "r_star_low": 2.5,
         "r_star_high": 4.0}], columns=ROUND_COLUMNS)
    plot_loop_rounds(rounds, tmp_path / "rounds.png")
    assert (tmp_path / "rounds.png").stat().st_size > 0
