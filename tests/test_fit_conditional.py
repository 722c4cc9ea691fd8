"""Stage 2: the architecture-conditional law (both forms), its optimum, its JSON, its CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from archscale.cli.fit import main as fit_cli
from archscale.fit import (ChinchillaLaw, ConditionalLaw, FitError, fit_chinchilla, fit_conditional,
                           load_conditional, paper_law, predict_loss)

TRUE_CHIN = ChinchillaLaw(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37)
# Additive coefficients with the optimum at x* = 0.08, r* = 1.25 and curvature like the paper's.
ADDITIVE_TRUTH = {"a0": 0.13, "a1": 0.10, "a2": 0.008, "b1": 0.04, "b2": 0.05}


def r_factor(law: ConditionalLaw, r):
    """The multiplicative law's r factor b0 + b1 ln r + b2/r."""
    return law.law_form.r_term(law.coefs, r)


def synthetic_runs(form: str, noise: float = 0.002, seed: int = 0, sizes=(1e8, 2e8, 4e8, 8e8),
                   tokens=(2e9, 8e9, 3.2e10), xs=(0.04, 0.06, 0.08, 0.11, 0.15),
                   rs=(0.6, 1.0, 2.0, 4.0)) -> tuple[pd.DataFrame, ConditionalLaw]:
    """Runs drawn from a known law: N jittered by 3% like solved shapes, loss noise sd `noise`."""
    rng = np.random.default_rng(seed)
    if form == "multiplicative":
        truth = paper_law(l_opt=TRUE_CHIN, normalise=True)
    else:
        truth = ConditionalLaw("additive", ADDITIVE_TRUTH, chinchilla=TRUE_CHIN)
    rows = [(n * rng.uniform(0.97, 1.03), d, x, r)
            for n in sizes for d in tokens for x in xs for r in rs]
    runs = pd.DataFrame(rows, columns=["N", "D", "x", "r"])
    runs["loss"] = truth.predict_at(runs["x"], runs["r"], runs["N"], runs["D"]) + rng.normal(
        0, noise, len(runs))
    return runs, truth


# --- the paper's coefficients -------------------------------------------------------------------

def test_paper_optimum():
    law = paper_law()
    assert round(law.x_star, 3) == 0.080
    assert round(law.r_star, 2) == 1.03
    assert law.coefficients() == pytest.approx(
        {"a0": 2.697, "a1": 0.0974, "a2": 0.0078, "b0": 0.3870, "b1": 0.0063, "b2": 0.0065})
    assert law.r_fitted == (0.5, 5.0) and law.x_fitted is None  # the paper's fitting range


def test_normalising_the_paper_law_changes_no_prediction():
    raw, norm = paper_law(), paper_law(normalise=True)
    x, r = np.geomspace(0.03, 0.3, 7), np.geomspace(0.5, 5, 7)
    assert np.allclose(raw.predict(x, r, 2.5), norm.predict(x, r, 2.5), rtol=1e-12)
    assert float(r_factor(norm, norm.r_star)) == pytest.approx(1.0, abs=1e-12)
    assert norm.x_star == pytest.approx(raw.x_star) and norm.r_star == pytest.approx(raw.r_star)


def test_paper_law_gives_l_opt_from_epochs_chinchilla_fit():
    law = paper_law()
    assert float(law.l_opt(1e9, 2e10)) == pytest.approx(
        1.8172 + 482.01 / 1e9 ** 0.3478 + 2085.43 / 2e10 ** 0.3658)


# --- synthetic recovery (both forms, both stages) -----------------------------------------------

@pytest.mark.parametrize("form", ["multiplicative", "additive"])
def test_recovers_the_optimum_with_the_true_l_opt(form):
    runs, truth = synthetic_runs(form)
    fit = fit_conditional(runs, form=form, l_opt="chinchilla", chinchilla=TRUE_CHIN)
    assert fit.law.x_star == pytest.approx(truth.x_star, rel=0.05)
    assert fit.law.r_star == pytest.approx(truth.r_star, rel=0.05)
    assert fit.fit_info["rmse"] == pytest.approx(0.002, rel=0.25)
    # one seed per shape: the only warning says the seed noise is unmeasured
    assert [w[:30] for w in fit.warnings] == ["seed noise is unmeasured: no s"]
    assert fit.seed_noise["pooled_sd"] is None
    if form == "multiplicative":
        assert float(r_factor(fit.law, fit.law.r_star)) == pytest.approx(1.0, abs=1e-12)
        for k, v in truth.coefficients().items():
            assert fit.law.coefficients()[k] == pytest.approx(v, rel=0.15, abs=2e-3), k


