"""results/proposals.csv (archscale.search.proposals): the runs ranked by how much they would
narrow the x* and r* intervals per device-hour, checked on synthetic studies drawn from a known
law and priced by a known cost model (issue 28, item 1)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from archscale.architecture import (SHAPE_FIELDS, Architecture, ShapeTargets, shape_name,
                                    solve_shape)
from archscale.costs import FittedJobCosts
from archscale.fit import ChinchillaLaw, ConditionalLaw, fit_conditional
from archscale.fit.conditional import law_from_dict
from archscale.fit.io import read_runs
from archscale.search.proposals import (PROPOSAL_COLUMNS, ProposalError, ProposalSettings,
                                        propose_runs, write_proposals)

CHIN = ChinchillaLaw(E=1.5, A=30.0, B=50.0, alpha=0.3, beta=0.3)
# x* = a2/a1 = 0.2, r* = b2/b1 = 1, both factors 1 at the optimum; penalties of a few percent
TRUTH = ConditionalLaw("multiplicative", {"a0": 1.061, "a1": 0.1, "a2": 0.02,
                                          "b0": 0.97, "b1": 0.03, "b2": 0.03}, chinchilla=CHIN)
VOCAB, SEQ_LEN, TOKENS = 256, 64, 1_000_000
COST = FittedJobCosts(fixed_s=10.0, s_per_flop=5e-11, eval_s=2.0, measure_s=0.0,
                      train_devices=1, eval_devices=1, measure_devices=0)
SETTINGS = ProposalSettings(seq_len=SEQ_LEN, r_range=(0.1, 30.0), top=5)
SEED_SD = 0.004


def shape(n: float, x: float, r: float) -> dict[str, int]:
    return solve_shape(ShapeTargets(n_params=n, d_over_sqrt_n=x, r_mlp_attn=r, gqa_group=1,
                                    n_layers=2, head_dim=16, ffn_multiple=8, tolerance=0.08))


def study(points, seeds: int = 2, noisy: tuple[float, float, float] | None = None,
          seed: int = 0) -> pd.DataFrame:
    """runs.csv rows (one per seed) for shapes solved at (N, x, r) targets, losses from TRUTH
    with seed noise SEED_SD; the `noisy` point's seeds lie 10 SD either side of its mean."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, x, r in points:
        s = shape(n, x, r)
        arch = Architecture(name=shape_name(s), **s, vocab_size=VOCAB)
        acc = arch.accounting()
        mean = float(TRUTH.predict_at(acc["d_over_sqrt_n"], acc["r_mlp_attn"],
                                      acc["n_params_non_embedding"], TOKENS))
        flops = arch.training_flops_per_token(SEQ_LEN) * TOKENS
        for k in range(seeds):
            error = (10 * SEED_SD * (-1) ** k if noisy == (n, x, r)
                     else rng.normal(0, SEED_SD))
            rows.append({"name": arch.name, **s, "vocab_size": VOCAB,
                         "n_params_non_embedding": acc["n_params_non_embedding"],
                         "d_over_sqrt_n": acc["d_over_sqrt_n"], "r_mlp_attn": acc["r_mlp_attn"],
                         "tokens": TOKENS, "seed": k, "val_loss": mean + error,
                         "wall_s": COST.train_seconds(flops)})
    return pd.DataFrame(rows)


def fitted(runs: pd.DataFrame) -> tuple[ConditionalLaw, dict]:
    """The law fitted as the workflow fits it (true L_opt, a bootstrap), read back from JSON."""
    fit = fit_conditional(read_runs(runs, require=("N", "D", "loss", "x", "r")),
                          l_opt="chinchilla", chinchilla=CHIN, bootstrap=40, seed=0)
    doc = json.loads(json.dumps(fit.to_dict()))
    return law_from_dict(doc), doc


def grid(sizes, xs, rs):
    return [(n, x, r) for n in sizes for x in xs for r in rs]


def propose(runs, settings=SETTINGS, **kw) -> pd.DataFrame:
    law, doc = fitted(runs)
    return propose_runs(runs, law, doc["seed_noise"], COST, settings, **kw)


def test_the_untrained_side_of_the_optimum_is_proposed_first():
    """Every trained x is at or above x* = 0.2: the best runs to add lie below it."""
    points = grid((20000, 40000), (0.2, 0.3, 0.45, 0.7), (0.3, 0.6, 1.0, 2.0, 4.0))
    runs = study(points)
    table = propose(runs)
    assert list(table.columns) == PROPOSAL_COLUMNS
    top = table[table["batch"]]
    assert len(top) == 5
    assert (top["d_over_sqrt_n"] < 0.19).all(), top[["name", "d_over_sqrt_n", "why"]]
    assert top["why"].str.contains("x below every trained x").any()
    # every batch row narrows the x* interval, and the batch's widths only shrink
    widths = top["x_interval_width_after"].to_numpy()
    assert (widths < top["x_interval_width_now"].to_numpy()).all()
    assert (np.diff(widths) <= 1e-12).all()
    assert (table["cost_device_hours"] > 0).all()
    assert table["rank"].tolist() == list(range(1, len(table) + 1))


