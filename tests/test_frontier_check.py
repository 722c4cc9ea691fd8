"""The frontier check (the validation loop): its cost model, budgeted frontier coverage (pulp), comparison."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from archscale.architecture import Architecture
from archscale.costs import CostError, FittedJobCosts, duration_s, training_flops
from archscale.search.frontier_check import (FrontierCheckError, choose_checked_shapes,
                                             comparison_table, coverage_matrix, frontier_weights,
                                             select_frontier_checks)

SEQ = 64


def frontier(n: int = 6, budgets=(1e5,)) -> pd.DataFrame:
    """A convex frontier per budget: loss falls as throughput falls."""
    rows = []
    for budget in budgets:
        for i in range(n):
            rows.append({"name": f"d{64 + 8 * i}-L2-h2-kv1-dh32-f{128 + 32 * i}", "budget": budget,
                         "d_model": 64 + 8 * i, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
                         "head_dim": 32, "ffn_dim": 128 + 32 * i,
                         "n_params_non_embedding": int(budget), "r_mlp_attn": 1.0 + i,
                         "d_over_sqrt_n": 0.1, "gqa_group": 2,
                         "predicted_loss": 4.0 - 0.1 * i + 0.01 * i * i,
                         "predicted_tokens_per_s": 1000.0 / (1 + 0.2 * i)})
    return pd.DataFrame(rows)


def test_weights_share_each_budget_equally_and_follow_the_arc():
    pareto = frontier(5, budgets=(1e5, 2e5))
    w = frontier_weights(pareto)
    assert w.sum() == pytest.approx(1.0)
    assert w[:5].sum() == pytest.approx(0.5) and w[5:].sum() == pytest.approx(0.5)
    assert (w > 0).all()
    # the two ends stand for half a gap each, so they weigh less than their neighbours
    assert w[0] < w[1] and w[4] < w[3]


def test_coverage_is_one_on_itself_fades_with_distance_and_never_crosses_budgets():
    pareto = frontier(4, budgets=(1e5, 2e5))
    s = coverage_matrix(pareto, radius=1.0)
    assert np.allclose(np.diag(s), 1.0)
    assert s[0, 1] > s[0, 2] >= s[0, 3] >= 0
    assert (s[:4, 4:] == 0).all() and (s[4:, :4] == 0).all()


def test_the_program_respects_budget_and_count_and_spreads_its_choices():
    pareto = frontier(7)
    hours = np.full(7, 1.0)
    plan = choose_checked_shapes(pareto, hours, budget_hours=2.5, max_architectures=5, radius=0.4)
    chosen = plan.index[plan.status == "validate"].tolist()
    assert len(chosen) == 2                      # the budget, not the count, binds
    assert plan.loc[chosen, "estimated_hours"].sum() <= 2.5
    # two points covering a 7-point arc best sit apart, neither at the very ends
    assert abs(chosen[0] - chosen[1]) >= 2
    assert plan.loc[chosen, "coverage"].eq(1.0).all()
    one = choose_checked_shapes(pareto, hours, budget_hours=10, max_architectures=1, radius=0.4)
    assert (one.status == "validate").sum() == 1  # the count binds


def test_more_budget_never_covers_less_and_zero_budget_chooses_nothing():
    pareto = frontier(6)
    hours = np.linspace(0.5, 1.5, 6)
    covered = []
    for budget in (0.0, 1.0, 2.0, 4.0, 10.0):
        plan = choose_checked_shapes(pareto, hours, budget, max_architectures=6, radius=0.3)
        assert plan.loc[plan.status == "validate", "estimated_hours"].sum() <= budget + 1e-9
        covered.append(float((plan.frontier_weight * plan.coverage).sum()))
    assert covered[0] == 0.0
    assert covered == sorted(covered) and covered[-1] == pytest.approx(1.0)


def _objective(pareto, chosen: set[int], radius: float) -> float:
    s, w = coverage_matrix(pareto, radius), frontier_weights(pareto)
    return float(sum(w[j] * max((s[i, j] for i in chosen), default=0.0)
                     for j in range(len(pareto))))


@pytest.mark.parametrize("trained_at", [None, 0, 2])
def test_the_program_finds_the_best_affordable_set(trained_at):
    """Brute force over every affordable subset: CBC's choice covers as much as the best."""
    pareto = frontier(6, budgets=(1e5, 2e5))
    rng = np.random.default_rng(3)
    hours = rng.uniform(0.5, 1.5, len(pareto))
    trained = np.zeros(len(pareto), bool)
    if trained_at is not None:
        trained[trained_at] = True
    budget, most, radius = 2.2, 3, 0.5
    plan = choose_checked_shapes(pareto, hours, budget, most, radius, trained=trained)
    chosen = set(plan.index[plan.status != "skip"])
    assert set(np.flatnonzero(trained)) <= chosen
    new = chosen - set(np.flatnonzero(trained))
    assert hours[list(new)].sum() <= budget + 1e-9 and len(new) <= most
    best = 0.0
    free = [i for i in range(len(pareto)) if not trained[i]]
    for mask in range(1 << len(free)):
        pick = {free[k] for k in range(len(free)) if mask >> k & 1}
        if len(pick) <= most and hours[list(pick)].sum() <= budget:
            best = max(best, _objective(pareto, pick | set(np.flatnonzero(trained)), radius))
    assert _objective(pareto, chosen, radius) == pytest.approx(best, abs=1e-7)
    assert float((plan.frontier_weight * plan.coverage).sum()) == pytest.approx(best, abs=1e-7)
    if trained_at is not None:
        assert plan.loc[trained_at, "status"] == "trained"
        assert plan.loc[trained_at, "estimated_hours"] == 0


