"""The `archscale` command line, including the issue's paper-coefficient search check."""
import io
import json
from contextlib import redirect_stdout

import numpy as np
import pandas as pd
import pytest

from archscale.cli.main import main
from conftest import REPO


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def test_arch_describe_llama_1b():
    doc = json.loads(run_cli("arch", "describe", "--d-model", "2048", "--n-layers", "16",
                             "--n-heads", "32", "--n-kv-heads", "8", "--head-dim", "64",
                             "--ffn-dim", "8192", "--vocab-size", "128256", "--tied"))
    assert doc["n_params_non_embedding"] == 973_078_528
    assert doc["r_mlp_attn"] == pytest.approx(4.8) and doc["gqa_group"] == 4


def test_arch_describe_missing_flags_is_an_error():
    with pytest.raises(SystemExit, match="--config PATH"):
        main(["arch", "describe", "--d-model", "64"])


def test_plan_totals(tmp_path):
    out = tmp_path / "plan.csv"
    run_cli("plan", "--configfile", str(REPO / "configs/paper-1b.yaml"), "--gpu", "H200",
            "--out", str(out))
    table = pd.read_csv(out)
    total = table[table.architecture == "TOTAL"].iloc[0]
    # with --out, stdout is one line naming the file and the totals, not the table
    summary = run_cli("plan", "--configfile", str(REPO / "configs/paper-1b.yaml"), "--gpu",
                      "H200", "--out", str(out))
    first, loop = summary.splitlines()
    assert first == (f"wrote {out}: {len(table) - 1} architectures, {int(total.runs)} runs, "
                     f"{total.gpu_hours:,.0f} H200 GPU-hours at MFU 0.35")
    # the paper config runs the closed loop after its grid: what a round may cost
    assert loop.startswith("closed loop: up to 4 round(s) of up to 8 runs, at most 320 "
                           "device-hours in all; one round about ")
    assert run_cli("plan", "--configfile", str(REPO / "configs/paper-1b.yaml")).startswith(
        "architecture,gpu,")
    assert total.runs == table[table.architecture != "TOTAL"].runs.sum() > 0
    assert total.gpu_hours > 0 and total.checkpoint_disk_gb > 0


def test_search_with_paper_coefficients_on_h200(tmp_path):
    """Issue 6: most accurate near x 0.08, r 1; fastest beats LLaMA-3.2-1B at its loss."""
    text = run_cli("search", "--coefficients", "paper", "--configfile",
                   str(REPO / "configs/paper-1b.yaml"), "--gpu", "H200", "--engine", "sglang",
                   "--budget", "973e6", "--tokens", "20e9", "--out-dir", str(tmp_path))
    assert text.count("\n") == 1 and text.startswith(f"wrote {tmp_path}/: candidates.csv")
    rec = json.loads((tmp_path / "recommendations.json").read_text())["recommendations"][0]
    assert f"{rec['speedup_vs_baseline']:.2f}x" in text
    best, fast, base = (rec["most_accurate"], rec["fastest_at_baseline_loss_after_gqa_search"],
                        rec["baseline"])
    assert base["name"] == "d2048-L16-h32-kv8-dh64-f8192"  # LLaMA-3.2-1B, named in the config
    assert best["d_over_sqrt_n"] == pytest.approx(0.08, abs=0.008)
    assert best["r_mlp_attn"] == pytest.approx(1.0, abs=0.25)
    assert fast["predicted_loss"] <= base["predicted_loss"]
    assert fast["predicted_tokens_per_s"] > base["predicted_tokens_per_s"]
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    assert pareto.predicted_loss.is_monotonic_increasing
    assert pareto.predicted_tokens_per_s.is_monotonic_increasing  # no dominated row
    # the traced frontier equals the plain non-dominated filter of the feasible candidates
    from archscale.search.frontier import pareto_mask
    cand = pd.read_csv(tmp_path / "candidates.csv")
    cand = cand[cand.fits_memory & (cand.predicted_tokens_per_s > 0)]
    mask = pareto_mask(cand.predicted_loss.to_numpy(), cand.predicted_tokens_per_s.to_numpy())
    expected = set(zip(cand.predicted_loss[mask].round(12), cand.predicted_tokens_per_s[mask].round(6)))
    got = set(zip(pareto.predicted_loss.round(12), pareto.predicted_tokens_per_s.round(6)))
    assert got == expected
    # the published law stores no fitted spans: nothing is flagged, nothing is claimed inside
    assert set(cand.law_range) == {"unknown"}
    # issue 17: Eq. 4 at the baseline's GQA; any other group in a pick is flagged untested
    assert rec["baseline_gqa_group"] == 4 and rec["fastest_at_baseline_loss"]["gqa_group"] == 4
    assert set(cand.gqa_status[cand.gqa_group == 4]) == {"baseline group"}
    assert set(cand.gqa_status[cand.gqa_group != 4]) == {"untested"}
    picks = [k for k in ("baseline", "most_accurate", "fastest_at_baseline_loss",
                         "fastest_at_baseline_loss_after_gqa_search")]
    untested = [k for k in picks if rec[k]["gqa_group"] != 4]
    assert all(rec[k]["gqa_status"] == "untested" for k in untested)
    assert len(rec["warnings"]) == len(untested)
    assert all("untested" in w for w in rec["warnings"])


