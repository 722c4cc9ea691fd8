"""The `archscale` command line, including the issue's paper-coefficient search check."""
import io
import json
from contextlib import redirect_stdout

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
    assert total.runs == table[table.architecture != "TOTAL"].runs.sum() > 0
    assert total.gpu_hours > 0 and total.checkpoint_disk_gb > 0


def test_search_with_paper_coefficients_on_h200(tmp_path):
    """Issue 6: most accurate near x 0.08, r 1; fastest beats LLaMA-3.2-1B at its loss."""
    text = run_cli("search", "--coefficients", "paper", "--configfile",
                   str(REPO / "configs/paper-1b.yaml"), "--gpu", "H200", "--engine", "sglang",
                   "--budget", "973e6", "--tokens", "20e9", "--out-dir", str(tmp_path))
    rec = json.loads(text)[0]
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