def test_a_non_positive_radius_is_refused():
    with pytest.raises(FrontierCheckError, match="coverage_radius"):
        choose_checked_shapes(frontier(3), np.ones(3), 1.0, 1, radius=0.0)


def runs_table(walls: list[float], tokens: list[int]) -> pd.DataFrame:
    shape = dict(d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32, ffn_dim=128,
                 vocab_size=512, name="a")
    return pd.DataFrame([{**shape, "tokens": t, "wall_s": w} for w, t in zip(walls, tokens)])


def test_cost_model_fits_start_up_plus_seconds_per_flop():
    per_token = training_flops(runs_table([0], [1]).iloc[0], SEQ)
    tokens = [1000, 2000, 4000]
    walls = [3.0 + 1e-9 * per_token * t for t in tokens]
    cost = FittedJobCosts.fit(runs_table(walls, tokens), SEQ, eval_seconds=[2.0, 4.0, float("nan")],
                         measure_seconds=[1.0], train_devices=2, eval_devices=1,
                         measure_devices=1)
    assert cost.fixed_s == pytest.approx(3.0, rel=1e-6)
    assert cost.s_per_flop == pytest.approx(1e-9, rel=1e-6)
    assert cost.eval_s == 3.0 and cost.measure_s == 1.0
    flops = per_token * 8000
    assert cost.hours(flops) == pytest.approx(((3 + 1e-9 * flops) * 2 + 3 + 1) / 3600)
    assert cost.wall_hours(flops) == pytest.approx((3 + 1e-9 * flops + 3 + 1) / 3600)
    with pytest.raises(CostError, match="evaluate"):
        FittedJobCosts.fit(runs_table(walls, tokens), SEQ, [float("nan")], [1.0], 1, 1, 1)


def test_duration_reads_provenance_and_is_nan_without_it():
    rec = {"provenance": {"started": "2026-01-01T00:00:00+00:00",
                          "finished": "2026-01-01T00:01:30+00:00"}}
    assert duration_s(rec) == 90.0
    assert np.isnan(duration_s({}))


def test_plan_marks_trained_shapes_and_prices_the_rest():
    pareto = frontier(4)
    arch = pareto.iloc[1]
    runs = pd.DataFrame([{**{k: arch[k] for k in ("d_model", "n_layers", "n_heads",
                                                    "n_kv_heads", "head_dim", "ffn_dim")},
                          "vocab_size": 512, "tokens": 1000, "wall_s": 10.0}])
    cost = FittedJobCosts(fixed_s=10, s_per_flop=0, eval_s=5, measure_s=5, train_devices=1,
                     eval_devices=1, measure_devices=1)
    plan = select_frontier_checks(pareto, runs, cost, SEQ, tokens=1000, vocab_size=512,
                            settings={"budget_hours": 1.0, "max_architectures": 2,
                                      "coverage_radius": 0.5})
    assert plan.loc[1, "status"] == "trained"
    assert (plan.status == "validate").sum() == 2
    assert plan.loc[plan.status == "validate", "estimated_hours"].eq(20 / 3600).all()
    assert (plan.train_flops > 0).all()


