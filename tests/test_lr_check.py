"""The learning-rate check: its transfer rule (archscale.fit.lr_check), how it turns a U verdict
into "not identified" (archscale.fit.verdicts), the config's refusals, and one real Snakemake
run on the finished tiny study that trains only the check's runs, at the scaled lr, and feeds
nothing into the fits."""
from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
import yaml

from archscale.config import ConfigError, load_study
from archscale.fit.lr_check import (TRANSFER_SD, factor_label, not_transferred, planned_runs,
                                    run_rows, runs_table, transfer_table)
from archscale.fit.verdicts import NOT_IDENTIFIED, SUPPORTED, lr_confounded
from conftest import run_snakemake, tiny_config
from test_reruns import copy_study, snapshot


def run(arch, factor, seed, loss, lr=0.01):
    return {"arch": arch, "N": 1000, "x": 0.2, "r": 3.0, "D": 8192, "factor": factor,
            "lr": lr * factor, "seed": seed, "val_loss": loss, "train_loss": loss,
            "loss_column": "val_loss", "loss": loss, "source": "grid" if factor == 1 else "lr"}


def test_the_rule_transfers_within_the_bar_and_not_beyond_it():
    sd = 0.02
    runs = runs_table([
        # within the bar: the rule's lr is 0.03 worse than the best (bar 2 x 0.02 = 0.04)
        run("near", 1.0, 0, 3.03), run("near", 0.5, 0, 3.00), run("near", 2.0, 0, 3.10),
        # beyond it: 0.05 worse than twice the rule's lr
        run("far", 1.0, 0, 3.05), run("far", 0.5, 0, 3.20), run("far", 2.0, 0, 3.00),
        # the rule's lr is itself the best
        run("best", 1.0, 0, 2.90), run("best", 1.0, 1, 2.92), run("best", 2.0, 0, 3.00)])
    table = transfer_table(runs, {8192: sd}).set_index("arch")
    assert TRANSFER_SD == 2.0 and table.loc["near", "bar"] == pytest.approx(2 * sd)
    assert table.loc["near", "transfers"] and table.loc["near", "best_factor"] == 0.5
    assert not table.loc["far", "transfers"] and table.loc["far", "best_factor"] == 2.0
    assert table.loc["far", "gap"] == pytest.approx(0.05)
    assert table.loc["best", "transfers"] and table.loc["best", "gap"] == 0.0
    assert table.loc["best", "rule_loss"] == pytest.approx(2.91)  # the mean over its seeds
    assert table.loc["best", "seeds"] == "0 1"
    assert list(not_transferred(transfer_table(runs, {8192: sd}))) == ["far"]
    # without a seed SD the check cannot decide, and says so instead of guessing
    undecided = transfer_table(runs, {8192: None})
    assert undecided["transfers"].isna().all() and not_transferred(undecided) == {}


def test_a_run_pair_that_does_not_match_is_refused():
    metrics = {"arch": "a1", "tokens_budget": 8192, "seed": 0, "train_loss": 3.0,
               "lr": {"lr": 0.02}}
    evaluation = {"arch": "a1", "tokens": 8192, "seed": 1, "val_loss": 3.1}
    with pytest.raises(ValueError, match="paired with eval.json"):
        run_rows([(metrics, evaluation, 2.0)], {"a1": {"N": 1, "x": 1, "r": 1}}, "val_loss", "lr")
    evaluation["seed"] = 0
    (row,) = run_rows([(metrics, evaluation, 2.0)], {"a1": {"N": 1, "x": 1, "r": 1}},
                      "val_loss", "lr_check")
    assert (row["factor"], row["lr"], row["loss"]) == (2.0, 0.02, 3.1)


MARGINS = {"optimum_margins": [{
    "N": 1000, "D": 8192, "best": {"name": "base"},
    "x": {"series_best": {"name": "x-best"}, "below": {"name": "x-low"},
          "above": {"name": "x-high"}},
    "r": {"below": {"name": "r-low"}, "above": None}}]}
U_X = {"finding": "u_x", "statement": "loss is U-shaped in x", "verdict": SUPPORTED,
       "rule": "...", "numbers": {}, "reasons": ["a clear U at 2 size(s)"]}


def transfer(**transfers):
    return pd.DataFrame([{"arch": a, "rule_lr": 0.01, "gap": 0.1, "best_factor": 2.0,
                          "bar": 0.04, "transfers": t} for a, t in transfers.items()])