def test_a_fixed_design_space_holds_whatever_the_law_was_fitted_on():
    """The loop's refits widen the law's fitted span each time it trains the grid's edge; with
    the configured span fixed (proposals_params), new shapes stay within it, widened once."""
    import dataclasses

    points = grid((20000, 40000), (0.2, 0.3, 0.45, 0.7), (0.3, 0.6, 1.0, 2.0, 4.0))
    runs = study(points)
    law, doc = fitted(runs)
    walked = dataclasses.replace(law, x_fitted=(0.02, 0.7))   # a span some loop walked out to
    free = propose_runs(runs, walked, doc["seed_noise"], COST, SETTINGS)
    fixed = dataclasses.replace(SETTINGS, x_span=(0.2, 0.7), r_span=(0.3, 4.0))
    held = propose_runs(runs, walked, doc["seed_noise"], COST, fixed)
    new = held[held["kind"] != "new_seed"]
    assert len(new) and new["d_over_sqrt_n"].min() >= 0.2 / 1.5
    assert new["d_over_sqrt_n"].max() <= 0.7 * 1.5
    assert new["r_mlp_attn"].between(0.3 / 1.5, 4.0 * 1.5).all()
    # without it, the walked span reaches shapes a fixed space refuses
    assert free["d_over_sqrt_n"].min() < 0.2 / 1.5