def test_validation_table_compares_the_fits_loss_and_the_measured_throughput():
    pareto = frontier(3)
    plan = pareto.assign(status=["validate", "skip", "skip"], estimated_hours=0.01,
                         estimated_wall_hours=0.005)
    prov = {"started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:36+00:00"}
    observed = {pareto.name[0]: {
        "metrics": {"train_loss": 4.4, "tokens_seen": 8192, "provenance": prov},
        "eval": {"val_loss": 4.2, "val_bpb": 1.9, "provenance": prov},
        "throughput": {"output_tokens_per_s": 900.0, "engine": "torch", "device": "cpu",
                       "provenance": prov}}}
    table = comparison_table(plan, observed, "val_loss")
    assert len(table) == 1
    row = table.iloc[0]
    assert row.observed_loss == 4.2 and row.loss_error == pytest.approx(0.2)
    assert row.throughput_relative_error == pytest.approx(-0.1)
    assert row.wall_hours == pytest.approx(3 * 36 / 3600)   # no wall_s: provenance times
    assert comparison_table(plan, observed, "train_loss").iloc[0].observed_loss == 4.4
    assert comparison_table(plan, observed, "val_bpb").iloc[0].observed_loss == 1.9
    with pytest.raises(FrontierCheckError, match="neither metrics.json nor eval.json"):
        comparison_table(plan, observed, "acc_avg")
    with pytest.raises(FrontierCheckError, match="no observation"):
        comparison_table(plan.assign(status="validate"), observed, "val_loss")


def test_architecture_flops_match_the_accounting():
    row = frontier(1).iloc[0].to_dict() | {"vocab_size": 512}
    arch = Architecture(name="x", d_model=64, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=32,
                        ffn_dim=128, vocab_size=512)
    assert training_flops(row, SEQ) == arch.training_flops_per_token(SEQ)


# ---------------------------------------------------------------------------------------------
# The loop in the workflow: a checkpoint on the finished tiny study
# ---------------------------------------------------------------------------------------------

VALIDATION = {"enabled": True, "budget_hours": 1.0, "max_architectures": 2}


@pytest.fixture(scope="module")
def validated(tiny_study_done, tmp_path_factory):
    """The complete tiny study with the validation loop switched on and run; with the snapshot
    of results/ before, and the dry run that switching it on gave."""
    from test_reruns import (complete_study, copy_study, dry_run, read_config, run_snakemake,
                             snapshot, write_config)

    workdir = copy_study(complete_study(tiny_study_done, tmp_path_factory),
                         tmp_path_factory.mktemp("validated") / "study")
    before = snapshot(workdir)
    config = read_config(workdir)
    config["search"]["validation"] = dict(VALIDATION)
    write_config(workdir, config)
    planned = dry_run(workdir)
    run_snakemake(workdir, "--cores", "2", check=True, timeout=900)
    return workdir, before, planned


@pytest.mark.workflow
def test_switching_the_loop_on_schedules_only_the_checkpoint_and_the_comparison(validated):
    _, _, planned = validated
    assert planned.rules() == {"validation_plan", "validation"}, planned.rules()


