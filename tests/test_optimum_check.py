"""The optimum check: its plan from a hand-written forms.json (archscale.search.optimum_plan), its
refusals, its runs table, and one real Snakemake run that trains a predicted optimum with every
seed and never touches the study's own results."""
from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest

from archscale.architecture import shape_from_name, shape_name
from archscale.config import ConfigError, load_study
from archscale.search.optimum_plan import (FALLBACK_HEAD_DIM, OptimumCheckError,
                                           optimum_check_plan, optimum_check_runs, planned_runs)
from conftest import run_snakemake, tiny_config, write_workflow


def _targets(n_params, gqa_group=1, x=0.25, r=2.0):
    return {"n_params": n_params, "d_over_sqrt_n": x, "r_mlp_attn": r, "gqa_group": gqa_group,
            "ffn_multiple": 16, "tolerance": 0.1}


def study_config():
    """The tiny study with three sizes: two bases given by targets, one (a1) by its shape."""
    config = tiny_config()
    a1 = next(a for a in config["architectures"] if a["name"] == "a1")
    config["architectures"] = [
        {"name": "s-base", "n_layers": 1, "head_dim": 16, "targets": _targets(8000)},
        {**a1, "token_budgets": [8192]},
        {"name": "m-base", "n_layers": 2, "head_dim": 16, "targets": _targets(24000, 2)},
    ]
    return config


@pytest.fixture(scope="module")
def study():
    return load_study(study_config())


def entry(size, base, x_star, r_star, n=20000.0, seeds=(0, 1)):
    return {"size": size, "N": n, "D": 8192.0, "x_star": x_star, "r_star": r_star, "base": base,
            "seeds": list(seeds) if seeds is not None else None}


def forms(*entries):
    return {"headline": {"form": "multiplicative", "optimum_by_size": list(entries)}}


GRID = forms(entry(1, "s-base", 0.35, 1.5, n=8464.0), entry(2, "a1", 0.2, 2.5, n=18432.0),
             entry(3, "m-base", 0.3, 1.5, n=25344.0))


def test_the_largest_sizes_get_the_predicted_optimum_at_their_base_layout(study):
    plan = optimum_check_plan(GRID, study, 2)
    assert list(plan["size"]) == [2, 3] and set(plan["status"]) == {"planned"}
    for _, row in plan.iterrows():
        base = study.architectures[row["base"]]
        shape = shape_from_name(row["varch"])
        assert shape_name(row) == row["varch"]
        # the base's layers, head_dim and GQA group; N within the base's tolerance
        assert (shape["n_layers"], shape["head_dim"]) == (base.n_layers, base.head_dim)
        assert shape["n_heads"] // shape["n_kv_heads"] == base.gqa_group
        target = study.arch_spec(row["base"]).get("targets", {}).get(
            "n_params", base.n_params_non_embedding)
        assert abs(row["n_params_non_embedding"] / target - 1) <= 0.2
        assert abs(row["x"] / row["x_star"] - 1) < 0.1 and abs(row["r"] / row["r_star"] - 1) < 0.2
        assert row["seeds"] == "0 1" and row["D"] == 8192
    assert planned_runs(plan) == [(v, 8192, s) for v in plan["varch"] for s in (0, 1)]


def test_a_size_without_an_optimum_is_skipped_not_replaced(study):
    doc = forms(entry(1, "s-base", 0.35, 1.5, n=8464.0), entry(2, "a1", None, 2.5, n=18432.0),
                entry(3, "m-base", 0.3, 1.5, n=25344.0, seeds=None))
    plan = optimum_check_plan(doc, study, 2)
    assert list(plan["status"]) == ["skipped", "skipped"]
    assert "x_star is null" in plan.loc[0, "reason"] and "seeds is null" in plan.loc[1, "reason"]
    assert planned_runs(plan) == []
    assert list(optimum_check_plan(doc, study, 3)["status"]) == ["planned", "skipped", "skipped"]