def test_search_flags_candidates_outside_the_fitted_spans(tmp_path):
    """Issue 12: a column says which candidates extrapolate the law; a pick outside the spans
    is recommended only with a warning."""
    from archscale.fit.chinchilla import EPOCH_PUBLISHED
    from archscale.fit.conditional import PAPER_COEFFICIENTS

    law = tmp_path / "conditional.json"
    law.write_text(json.dumps({
        "law": "conditional", "form": "multiplicative", "coefficients": PAPER_COEFFICIENTS,
        "l_opt": {"source": "chinchilla", "chinchilla": EPOCH_PUBLISHED.as_dict()},
        "optimum": {"x_fitted": [0.05, 0.07], "r_fitted": [0.5, 5.0]}}))
    run_cli("search", "--coefficients", str(law), "--configfile",
            str(REPO / "configs/paper-1b.yaml"), "--gpu", "H200", "--engine", "sglang",
            "--budget", "973e6", "--tokens", "20e9", "--out-dir", str(tmp_path))
    cand = pd.read_csv(tmp_path / "candidates.csv")
    outside_x = (cand.d_over_sqrt_n < 0.05) | (cand.d_over_sqrt_n > 0.07)
    assert (cand.law_range[outside_x].str.contains("outside x")).all()
    assert (cand.law_range[~outside_x] == "inside").all()
    rec = json.loads((tmp_path / "recommendations.json").read_text())["recommendations"][0]
    best = rec["most_accurate"]  # the law's x* 0.08 lies beyond the spans' 0.07
    assert best["d_over_sqrt_n"] > 0.07 and best["law_range"] == "outside x"
    assert any(w.startswith(f"most_accurate {best['name']}") for w in rec["warnings"])
    flagged = [k for k in ("baseline", "most_accurate", "fastest_at_baseline_loss",
                           "fastest_at_baseline_loss_after_gqa_search")
               if rec[k]["law_range"] != "inside"]
    assert len(rec["warnings"]) == len(flagged)


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["search", "--help"],
                                  ["throughput", "--help"]])