@pytest.mark.workflow
def test_validated_shapes_are_trained_measured_and_compared(validated):
    workdir, _, _ = validated
    plan = pd.read_csv(workdir / "results/validation/plan.csv")
    chosen = plan[plan.status == "validate"]
    assert 1 <= len(chosen) <= VALIDATION["max_architectures"]
    assert chosen.estimated_hours.sum() <= VALIDATION["budget_hours"]
    assert set(plan.status) <= {"validate", "trained", "skip"}
    table = pd.read_csv(workdir / "results/validation.csv")
    assert sorted(table.name) == sorted(chosen.name)
    for _, row in table.iterrows():
        run = workdir / "results/validation/runs" / row["name"]
        metrics = json.loads((run / "metrics.json").read_text())
        evaluation = json.loads((run / "eval.json").read_text())
        assert row.observed_loss == pytest.approx(evaluation["val_loss"])  # fit.loss_column
        assert row.tokens == metrics["tokens_seen"] == 16384              # the search's D
        assert np.isfinite(row.observed_loss) and row.measured_tokens_per_s > 0
        config = json.loads((workdir / "results/validation/architectures" / row["name"] /
                             "config.json").read_text())
        assert row["name"] == (f"d{config['hidden_size']}-L{config['num_hidden_layers']}"
                               f"-h{config['num_attention_heads']}-kv"
                               f"{config['num_key_value_heads']}-dh{config['head_dim']}"
                               f"-f{config['intermediate_size']}")
    summary = json.loads((workdir / "results/validation/plan.json").read_text())
    assert summary["validate"] == list(chosen.name)
    assert 0 < summary["coverage"] <= 1


@pytest.mark.workflow
def test_validation_never_feeds_back(validated):
    """Every file the study had is untouched (same bytes, same mtime): runs.csv, the fits and
    the search are not rebuilt from validation results, and nothing is scheduled again."""
    from test_reruns import dry_run, snapshot, snapshot_diff

    workdir, before, _ = validated
    diff = snapshot_diff(before, snapshot(workdir))
    assert diff["removed"] == [] and diff["changed"] == [], diff
    assert all(f.startswith("results/validation") for f in diff["added"]), diff["added"]
    assert dry_run(workdir).nothing_to_do


@pytest.mark.workflow
def test_validation_artifacts_carry_provenance(validated):
    from test_provenance import doc_rows, files_of, provenance_problems, row_of

    workdir, _, _ = validated
    rows = doc_rows()
    files = [str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*")
             if p.is_file() and str(p.relative_to(workdir)).startswith("results/validation")]
    assert len(files) > 10
    missing = [f for f in files if row_of(f, rows) is None]
    assert not missing, f"add these to docs/reruns.md's provenance table: {missing}"
    for glob, where in rows:
        if not glob.startswith("results/validation"):
            continue
        matched = files_of(workdir, glob)
        assert matched, f"the provenance table's row {glob} matches no file"
        for file in matched:
            if where == "inside":
                assert provenance_problems(workdir, file, glob) == [], file
            elif where.startswith("beside "):
                record = file.parent / where.split(" ", 1)[1]
                assert "provenance" in json.loads(record.read_text()), file


def test_a_budget_that_buys_nothing_says_so_and_compares_nothing():
    from archscale.search.frontier_check import COMPARISON_COLUMNS, selection_summary

    pareto = frontier(3)
    plan = choose_checked_shapes(pareto, np.full(3, 2.0), budget_hours=1.0, max_architectures=2,
                              radius=0.5).assign(estimated_wall_hours=1.0)
    summary = selection_summary(plan)
    assert summary["validate"] == [] and "budget_hours" in summary["note"]
    table = comparison_table(plan, {}, "val_loss")
    assert table.empty and list(table.columns) == COMPARISON_COLUMNS


@pytest.mark.workflow
def test_a_new_plan_keeps_the_results_of_shapes_it_chooses_again(validated, tmp_path):
    """The plan reruns when its settings change, but a shape chosen again is not retrained:
    its config.json follows from its name, not from the plan."""
    from test_reruns import copy_study, read_config, run_snakemake, snapshot, write_config

    workdir = copy_study(validated[0], tmp_path / "study")
    before = snapshot(workdir, "results/validation/runs")
    config = read_config(workdir)
    config["search"]["validation"]["budget_hours"] = 0.9   # still buys the same shapes
    write_config(workdir, config)
    proc = run_snakemake(workdir, "--cores", "2", check=True, timeout=900)
    ran = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", proc.stdout + proc.stderr,
                         flags=re.M))
    # the comparison reruns only if plan.csv's bytes changed (Snakemake checks small inputs'
    # checksums); no shape is configured, trained, evaluated or measured again
    assert "validation_plan" in ran and ran - {"all"} <= {"validation_plan", "validation"}, ran
    assert snapshot(workdir, "results/validation/runs") == before