@pytest.mark.parametrize("form", ["multiplicative", "additive"])
@pytest.mark.parametrize("l_opt", ["chinchilla", "empirical"])
def test_recovers_the_optimum_through_both_stages(form, l_opt):
    """Stage 1 (Chinchilla fit or best variant) feeds stage 2, as in the workflow."""
    runs, truth = synthetic_runs(form, seed=1)
    chin = fit_chinchilla(runs["N"], runs["D"], runs["loss"], n_starts=20).law
    fit = fit_conditional(runs, form=form, l_opt=l_opt, chinchilla=chin)
    assert fit.law.x_star == pytest.approx(truth.x_star, rel=0.05)
    assert fit.law.r_star == pytest.approx(truth.r_star, rel=0.05)


def test_bootstrap_intervals_cover_the_truth():
    runs, truth = synthetic_runs("multiplicative", seed=2)
    fit = fit_conditional(runs, l_opt="chinchilla", chinchilla=TRUE_CHIN, bootstrap=30, seed=1)
    ci = fit.intervals
    assert ci["n_converged"] == 30
    assert ci["optimum"]["x_star"]["low"] < truth.x_star < ci["optimum"]["x_star"]["high"]
    assert ci["optimum"]["r_star"]["low"] < truth.r_star < ci["optimum"]["r_star"]["high"]
    again = fit_conditional(runs, l_opt="chinchilla", chinchilla=TRUE_CHIN, bootstrap=30, seed=1)
    assert again.intervals == ci


def test_the_refits_travel_with_the_law_and_bound_a_loss_change():
    """issue 29: conditional.json keeps the bootstrap's refits, so the search can give each
    pick's predicted loss change an interval; the true change lies inside it."""
    from archscale.fit.conditional import law_from_dict
    from archscale.search.study import loss_change_intervals

    runs, truth = synthetic_runs("multiplicative", seed=2)
    fit = fit_conditional(runs, l_opt="chinchilla", chinchilla=TRUE_CHIN, bootstrap=30, seed=1)
    doc = json.loads(json.dumps(fit.to_dict()))
    assert len(doc["confidence_intervals"]["refits"]["coefficients"]) == 30
    law = law_from_dict(doc)
    assert law.refits.shape == (30, 6)
    shape = lambda x, r: {"d_over_sqrt_n": x, "r_mlp_attn": r,  # noqa: E731
                          "n_params_non_embedding": 2e8}
    base, pick = shape(0.15, 4.0), shape(0.08, 1.0)
    for s in (base, pick):
        s["predicted_loss"] = float(law.predict_at(s["d_over_sqrt_n"], s["r_mlp_attn"], 2e8, 8e9))
    rec = {"baseline": base, "fastest_at_baseline_loss": pick}
    change = loss_change_intervals(rec, law, 8e9)["fastest_at_baseline_loss"]
    true_change = float(truth.predict_at(0.08, 1.0, 2e8, 8e9) - truth.predict_at(0.15, 4.0, 2e8,
                                                                                   8e9))
    assert change["low"] < change["predicted"] < change["high"]
    assert change["low"] < true_change < change["high"] < 0
    assert (change["level"], change["n_refits"]) == (0.95, 30)
    del doc["confidence_intervals"]["refits"]  # a file written before the refits were kept
    old = loss_change_intervals(rec, law_from_dict(doc), 8e9)["fastest_at_baseline_loss"]
    assert old == {"predicted": change["predicted"]}
    doc["confidence_intervals"]["refits"] = {"coefficient_names": ["a0"], "coefficients": [[1]]}
    with pytest.raises(ValueError, match="refits names"):
        law_from_dict(doc)


# --- diagnostics and errors ---------------------------------------------------------------------