def test_help_and_version_import_no_heavy_package(argv):
    """Start-up: --help and --version load none of pandas, scipy, torch or matplotlib (the
    figure is benchmarks/bench_cli_startup.py's, in the README)."""
    import subprocess
    import sys

    code = ("import sys\nfrom archscale.cli.main import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('pandas', 'scipy', 'torch', 'matplotlib') "
            "if m in sys.modules)\nprint('HEAVY', heavy, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert "HEAVY []" in proc.stderr, proc.stderr
    assert "archscale" in proc.stdout


def test_fit_chinchilla_prints_one_line_with_out(tmp_path):
    runs = tmp_path / "runs.csv"
    n, d = np.meshgrid([1e7, 3e7, 1e8], [2e8, 6e8, 2e9])
    loss = 1.8 + 400 / n.ravel() ** 0.34 + 2000 / d.ravel() ** 0.36
    pd.DataFrame({"N": n.ravel(), "D": d.ravel(), "loss": loss}).to_csv(runs, index=False)
    out = tmp_path / "chinchilla.json"
    text = run_cli("fit", "chinchilla", "--runs", str(runs), "--out", str(out),
                   "--bootstrap", "0")
    doc = json.loads(out.read_text())
    assert text.count("\n") == 1
    assert text.startswith(f"wrote {out}: E {doc['coefficients']['E']:.4g}, ")
    assert "(9 points, all_runs)" in text


def test_search_spans_the_r_range_the_law_was_fitted_on(tmp_path):
    """Issue 25: without --configfile the candidates' r range is the law's fitted span
    (docs/laptop-science: r 0.19-25), not a literal default."""
    law = json.loads((REPO / "docs/laptop-science/conditional.json").read_text())
    r_low, r_high = law["optimum"]["r_fitted"]
    run_cli("search", "--coefficients", str(REPO / "docs/laptop-science/conditional.json"),
            "--gpu", "cpu", "--engine", "torch", "--budget", "64000", "--n-layers", "2",
            "--head-dim", "8", "--vocab-size", "512", "--tokens", "1.28e6", "--d-model-step", "1",
            "--out-dir", str(tmp_path))
    r = pd.read_csv(tmp_path / "candidates.csv").r_mlp_attn
    assert r.min() >= r_low and r.max() <= r_high
    # the integer grid reaches close to both ends (the old literal range stopped at 0.5 and 5)
    assert r.min() < 0.3 and r.max() > 18
    doc = json.loads((tmp_path / "recommendations.json").read_text())
    assert doc["law"]["r_fitted"] == [r_low, r_high]


def test_search_with_the_paper_law_uses_the_papers_fitting_range(tmp_path):
    from archscale.fit.conditional import PAPER_R_RANGE

    run_cli("search", "--coefficients", "paper", "--gpu", "H200", "--engine", "vllm",
            "--budget", "973e6", "--n-layers", "16", "--head-dim", "64", "--tokens", "20e9",
            "--out-dir", str(tmp_path))
    r = pd.read_csv(tmp_path / "candidates.csv").r_mlp_attn
    assert PAPER_R_RANGE[0] <= r.min() < 0.6 and 4.5 < r.max() <= PAPER_R_RANGE[1]


def _keys(doc, depth: int = 2) -> set[str]:
    """The keys of a JSON document down to `depth` levels, as dotted paths."""
    out = set()
    for key, value in doc.items():
        out.add(key)
        if depth > 1 and isinstance(value, dict):
            out |= {f"{key}.{sub}" for sub in _keys(value, depth - 1)}
    return out


def test_rule_and_cli_write_the_same_recommendations_document(tiny_study_done, tmp_path):
    """Issue 25: one recommendations.json, written by one function, from the rule and the CLI."""
    results = tiny_study_done / "results"
    run_cli("search", "--coefficients", str(results / "fits/conditional.json"), "--configfile",
            str(tiny_study_done / "config.yaml"), "--calibration",
            str(results / "throughput/calibration.json"), "--quality",
            str(results / "fits/quality.csv"), "--out-dir", str(tmp_path))
    rule = json.loads((results / "recommendations.json").read_text())
    cli = json.loads((tmp_path / "recommendations.json").read_text())
    assert _keys(cli) == _keys(rule)
    assert [_keys(r, 1) for r in cli["recommendations"]] == \
        [_keys(r, 1) for r in rule["recommendations"]]
    # the same law and the same picks (the rule also knows which shapes were trained)
    assert cli["law"] == rule["law"]
    for mine, theirs in zip(cli["recommendations"], rule["recommendations"]):
        assert mine["fastest_at_baseline_loss"]["name"] == \
            theirs["fastest_at_baseline_loss"]["name"]
    # without --quality the document says the extrapolation is unchecked, with the same keys
    text = run_cli("search", "--coefficients", str(results / "fits/conditional.json"),
                   "--configfile", str(tiny_study_done / "config.yaml"))
    printed = json.loads(text)
    assert _keys(printed) == _keys(rule) and printed["law"]["fit_quality"] is None


def test_search_warns_when_the_speedup_is_within_the_throughput_error(tmp_path):
    """A calibration whose leave-one-out error exceeds the predicted speed-up puts a warning
    in recommendations.json, through the command as through the rule (same function)."""
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"format": "archscale-throughput-calibration/1",
                                       "entries": [], "leave_one_out": {
        "sglang": {"n_measurements": 9, "mean_abs_relative_error": 5.0}}}))
    run_cli("search", "--coefficients", "paper", "--configfile",
            str(REPO / "configs/paper-1b.yaml"), "--gpu", "H200", "--engine", "sglang",
            "--budget", "973e6", "--tokens", "20e9", "--calibration", str(calibration),
            "--out-dir", str(tmp_path))
    rec = json.loads((tmp_path / "recommendations.json").read_text())["recommendations"][0]
    speed = [w for w in rec["warnings"] if "leave-one-out error for sglang" in w]
    assert len(speed) == 1 and "500 % over 9 measurements" in speed[0]