def test_verdict_points_keep_every_proposal_where_a_margin_is_computed():
    """With proposals.candidates: verdict_points, every proposal lies at a (size, token
    budget) with 3 or more trained shapes: not at the ladder's other budget, not at a new
    size, which "anywhere" does propose. A study with no such point is refused, saying how."""
    import dataclasses

    points = grid((20000, 40000), (0.1, 0.2, 0.4), (0.5, 1.0, 2.0))
    runs = study(points)
    ladder = runs[runs["name"] == runs["name"].iloc[4]].assign(tokens=TOKENS // 4)
    ladder["val_loss"] += 0.3  # fewer tokens, higher loss; the fit reads it only through L_opt
    runs = pd.concat([runs, ladder], ignore_index=True)
    law, doc = fitted(runs)
    anywhere = propose_runs(runs, law, doc["seed_noise"], COST, SETTINGS)
    assert (anywhere["tokens"] == TOKENS // 4).any() and (anywhere["kind"] == "new_size").any()
    verdict = dataclasses.replace(SETTINGS, candidates="verdict_points")
    table = propose_runs(runs, law, doc["seed_noise"], COST, verdict)
    assert len(table) and (table["tokens"] == TOKENS).all()
    assert (table["kind"] != "new_size").all()
    sizes = np.array([20000.0, 40000.0])
    nearest = np.abs(np.log(table["n_params_non_embedding"].to_numpy()[:, None] / sizes)).min(1)
    assert (nearest <= np.log(1.25)).all()
    assert set(table["kind"]) == {"new_seed", "new_shape"}

    # two shapes at each of four sizes: enough points for the law, none for a margin
    two = study([(10000, 0.1, 1.0), (10000, 0.4, 2.0), (20000, 0.2, 0.5), (20000, 0.1, 2.0),
                 (40000, 0.4, 1.0), (40000, 0.2, 2.0), (80000, 0.1, 0.5), (80000, 0.4, 0.5)])
    law2, doc2 = fitted(two)
    with pytest.raises(ProposalError, match="verdict_points.*anywhere"):
        propose_runs(two, law2, doc2["seed_noise"], COST, verdict)
    with pytest.raises(ProposalError, match="must be one of"):
        dataclasses.replace(SETTINGS, candidates="everywhere")


def test_a_shape_whose_seeds_disagree_gets_more_seeds():
    """The one shape below x* = 0.2 carries the low side of the x U; when its two seeds
    disagree, its mean is poorly known, and another seed of it is the best seed to add and
    among the best runs of any kind. Where its seeds agree, it is not."""
    points = ([(20000, x, 1.0) for x in (0.1, 0.2, 0.4)] + [(40000, x, 1.0) for x in (0.2, 0.4)]
              + [(n, 0.2, r) for n in (20000, 40000) for r in (0.4, 2.5)])
    noisy = (20000, 0.1, 1.0)
    name = shape_name(shape(*noisy))
    seeds_only = ProposalSettings(seq_len=SEQ_LEN, r_range=(0.1, 30.0), top=3,
                                  kinds=("new_seed",))
    for runs, leads in ((study(points, noisy=noisy), True), (study(points), False)):
        law, doc = fitted(runs)
        seeds = propose_runs(runs, law, doc["seed_noise"], COST, seeds_only)
        assert (seeds["name"].iloc[0] == name) is leads, seeds[["name", "why"]].head(3)
        top = propose_runs(runs, law, doc["seed_noise"], COST, SETTINGS).head(3)
        added = top[(top["kind"] == "new_seed") & (top["name"] == name)]
        assert (len(added) > 0) is leads, top[["kind", "name", "why"]]
        if leads:
            assert added["seed"].iloc[0] == 2  # seeds 0 and 1 were trained
            assert "its seeds disagree" in added["why"].iloc[0]


def test_of_two_equally_informative_runs_the_cheaper_ranks_first():
    """Same N, x and r (so the same row of the design) but more query heads: more attention
    FLOPs, so a higher cost for the same information."""
    runs = study(grid((20000, 40000), (0.1, 0.2, 0.4), (0.4, 1.0, 2.5)))
    cheap = {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "head_dim": 16,
             "ffn_dim": 168}
    dear = {**cheap, "n_heads": 3, "n_kv_heads": 1}
    candidates = pd.DataFrame([{**dear, "tokens": TOKENS, "name": "dear"},
                               {**cheap, "tokens": TOKENS, "name": "cheap"}])
    settings = ProposalSettings(seq_len=SEQ_LEN, r_range=(0.1, 30.0), top=0)
    table = propose(runs, settings, candidates=candidates)
    assert table["name"].tolist() == ["cheap", "dear"]
    assert table["effect"].iloc[0] == pytest.approx(table["effect"].iloc[1], rel=1e-9)
    assert table["cost_device_hours"].iloc[0] < table["cost_device_hours"].iloc[1]


def test_a_law_without_a_bootstrap_or_too_few_runs_is_refused_with_the_reason(tmp_path):
    runs = study(grid((20000,), (0.1, 0.2, 0.4), (0.4, 1.0, 2.5)))
    law, doc = fitted(runs)
    law.refits = None
    with pytest.raises(ProposalError, match="no bootstrap"):
        propose_runs(runs, law, doc["seed_noise"], COST, SETTINGS)
    law, doc = fitted(runs)
    few = runs[runs["name"].isin(runs["name"].unique()[:5])]
    with pytest.raises(ProposalError, match="only 5 fitted"):
        propose_runs(few, law, doc["seed_noise"], COST, SETTINGS)
    # the rule's function writes one row saying why, never a traceback
    doc["confidence_intervals"] = None
    (tmp_path / "conditional.json").write_text(json.dumps(doc))
    runs.to_csv(tmp_path / "runs.csv", index=False)
    table, lines = write_proposals(tmp_path / "runs.csv", tmp_path / "conditional.json", [],
                                   {"seq_len": SEQ_LEN}, tmp_path / "proposals.csv")
    written = pd.read_csv(tmp_path / "proposals.csv")
    assert written["kind"].tolist() == ["none"] and "no bootstrap" in written["why"].iloc[0]
    assert lines[-1].startswith("no proposals: ")


def test_the_rule_function_writes_the_ranked_file(tmp_path):
    runs = study(grid((20000, 40000), (0.1, 0.2, 0.4), (0.4, 1.0, 2.5)))
    _, doc = fitted(runs)
    (tmp_path / "conditional.json").write_text(json.dumps(doc))
    runs.to_csv(tmp_path / "runs.csv", index=False)
    evals = [{"provenance": {"started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:00:04"}}]
    table, lines = write_proposals(tmp_path / "runs.csv", tmp_path / "conditional.json", evals,
                                   {"seq_len": SEQ_LEN, "ffn_multiple": 8,
                                    "fit": {"r_range": [0.1, 30.0]}},
                                   tmp_path / "proposals.csv")
    written = pd.read_csv(tmp_path / "proposals.csv")
    assert list(written.columns) == PROPOSAL_COLUMNS and len(written) > 50
    assert set(written["kind"]) >= {"new_seed", "new_shape", "new_size"}
    assert written["effect_per_device_hour"].iloc[:20].notna().all()
    assert lines and lines[0].startswith("#1 ")
    # the grid's shapes are real integer shapes with their own accounting
    for _, row in written[written["kind"] != "new_seed"].head(20).iterrows():
        arch = Architecture(name="c", **{f: int(row[f]) for f in SHAPE_FIELDS}, vocab_size=VOCAB)
        assert arch.n_params_non_embedding == row["n_params_non_embedding"]


@pytest.mark.workflow
def test_rule_all_makes_the_proposals(tiny_workdir):
    """A dry run of the tiny study: rule all asks for results/proposals.csv, after the fit."""
    from conftest import run_snakemake

    proc = run_snakemake(tiny_workdir, "-n", "--cores", "1", "all", check=True)
    assert "rule proposals:" in proc.stdout
    assert "output: results/proposals.csv" in proc.stdout