def test_one_sided_u_curve_warns_that_the_optimum_is_extrapolated():
    runs, _ = synthetic_runs("multiplicative", xs=(0.09, 0.11, 0.13, 0.16, 0.2))
    fit = fit_conditional(runs, l_opt="chinchilla", chinchilla=TRUE_CHIN)
    assert fit.optimum["x_extrapolated"] and not fit.optimum["r_extrapolated"]
    assert any("x*" in w and "extrapolated" in w for w in fit.warnings)
    assert fit.to_dict()["warnings"] == fit.warnings


def test_too_few_points_is_a_clear_error():
    runs, _ = synthetic_runs("multiplicative", sizes=(1e8,), tokens=(2e9,), xs=(0.05, 0.1),
                             rs=(0.7, 1.5, 3.0))
    with pytest.raises(FitError, match=r"only 2 distinct value\(s\) of x"):
        fit_conditional(runs, l_opt="chinchilla", chinchilla=TRUE_CHIN)
    with pytest.raises(FitError, match=r"5 free coefficients but only 4 run\(s\)"):
        fit_conditional(runs, l_opt="chinchilla", chinchilla=TRUE_CHIN, r_range=(1.0, 5.0))


def test_r_range_excludes_runs_from_the_fit():
    runs, _ = synthetic_runs("multiplicative", rs=(0.3, 0.6, 1.0, 2.0, 4.0, 8.0))
    fit = fit_conditional(runs, l_opt="chinchilla", chinchilla=TRUE_CHIN)
    used = fit.table["used"].to_numpy()
    assert used.sum() == len(runs) * 4 // 6
    assert set(fit.table.loc[~used, "r"]) == {0.3, 8.0}
    assert fit.fit_info["n_excluded"] == len(runs) // 3


def test_chinchilla_source_needs_a_chinchilla_law():
    runs, _ = synthetic_runs("multiplicative")
    with pytest.raises(FitError, match="needs a fitted Chinchilla law"):
        fit_conditional(runs, l_opt="chinchilla")
    with pytest.raises(ValueError, match=r"unknown law form 'cubic'; registered forms"):
        fit_conditional(runs, form="cubic", l_opt="chinchilla", chinchilla=TRUE_CHIN)


# --- prediction for the search stage ------------------------------------------------------------

def test_predict_loss_is_vectorised():
    # 2M candidates in one call (its speed: benchmarks/bench_search.py's scoring figure)
    law = paper_law()
    rng = np.random.default_rng(0)
    x, r = rng.uniform(0.03, 0.3, 2_000_000), rng.uniform(0.5, 5, 2_000_000)
    l_opt = rng.uniform(2, 4, 2_000_000)
    out = predict_loss(law, x, r, l_opt)
    manual = ((2.697 + 0.0974 * np.log(x) + 0.0078 / x)
              * (0.3870 + 0.0063 * np.log(r) + 0.0065 / r) * l_opt)
    assert np.allclose(out, manual, rtol=1e-12)
    assert np.allclose(predict_loss(law.coefficients(), x[:10], r[:10], l_opt[:10]), out[:10])
    add = predict_loss({"a0": 0.1, "a1": 0.1, "a2": 0.01, "b1": 0.05, "b2": 0.05}, 0.1, 1.0, 3.0,
                       form="additive")
    assert float(add) == pytest.approx(0.1 + 0.1 * np.log(0.1) + 0.1 + 0.05 + 3.0)


@pytest.mark.parametrize("l_opt", ["chinchilla", "empirical"])
def test_conditional_json_round_trip(tmp_path, l_opt):
    runs, _ = synthetic_runs("multiplicative")
    runs["name"] = [f"run{i}" for i in range(len(runs))]
    chin = fit_chinchilla(runs["N"], runs["D"], runs["loss"], n_starts=10).law
    fit = fit_conditional(runs, l_opt=l_opt, chinchilla=chin)
    doc = fit.to_dict({"study": "t"})
    path = tmp_path / "conditional.json"
    path.write_text(json.dumps(doc))
    law = load_conditional(path)
    assert law.coefficients() == pytest.approx(fit.law.coefficients())
    assert doc["data"]["columns"][0] == "name" and doc["data"]["rows"][0][0] == "run0"
    assert len(doc["data"]["rows"]) == len(runs)
    assert doc["optimum"]["x_star"] == pytest.approx(law.x_star)
    assert doc["l_opt"]["source"] == l_opt and doc["provenance"]["study"] == "t"
    n, d = np.array([1.5e8, 3e8]), np.array([4e9, 1e10])
    assert np.allclose(law.l_opt(n, d), fit.law.l_opt(n, d))
    assert np.allclose(law.predict_at(0.08, 1.0, n, d), fit.law.predict_at(0.08, 1.0, n, d))
    if l_opt == "empirical":
        pts = np.array(doc["l_opt"]["empirical"]["points"])
        assert np.allclose(law.l_opt(pts[:, 0], pts[:, 1]), pts[:, 2])
        assert np.isfinite(law.l_opt(5e9, 1e11))  # outside: anchored Chinchilla shape


