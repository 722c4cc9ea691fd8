"""Bad input to the `archscale` command line is a one-line error with exit code 2, never a
traceback: the line names the flag or file, the value given, and what to give instead."""
import json
from pathlib import Path

import pytest

from archscale.cli.main import main

SEARCH = ["search", "--coefficients", "paper", "--budget", "973e6", "--n-layers", "16",
          "--head-dim", "64", "--tokens", "20e9"]
PREDICT = ["throughput", "predict", "--d-model", "2048", "--n-layers", "16", "--n-heads", "32",
           "--n-kv-heads", "8", "--head-dim", "64", "--ffn-dim", "8192", "--vocab-size", "128256"]
DESCRIBE = ["arch", "describe", "--d-model", "2048", "--n-layers", "16", "--n-heads", "32",
            "--n-kv-heads", "8", "--head-dim", "64", "--ffn-dim", "8192", "--vocab-size", "128256"]
GPT2_CONFIG = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
               "vocab_size": 50257}


def error_line(capsys, argv: list[str]) -> str:
    """Run the CLI expecting exit code 2 (argparse's SystemExit or main's return value) and
    give the last line on stderr, the error itself."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.strip(), "no message on stderr"
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith("archscale") and ": error: " in line, captured.err
    return line


@pytest.fixture
def runs_csv(tmp_path):
    """Nine runs of a 3x3 size-by-tokens grid: enough to fit, so only the flag under test
    can make the command fail."""
    rows = ["N,D,loss,x,r"]
    for n in (1e7, 3e7, 1e8):
        for d in (2e8, 6e8, 2e9):
            rows.append(f"{n},{d},{1.8 + 400 / n ** 0.34 + 2000 / d ** 0.36},0.08,1.0")
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


# --- numeric flags: argparse refuses the value ---------------------------------------------

@pytest.mark.parametrize("flag, value, message", [
    ("--budget", "-5", "must be > 0, got -5"),
    ("--budget", "0", "must be > 0, got 0"),
    ("--budget", "nan", "must be a finite number > 0, got nan"),
    ("--tokens", "-1", "must be > 0, got -1"),
    ("--tokens", "0", "must be > 0, got 0"),
    ("--n-layers", "0", "must be an integer >= 1, got 0"),
    ("--head-dim", "-64", "must be an integer >= 1, got -64"),
    ("--vocab-size", "0", "must be an integer >= 1, got 0"),
    ("--batch", "0", "must be an integer >= 1, got 0"),
    ("--input-len", "-1", "must be an integer >= 1, got -1"),
    ("--output-len", "0", "must be an integer >= 1, got 0"),
    ("--gqa-groups", "0", "must be an integer >= 1, got 0"),
    ("--d-model-step", "-8", "must be an integer >= 1, got -8"),
    ("--n-params-tolerance", "0", "must be > 0, got 0"),
])
def test_search_refuses_a_non_positive_number(capsys, flag, value, message):
    line = error_line(capsys, SEARCH + [flag, value])
    assert line == f"archscale search: error: argument {flag}: {message}"


@pytest.mark.parametrize("flag, value, message", [
    ("--batch", "-3", "must be an integer >= 1, got -3"),
    ("--input-len", "0", "must be an integer >= 1, got 0"),
    ("--output-len", "-1", "must be an integer >= 1, got -1"),
    ("--max-num-seqs", "0", "must be an integer >= 1, got 0"),
    ("--max-num-batched-tokens", "-1", "must be an integer >= 1, got -1"),
    ("--memory-fraction", "1.5", "must be in (0, 1], got 1.5"),
    ("--memory-fraction", "nan", "must be a number in (0, 1], got nan"),
    ("--d-model", "0", "must be an integer >= 1, got 0"),
])
def test_throughput_predict_refuses_a_bad_number(capsys, flag, value, message):
    line = error_line(capsys, PREDICT + [flag, value])
    assert line == f"archscale throughput predict: error: argument {flag}: {message}"


def test_arch_describe_refuses_zero_kv_heads(capsys):
    """0 used to be replaced silently by --n-heads (plain multi-head attention)."""
    line = error_line(capsys, DESCRIBE + ["--n-kv-heads", "0"])
    assert line.endswith("argument --n-kv-heads: must be an integer >= 1, got 0")


@pytest.mark.parametrize("command, flag, values, message", [
    ("chinchilla", "--bootstrap", ["-1"], "must be an integer >= 0, got -1"),
    ("chinchilla", "--workers", ["0"], "must be an integer >= 1, got 0"),
    ("chinchilla", "--seed", ["-1"], "must be an integer >= 0, got -1"),
    ("chinchilla", "--compute-budgets", ["1e20", "-1"], "must be > 0, got -1"),
    ("chinchilla", "--huber-delta", ["0"], "must be > 0, got 0"),
    ("conditional", "--bootstrap", ["-2"], "must be an integer >= 0, got -2"),
    ("conditional", "--r-range", ["-1", "5"], "must be > 0, got -1"),
    ("quality", "--r-range", ["0.5", "nan"], "must be a finite number > 0, got nan"),
])
def test_fit_refuses_a_bad_number(capsys, tmp_path, runs_csv, command, flag, values, message):
    argv = ["fit", command, "--runs", str(runs_csv), "--out", str(tmp_path / "out.json")]
    line = error_line(capsys, argv + [flag, *values])
    assert line == f"archscale fit {command}: error: argument {flag}: {message}"


@pytest.mark.parametrize("command", ["conditional", "quality"])
def test_fit_refuses_a_reversed_r_range(capsys, tmp_path, runs_csv, command):
    """`fit quality` used to write an empty table for it and exit 0."""
    line = error_line(capsys, ["fit", command, "--runs", str(runs_csv), "--out",
                               str(tmp_path / "out"), "--r-range", "5", "0.5"])
    assert line == ("archscale: error: --r-range: LOW must be below HIGH, got 5 0.5; give the "
                    "bounds in increasing order, e.g. --r-range 0.5 5")


# --- HF config.json files --------------------------------------------------------------------

@pytest.mark.parametrize("command", [["arch", "describe"], ["throughput", "predict"]])
def test_a_gpt2_config_names_the_file_and_the_missing_keys(capsys, tmp_path, command):
    path = tmp_path / "gpt2_config.json"
    path.write_text(json.dumps(GPT2_CONFIG))
    line = error_line(capsys, command + ["--config", str(path)])
    assert line.startswith(f"archscale: error: {path} is not a LLaMA-style config "
                           "(model_type 'gpt2'): missing hidden_size, num_hidden_layers, "
                           "num_attention_heads, intermediate_size;")
    assert "archscale reads LLaMA-style config.json files" in line
    assert "num_key_value_heads" in line


@pytest.mark.parametrize("command", [["arch", "describe"], ["throughput", "predict"]])
def test_a_missing_config_names_the_file(capsys, tmp_path, command):
    path = tmp_path / "nowhere" / "config.json"
    line = error_line(capsys, command + ["--config", str(path)])
    assert line.startswith(f"archscale: error: {path}: no such file; give the path of a ")


def test_a_config_directory_without_config_json_names_the_file(capsys, tmp_path):
    line = error_line(capsys, ["arch", "describe", "--config", str(tmp_path)])
    assert line.startswith(f"archscale: error: {tmp_path / 'config.json'}: no such file")


@pytest.mark.parametrize("command", [["arch", "describe"], ["throughput", "predict"]])
def test_a_config_that_is_not_json_names_the_file(capsys, tmp_path, command):
    path = tmp_path / "config.json"
    path.write_text("{hidden_size: 2048")
    line = error_line(capsys, command + ["--config", str(path)])
    assert line.startswith(f"archscale: error: {path} is not valid JSON (")
    assert line.endswith("); give a model's config.json")


def test_a_config_with_text_for_a_number_names_the_key(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": "2048", "num_hidden_layers": 16,
                                "num_attention_heads": 32, "intermediate_size": 8192,
                                "vocab_size": 128256}))
    line = error_line(capsys, ["arch", "describe", "--config", str(path)])
    assert line == (f"archscale: error: {path}: the shape keys must be JSON integers, got "
                    "hidden_size='2048'")


# --- other input and output files ------------------------------------------------------------

@pytest.mark.parametrize("argv", [SEARCH, PREDICT])
def test_a_missing_or_broken_calibration_names_the_file(capsys, tmp_path, argv):
    missing = tmp_path / "calibration.json"
    line = error_line(capsys, argv + ["--calibration", str(missing)])
    assert line.endswith(f"error: argument --calibration: no such file: {missing}")
    missing.write_text("{")
    line = error_line(capsys, argv + ["--calibration", str(missing)])
    assert f"error: argument --calibration: {missing} is not valid JSON (" in line


@pytest.mark.parametrize("argv", [SEARCH, PREDICT])
@pytest.mark.parametrize("doc, problem", [
    ({"entries": []}, "ValueError: not a throughput calibration (format None"),
    ({"format": "archscale-throughput-calibration/1", "entries": [{"engine": "vllm"}]},
     "KeyError: 'device'"),
    ({"format": "archscale-throughput-calibration/1", "defaults": {"vllm": {"x": float("nan")}}},
     "defaults.vllm.x is not a finite number"),
])
def test_a_json_object_that_is_not_a_calibration_names_the_file(capsys, tmp_path, argv, doc,
                                                                problem):
    """The throughput model's own message named no file (and a damaged entry was a
    traceback)."""
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(doc))
    line = error_line(capsys, argv + ["--calibration", str(path)])
    assert f"error: argument --calibration: {path}" in line and problem in line
    assert "results/throughput/calibration.json" in line


def test_a_broken_chinchilla_json_names_the_file(capsys, tmp_path, runs_csv):
    path = tmp_path / "chinchilla.json"
    path.write_text("not json")
    line = error_line(capsys, ["fit", "conditional", "--runs", str(runs_csv), "--out",
                               str(tmp_path / "c.json"), "--l-opt", "chinchilla",
                               "--chinchilla", str(path)])
    assert f"error: argument --chinchilla: {path} is not valid JSON (" in line


def test_an_empty_runs_table_names_the_file(capsys, tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("\n")
    line = error_line(capsys, ["fit", "chinchilla", "--runs", str(path), "--out",
                               str(tmp_path / "c.json")])
    assert line.endswith(f"error: argument --runs: {path} is empty; a CSV table needs a header "
                         "row and a row per record")


def test_a_runs_table_without_a_column_names_it(capsys, tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("N,loss\n1e7,3.1\n3e7,2.9\n1e8,2.7\n")
    line = error_line(capsys, ["fit", "chinchilla", "--runs", str(path), "--out",
                               str(tmp_path / "c.json")])
    assert line.startswith(f"archscale: error: {path} is missing column(s) D: 'tokens' or 'D';")


def test_too_few_runs_to_fit_says_how_many_are_needed(capsys, tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss\n1e7,2e8,3.1\n3e7,2e8,2.9\n")
    line = error_line(capsys, ["fit", "chinchilla", "--runs", str(path), "--out",
                               str(tmp_path / "c.json"), "--bootstrap", "0"])
    assert "only 2 point(s) were given" in line and "at least 5 runs" in line


def test_search_out_dir_that_is_a_file(capsys, tmp_path):
    path = tmp_path / "taken"
    path.write_text("")
    line = error_line(capsys, SEARCH + ["--out-dir", str(path / "search")])
    assert line.endswith(f"error: argument --out-dir: {path} is a file, not a directory; give "
                         "a directory to write into")


def test_fit_out_that_is_a_directory(capsys, tmp_path, runs_csv):
    line = error_line(capsys, ["fit", "chinchilla", "--runs", str(runs_csv), "--out",
                               str(tmp_path)])
    assert line.endswith(f"error: argument --out: {tmp_path} is a directory; give a file name")


def test_search_coefficients_that_is_a_directory(capsys, tmp_path):
    line = error_line(capsys, ["search", "--coefficients", str(tmp_path)] + SEARCH[3:])
    assert line.endswith(f"error: argument --coefficients: {tmp_path} is a directory; give the "
                         "conditional.json written by `archscale fit conditional`, or 'paper'")


def test_search_refuses_a_json_list_as_calibration(capsys, tmp_path):
    """Issue 31: a JSON list given where a document is expected named, not an AttributeError."""
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2, 3]")
    line = error_line(capsys, SEARCH + ["--calibration", str(listed)])
    assert str(listed) in line and "JSON list, not an object" in line


def test_search_refuses_a_json_list_or_a_nan_coefficient_as_the_law(capsys, tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2, 3]")
    line = error_line(capsys, ["search", "--coefficients", str(listed), "--budget", "973e6",
                               "--n-layers", "16", "--head-dim", "64", "--tokens", "20e9"])
    assert str(listed) in line and "JSON list, not an object" in line
    assert "conditional.json written by `archscale fit conditional`" in line
    law = json.loads(json.dumps({"law": "conditional", "form": "multiplicative",
                                 "coefficients": {"a0": 2.697, "a1": 0.0974, "a2": 0.0078,
                                                  "b0": 0.387, "b1": 0.0063, "b2": 0.0065},
                                 "optimum": {"x_fitted": [0.05, 0.1], "r_fitted": [0.5, 5]}}))
    law["coefficients"]["a1"] = float("nan")
    bad = tmp_path / "nan.json"
    bad.write_text(json.dumps(law))  # Python writes NaN, which json.loads reads back
    line = error_line(capsys, ["search", "--coefficients", str(bad), "--budget", "973e6",
                               "--n-layers", "16", "--head-dim", "64", "--tokens", "20e9"])
    assert f"{bad}: coefficients.a1 is not a finite number" in line


@pytest.mark.parametrize("value, message", [
    (float("nan"), "l_opt.chinchilla.E is not a finite number"),
    (float("inf"), "l_opt.chinchilla.E is not a finite number"),
    (None, "l_opt.chinchilla.E is null, not a number"),   # was a TypeError traceback
])
def test_search_refuses_a_law_whose_reference_is_not_a_number(capsys, tmp_path, value, message):
    """Issue 31: a NaN in the law's L_opt (not only in its coefficients) made every prediction
    NaN: one frontier point, "none found", exit 0."""
    law = {"law": "conditional", "form": "multiplicative",
           "coefficients": {"a0": 2.697, "a1": 0.0974, "a2": 0.0078, "b0": 0.387, "b1": 0.0063,
                            "b2": 0.0065},
           "l_opt": {"source": "chinchilla", "chinchilla": {"E": value, "A": 406.4, "B": 410.7,
                                                            "alpha": 0.34, "beta": 0.28}}}
    path = tmp_path / "conditional.json"
    path.write_text(json.dumps(law))
    line = error_line(capsys, ["search", "--coefficients", str(path)] + SEARCH[3:])
    assert line.startswith(f"archscale: error: {path}: {message}")
    assert "archscale fit conditional" in line


@pytest.mark.parametrize("budget", ["1e30", "1e12"])
def test_search_refuses_a_budget_that_would_exhaust_memory(capsys, budget):
    """1e30 asked for 164 TiB; 1e12 (at 16 layers) enumerated 1.1e9 shapes and was killed at
    24 GB. Both are counted before anything is allocated."""
    line = error_line(capsys, ["search", "--coefficients", "paper", "--budget", budget,
                               "--n-layers", "16", "--head-dim", "64", "--tokens", "20e9"])
    assert f"budget {float(budget):,.3g} (n_layers 16, head_dim 64) gives a grid of" in line
    assert "one search holds in memory" in line and "search.d_model_step" in line


# --- runs tables: one loader (archscale.fit.io.read_runs) for every command -------------------

def fit_error(capsys, tmp_path, runs: Path, command: str = "chinchilla") -> str:
    """The error line of `archscale fit COMMAND --runs RUNS`; nothing may be written."""
    line = error_line(capsys, ["fit", command, "--runs", str(runs), "--out",
                               str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    return line


BAD_TABLES = {  # name: (file, content, what the error says after the path)
    # `fit quality` exited 0 with "0 of 0 folds", `fit conditional` raised KeyError: 'N' and
    # `fit chinchilla` said "only 0 point(s)", naming no file
    "header only": ("runs.csv", "name,n_params_non_embedding,tokens,val_loss,d_over_sqrt_n,"
                                "r_mlp_attn\n", " has a header but no rows"),
    # pandas said "Error tokenizing data. C error: Expected 2 fields in line 4, saw 3"
    "json": ("conditional.json", json.dumps({"law": "conditional", "coefficients": {"a0": 1}},
                                            indent=2), " holds JSON, not a CSV runs table; "),
    "malformed": ("runs.csv", 'N,D,loss\n1e7,2e8,"3.1\n', " is not a readable CSV runs table ("),
}


@pytest.mark.parametrize("command", ["chinchilla", "conditional", "quality"])
@pytest.mark.parametrize("kind", sorted(BAD_TABLES))
def test_every_fit_names_a_runs_table_it_cannot_use(capsys, tmp_path, command, kind):
    name, content, problem = BAD_TABLES[kind]
    path = tmp_path / name
    path.write_text(content)
    line = fit_error(capsys, tmp_path, path, command)
    assert line.startswith(f"archscale: error: {path}{problem}")
    assert "results/runs.csv" in line  # the fix: which table to give


def test_a_directory_given_as_runs_is_named_as_one(capsys, tmp_path):
    line = fit_error(capsys, tmp_path, tmp_path)
    assert line.endswith(f"argument --runs: {tmp_path} is a directory; give a file")


def test_a_json_file_given_as_quality_is_named_before_the_search(capsys, tmp_path):
    path = tmp_path / "quality.json"
    path.write_text("[1, 2]")
    line = error_line(capsys, SEARCH + ["--quality", str(path)])
    assert line.startswith(f"archscale: error: {path} holds JSON, not a CSV fit quality table")


def _shaped_runs(tmp_path) -> Path:
    """runs.csv's own columns for nine runs: three shapes (their N, x and r computed by
    archscale.architecture) at three token budgets."""
    from archscale.architecture import Architecture

    rows = ["name,d_model,n_layers,n_heads,n_kv_heads,head_dim,ffn_dim,n_params_non_embedding,"
            "d_over_sqrt_n,r_mlp_attn,tokens,val_loss"]
    for d, ffn in ((256, 704), (384, 1024), (512, 1408)):
        arch = Architecture(f"d{d}", d_model=d, n_layers=4, n_heads=d // 64, n_kv_heads=1,
                            head_dim=64, ffn_dim=ffn, vocab_size=512)
        n = arch.n_params_non_embedding
        for tokens in (2e8, 6e8, 2e9):
            loss = 1.8 + 400 / n ** 0.34 + 2000 / tokens ** 0.36
            rows.append(f"{arch.name},{d},4,{d // 64},1,64,{ffn},{n},{arch.d_over_sqrt_n:.6f},"
                        f"{arch.r_mlp_attn:.6f},{tokens:.0f},{loss}")
    path = tmp_path / "runs.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("column, value", [("n_params_non_embedding", 1e300),
                                           ("r_mlp_attn", 9.5), ("d_over_sqrt_n", 0.5)])
def test_a_run_whose_n_contradicts_its_shape_is_refused(capsys, tmp_path, column, value):
    """Issue 31: a runs.csv row with N 1e300 was fitted, and moved E from 6.6e-10 to 2.58.
    x and r are checked the same way. The table is read when every row agrees with its shape."""
    import pandas as pd

    from archscale.fit.io import read_runs

    path = _shaped_runs(tmp_path)
    assert len(read_runs(path, require=("N", "D", "loss", "x", "r"))) == 9
    table = pd.read_csv(path)
    table[column] = table[column].astype(float)
    table.loc[4, column] = value
    table.to_csv(path, index=False)
    line = fit_error(capsys, tmp_path, path, "conditional")
    assert line.startswith(f"archscale: error: {path}: {column} is {value:.6g} at data row 5 "
                           "(name d384, tokens 600000000), but that row's shape columns")
    assert "--forcerun collect_runs" in line


def test_a_full_disk_is_one_line_naming_the_output(capsys, tmp_path, runs_csv, monkeypatch):
    """A failed write (here ENOSPC from the file system) names the file and the fix, in one
    line, instead of a traceback."""
    import errno
    from pathlib import Path

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "chinchilla.json"
    line = error_line(capsys, ["fit", "chinchilla", "--runs", str(runs_csv), "--out", str(out),
                               "--bootstrap", "0"])
    assert line.startswith(f"archscale: error: could not write {out}: no space left on device")
    assert "df -h" in line and not out.exists() and list(tmp_path.glob(".*")) == []