def test_a_head_dim_too_wide_for_the_target_falls_back_then_gives_up():
    config = study_config()
    config["architectures"][0]["head_dim"] = 32   # one head is then most of an 8k-parameter model
    study = load_study(config)
    plan = optimum_check_plan(forms(entry(1, "s-base", 0.8, 2.0)), study, 1)
    assert plan.loc[0, "status"] == "planned"
    assert plan.loc[0, "head_dim"] == FALLBACK_HEAD_DIM
    plan = optimum_check_plan(forms(entry(1, "s-base", 2.0, 2.0)), study, 1)
    assert plan.loc[0, "status"] == "skipped"
    assert "head_dim 32" in plan.loc[0, "reason"] and f"head_dim {FALLBACK_HEAD_DIM}" in \
        plan.loc[0, "reason"]


@pytest.mark.parametrize("doc, words", [
    ({"forms": {}}, ["no 'headline'", "snakemake"]),
    ({"headline": {"form": "multiplicative"}}, ["optimum_by_size", "snakemake"]),
    (forms(entry(1, "n999-base", 0.3, 2.0)), ["'n999-base'", "configured", "rebuild"]),
    (forms({"size": 1, "N": 1.0, "D": 8192.0}), ["lacks x_star, r_star, base, seeds"]),
    (forms(entry(1, "m-base", 0.3, 2.0, n=9e4), entry(2, "s-base", 0.3, 2.0, n=8e3)),
     ["ascending N"]),
    (forms({**entry(1, "s-base", 0.3, 2.0), "D": 8192.5}), ["D must be a whole"]),
    (forms(entry(1, "s-base", 0.3, 2.0, seeds=("0",))), ["seeds must be a list"]),
])
def test_bad_forms_json_names_the_problem_and_the_fix(study, doc, words):
    with pytest.raises(OptimumCheckError) as err:
        optimum_check_plan(doc, study, 2)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_sizes_must_be_at_least_one(study):
    with pytest.raises(OptimumCheckError, match="optimum_check.sizes"):
        optimum_check_plan(GRID, study, 0)


def test_the_config_section_is_off_by_default_and_checked():
    assert load_study(tiny_config()).config["optimum_check"] == {"enabled": False, "sizes": 2}
    config = tiny_config()
    config["optimum_check"] = {"enabled": True, "size": 2}
    with pytest.raises(ConfigError, match="optimum_check"):
        load_study(config)
    config["optimum_check"] = {"enabled": True}
    config["fit"]["loss_column"] = "acc_avg"
    with pytest.raises(ConfigError, match="optimum check observes only"):
        load_study(config)


def test_runs_table_has_a_row_per_seed_and_one_per_skipped_size(study):
    doc = forms(entry(2, "a1", None, 2.5, n=18432.0), entry(3, "m-base", 0.3, 1.5, n=25344.0))
    plan = optimum_check_plan(doc, study, 2)
    observed = [({"arch": v, "tokens_budget": t, "seed": s, "train_loss": 4.0 + s},
                 {"arch": v, "tokens": t, "seed": s, "val_loss": 5.0 + s, "val_bpb": 1.0})
                for v, t, s in reversed(planned_runs(plan))]
    table = optimum_check_runs(plan, observed, "val_bpb")
    assert list(table["status"]) == ["skipped", "trained", "trained"]
    assert pd.isna(table.loc[0, "seed"]) and pd.isna(table.loc[0, "val_loss"])
    assert list(table["seed"].iloc[1:]) == [0, 1]
    assert list(table["val_loss"].iloc[1:]) == [5.0, 6.0]
    assert list(table["train_loss"].iloc[1:]) == [4.0, 5.0]
    assert list(table["loss"].iloc[1:]) == [1.0, 1.0] and set(table["loss_column"]) == {"val_bpb"}
    with pytest.raises(OptimumCheckError, match="no metrics.json/eval.json for planned run"):
        optimum_check_runs(plan, observed[:1], "val_loss")


# --- one real run ---------------------------------------------------------------------------

OPT = "results/optimum_check"


def workflow_without_the_fit(workdir):
    """The workflow with rules/fit.smk left out: the hand-written forms.json then stands in for
    the fit's (it has no rule to rebuild it, so no grid run is trained for it). The closed loop
    (rules/loop.smk) refits with the fit's rules, so it goes too."""
    snakefile = workdir / "Snakefile"
    text = snakefile.read_text()
    for part in ("fit", "loop"):
        text, n = re.subn(rf'^include: "rules/{part}\.smk"\n', "", text, flags=re.M)
        assert n == 1, f"the Snakefile no longer includes rules/{part}.smk as this test expects"
    snakefile.write_text(text)