def test_load_conditional_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="archscale fit conditional"):
        load_conditional(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"law": "chinchilla"}))
    with pytest.raises(ValueError, match="not a conditional.json"):
        load_conditional(bad)


# --- CLI, plots -----------------------------------------------------------------------------

def test_cli_fits_runs_csv_columns_and_writes_plots(tmp_path, capsys):
    runs, truth = synthetic_runs("multiplicative", tokens=(2e9,))
    table = pd.DataFrame({"name": [f"a{i}" for i in range(len(runs))],
                          "n_params_non_embedding": runs["N"], "tokens": runs["D"],
                          "val_loss": runs["loss"], "d_model": runs["x"] * np.sqrt(runs["N"]),
                          "d_over_sqrt_n": runs["x"], "r_mlp_attn": runs["r"]})
    path = tmp_path / "runs.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "fits" / "conditional.json"
    code = fit_cli(["fit", "conditional", "--runs", str(path), "--out", str(out),
                    "--bootstrap", "5", "--plot-u-curves", str(tmp_path / "u.png"),
                    "--plot-predicted", str(tmp_path / "p.png")])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and printed.startswith(f"wrote {out}: x* ")  # one line
    stored = json.loads(out.read_text())
    assert stored["optimum"]["x_star"] == pytest.approx(truth.x_star, rel=0.05)
    assert f"x* {stored['optimum']['x_star']:.4g}" in printed
    assert stored["l_opt"]["source"] == "empirical" and stored["l_opt"]["chinchilla"]
    for png in ("u.png", "p.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_cli_names_a_missing_column(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"N": [1e5] * 6, "D": [1e6] * 6, "loss": [3.0] * 6, "r": [1.0] * 6}).to_csv(
        path, index=False)
    with pytest.raises(ValueError, match="x: 'd_over_sqrt_n' or 'x'"):
        fit_cli(["fit", "conditional", "--runs", str(path), "--out", str(tmp_path / "o.json")])


def test_r_range_defaults_to_the_schemas_in_every_fit():
    import inspect

    from archscale.schema import section_defaults
    from archscale.fit.defaults import DEFAULT_R_RANGE
    from archscale.fit.quality import progressive_extrapolation

    assert DEFAULT_R_RANGE == tuple(section_defaults("fit")["r_range"])
    for func in (fit_conditional, progressive_extrapolation):
        assert inspect.signature(func).parameters["r_range"].default == DEFAULT_R_RANGE
    runs, _ = synthetic_runs("multiplicative", rs=(0.3, 0.6, 1.0, 2.0, 4.0, 8.0))
    fit = fit_conditional(runs, l_opt="chinchilla", chinchilla=TRUE_CHIN)
    assert fit.fit_info["r_range"] == list(DEFAULT_R_RANGE)


def test_values_within_one_percent_count_as_one():
    from archscale.fit.values import absent_from, distinct_count

    assert distinct_count([0.1, 0.1005, 0.2, 0.4]) == 3
    assert distinct_count([]) == 0
    assert absent_from([2e9, 2.01e9, 8e9], [2e9]).tolist() == pytest.approx([8e9])
    # the fit's own check uses the same rule: x values 0.5 % apart are one value
    runs, _ = synthetic_runs("multiplicative", sizes=(1e8,), tokens=(2e9, 8e9),
                             xs=(0.05, 0.0502, 0.1), rs=(0.7, 1.5, 3.0))
    with pytest.raises(FitError, match=r"only 2 distinct value\(s\) of x"):
        fit_conditional(runs, l_opt="chinchilla", chinchilla=TRUE_CHIN)