def test_a_shape_the_rule_does_not_transfer_to_confounds_only_its_axis():
    check = transfer(**{"x-high": False, "r-low": True})
    u_x = lr_confounded(U_X, MARGINS, "x", check)
    assert u_x["verdict"] == NOT_IDENTIFIED and "lr confounded: x-high" in u_x["reasons"][0]
    assert "without the lr check: supported" in u_x["reasons"][1]
    assert u_x["numbers"]["lr_not_transferred"] == ["x-high"]
    u_r = lr_confounded({**U_X, "finding": "u_r"}, MARGINS, "r", check)
    assert u_r["verdict"] == SUPPORTED and u_r["numbers"]["lr_checked"] == ["r-low"]
    # the axis's own best shape counts (a series best other than the size's overall best)
    assert lr_confounded(U_X, MARGINS, "x", transfer(**{"x-best": False}))["verdict"] == \
        NOT_IDENTIFIED
    assert lr_confounded(U_X, MARGINS, "x", transfer(**{"base": False}))["verdict"] == SUPPORTED
    # no check at all: the finding as it was
    assert lr_confounded(U_X, MARGINS, "x", None) == U_X


def test_the_config_section_is_off_by_default_and_checked():
    assert load_study(tiny_config()).config["lr_check"] == {
        "enabled": False, "architectures": [], "factors": [0.5, 2.0], "seeds": [0]}
    for change, words in (({"architectures": ["nope"]}, "not configured architectures"),
                          ({"architectures": ["a1"], "factors": [1.0, 2.0]}, "rule's own lr"),
                          ({"architectures": ["a1"], "seeds": [3]}, "trains seeds")):
        config = tiny_config()
        config["lr_check"] = {"enabled": True, **change}
        with pytest.raises(ConfigError, match=words):
            load_study(config)
    config = tiny_config()
    config["lr_check"] = {"enabled": True, "architectures": ["a1", "b2"], "factors": [0.5]}
    # each architecture at its largest token budget, the factor as its path segment
    assert planned_runs(load_study(config)) == [("a1", "0.5", 16384, 0), ("b2", "0.5", 8192, 0)]
    assert factor_label(2.0) == "2" and factor_label(0.25) == "0.25"


@pytest.mark.workflow
def test_the_check_trains_only_its_runs_at_the_scaled_lr(tiny_study_done, tmp_path):
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["lr_check"] = {"enabled": True, "architectures": ["a2"], "factors": [0.5, 2.0]}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    grid_before = snapshot(workdir, "results/runs")
    fits_before = snapshot(workdir, "results/fits")
    proc = run_snakemake(workdir, "--cores", "2", "results/lr_check/transfer.csv",
                         "results/fits/verdicts.json", check=True, timeout=600)
    ran = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", proc.stdout + proc.stderr,
                         flags=re.M))
    # fit_forms: the finished study was built to pareto.csv, which does not need forms.json
    assert not any(k.endswith("forms.json") for k in fits_before)
    assert ran == {"lr_check_train", "lr_check_evaluate", "lr_check_table", "fit_forms",
                   "verdicts"}, ran
    assert snapshot(workdir, "results/runs") == grid_before   # the grid is untouched
    fits_after = snapshot(workdir, "results/fits")             # and so are the fits it had
    assert {k: fits_after[k] for k in fits_before} == fits_before

    runs = pd.read_csv(workdir / "results/lr_check/runs.csv")
    assert list(zip(runs["factor"], runs["source"])) == [(0.5, "lr_check"), (1.0, "grid"),
                                                         (2.0, "lr_check")]
    rule_lr = float(runs.loc[runs.factor == 1.0, "lr"].iloc[0])
    assert runs["lr"].tolist() == pytest.approx([0.5 * rule_lr, rule_lr, 2 * rule_lr])
    assert runs["val_loss"].nunique() == 3 and all(math.isfinite(v) for v in runs["loss"])
    for factor in ("0.5", "2"):
        metrics = json.loads((workdir / f"results/lr_check/runs/a2/lr{factor}/8192/seed0/"
                              "metrics.json").read_text())
        assert metrics["lr"]["lr"] == pytest.approx(float(factor) * rule_lr)
    (row,) = pd.read_csv(workdir / "results/lr_check/transfer.csv").to_dict("records")
    assert row["arch"] == "a2" and row["rule_loss"] == runs.loc[1, "loss"]
    assert row["best_loss"] == runs["loss"].min()
    verdicts = json.loads((workdir / "results/fits/verdicts.json").read_text())
    assert [r["arch"] for r in verdicts["lr_check"]] == ["a2"]