def write_forms(workdir, doc):
    (workdir / "results/fits").mkdir(parents=True, exist_ok=True)
    (workdir / "results/fits/forms.json").write_text(json.dumps(doc))


@pytest.mark.workflow
def test_the_predicted_optimum_trains_with_every_seed_and_feeds_nothing_back(tmp_path):
    config = study_config()
    config["architectures"] = [a for a in config["architectures"] if a["name"] != "a1"]
    config["optimum_check"] = {"enabled": True, "sizes": 2}
    config["data"]["source"]["max_bytes"] = 300_000   # a smaller corpus: a quicker tokenizer
    config["data"]["tokenizer"]["train_bytes"] = 150_000
    config["evaluation"]["tasks"] = []   # the check reads losses: no multiple-choice task to build
    workdir = write_workflow(tmp_path / "study", config)
    workflow_without_the_fit(workdir)
    write_forms(workdir, forms(entry(1, "s-base", None, None, n=8464.0),
                               entry(2, "m-base", 0.3, 1.5, n=25344.0, seeds=(0, 1))))
    run_snakemake(workdir, "--cores", "2", f"{OPT}/runs.csv", check=True, timeout=600)

    plan = pd.read_csv(workdir / f"{OPT}/plan.csv", dtype={"seeds": str})
    runs = pd.read_csv(workdir / f"{OPT}/runs.csv")
    assert list(plan["status"]) == ["skipped", "planned"]
    varch = plan.loc[1, "varch"]
    skipped, trained = runs[runs.status == "skipped"], runs[runs.status == "trained"]
    assert list(skipped["size"]) == [1] and skipped["seed"].isna().all()
    assert skipped["val_loss"].isna().all() and "null" in skipped["reason"].iloc[0]
    assert sorted(trained["seed"]) == [0, 1] and set(trained["varch"]) == {varch}
    assert set(trained["D"]) == {8192} and set(trained["base"]) == {"m-base"}
    assert all(math.isfinite(v) and 0 < v < 10 for v in trained["val_loss"])
    assert all(math.isfinite(v) for v in trained["train_loss"])
    assert (abs(trained["x"] / 0.3 - 1) < 0.1).all() and (abs(trained["r"] / 1.5 - 1) < 0.2).all()
    assert set(trained["N"]) == {int(plan.loc[1, "n_params_non_embedding"])}
    # two seeds, two models: the seed reached the trainer
    assert trained["train_loss"].nunique() == 2
    for seed in (0, 1):
        metrics = json.loads((workdir / f"{OPT}/runs/{varch}/8192/seed{seed}/metrics.json")
                             .read_text())
        assert metrics["seed"] == seed and metrics["tokens_budget"] == 8192
        # the study's training section, as a configured architecture without overrides gets
        assert metrics["provenance"]["settings"]["training"]["lr"] == config["training"]["lr"]
    # nothing feeds back: no grid run, no runs.csv, the hand-written fit untouched
    assert not (workdir / "results/runs").exists() and not (workdir / "results/runs.csv").exists()
    assert sorted(p.name for p in (workdir / "results/fits").iterdir()) == ["forms.json"]
    # a new fit with the same optimum replans, but trains nothing again (config.json and the
    # runs follow from the shape's name, budget and seed, not from the plan)
    metrics_before = {p: p.stat().st_mtime_ns for p in (workdir / OPT).rglob("metrics.json")}
    write_forms(workdir, forms(entry(1, "s-base", None, None, n=8464.0),
                               entry(2, "m-base", 0.3, 1.5, n=25000.0, seeds=(0, 1))))
    proc = run_snakemake(workdir, "--cores", "2", f"{OPT}/runs.csv", check=True, timeout=600)
    ran = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", proc.stdout + proc.stderr,
                         flags=re.M))
    assert "optimum_check_plan" in ran and ran <= {"optimum_check_plan", "optimum_check_runs"}, ran
    assert {p: p.stat().st_mtime_ns for p in (workdir / OPT).rglob("metrics.json")} == \
        metrics_before

