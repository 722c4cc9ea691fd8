"""Provenance beside or inside every artifact of a finished study (issue 8, part 2).

docs/reruns.md has a table, "Where each artifact's provenance lives", with one row per kind of
file under results/: `inside` (a JSON with a `provenance` block), `beside <path>` (the record of
the JSON at that path, relative to the artifact's folder) or `derived` (a table joined from
artifacts that carry their own provenance). These tests hold the study to that table: every
file is listed, every `inside` block is complete and its input hashes match the files on disk,
every `beside` record exists.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from test_reruns import complete_study, sha256

from conftest import REPO, tiny_config

pytestmark = pytest.mark.workflow

DOC = REPO / "docs" / "reruns.md"
REQUIRED = ("archscale_version", "git_commit", "packages", "settings", "inputs", "host", "device",
            "started", "finished")

# The inputs each kind of artifact must record (with hashes), as globs relative to the study.
EXPECTED_INPUTS = {
    "results/data/*/meta.json": ["results/data/*/tokenizer/tokenizer.json"],
    "results/data/*/shards/*.json": ["results/data/*/tokenizer/tokenizer.json"],
    "results/data/*/corpus_mc/summary.json": ["results/data/*/meta.json"],
    "results/runs/*/metrics.json": ["results/architectures/*/config.json",
                                    "results/data/*/meta.json"],
    "results/runs/*/eval.json": ["results/runs/*/model/model.safetensors"],
    "results/throughput/*/*.json": ["results/architectures/*/config.json"],
    "results/throughput/calibration.json": ["results/throughput/*/*.json"],
    "results/fits/chinchilla.json": ["results/runs.csv"],
    "results/fits/conditional.json": ["results/runs.csv", "results/fits/chinchilla.json"],
    "results/recommendations.json": ["results/fits/conditional.json",
                                     "results/throughput/calibration.json"],
}

# The package that computes each kind of artifact, whose version its provenance must record.
EXPECTED_PACKAGE = {
    "results/data/*/meta.json": "tokenizers",
    "results/runs/*/metrics.json": "torch",
    "results/runs/*/eval.json": "lm_eval",
    "results/throughput/*/*.json": "torch",
    "results/throughput/calibration.json": "scipy",
    "results/fits/chinchilla.json": "scipy",
    "results/fits/conditional.json": "scipy",
    "results/recommendations.json": "pulp",
}

# The validation loop's and the GQA search's artifacts (results/validation*, results/gqa*):
# checked on a study with the loop on (test_frontier_check.py, test_gqa_search.py).
VALIDATION_ARTIFACTS = ("results/validation", "results/gqa")
EXPECTED_INPUTS.update({
    "results/validation/plan.json": ["results/pareto.csv", "results/runs.csv"],
    "results/validation/runs/*/metrics.json": ["results/validation/architectures/*/config.json",
                                               "results/data/*/meta.json"],
    "results/validation/runs/*/eval.json": ["results/validation/runs/*/model/model.safetensors"],
    "results/validation/throughput/*/*.json": ["results/validation/architectures/*/config.json"],
})
EXPECTED_PACKAGE.update({
    "results/validation/plan.json": "pulp",
    "results/validation/runs/*/metrics.json": "torch",
    "results/validation/runs/*/eval.json": "lm_eval",
    "results/validation/throughput/*/*.json": "torch",
})


def doc_rows() -> list[tuple[str, str]]:
    """(glob, where) rows of the provenance table in docs/reruns.md."""
    text = DOC.read_text()
    section = text.split("## Where each artifact's provenance lives", 1)
    assert len(section) == 2, "docs/reruns.md lacks the provenance section"
    rows = []
    for line in section[1].split("\n## ", 1)[0].splitlines():
        match = re.match(r"\|\s*`([^`]+)`\s*\|\s*([^|]+?)\s*\|", line)
        if match:
            rows.append((match.group(1), match.group(2).replace("`", "").strip()))
    assert rows, "the provenance table in docs/reruns.md has no rows"
    return rows


def row_of(rel: str, rows: list[tuple[str, str]]) -> tuple[str, str] | None:
    return next(((g, w) for g, w in rows if fnmatch.fnmatchcase(rel, g)), None)


@pytest.fixture(scope="module")
def study(tiny_study_done, tmp_path_factory) -> Path:
    return complete_study(tiny_study_done, tmp_path_factory)


def files_of(study: Path, pattern: str) -> list[Path]:
    return sorted(p for p in (study / "results").rglob("*")
                  if p.is_file() and fnmatch.fnmatchcase(str(p.relative_to(study)), pattern))


def provenance_problems(study: Path, path: Path, pattern: str) -> list[str]:
    """Everything wrong with one artifact's provenance block (empty when it is complete)."""
    doc = json.loads(path.read_text())
    prov = doc.get("provenance") if isinstance(doc, dict) else None
    if not isinstance(prov, dict):
        return ["no provenance block"]
    problems = [f"missing {k}" for k in REQUIRED if k not in prov]
    for key in ("archscale_version", "host", "device", "started", "finished"):
        if key in prov and not prov[key]:
            problems.append(f"{key} is empty")
    if not prov.get("settings"):
        problems.append("settings is empty")
    if not prov.get("packages"):
        problems.append(f"packages incomplete: {prov.get('packages')}")
    if prov.get("started") and prov.get("finished"):
        if dt.datetime.fromisoformat(prov["started"]) > dt.datetime.fromisoformat(prov["finished"]):
            problems.append("started after finished")
    inputs = prov.get("inputs") or {}
    for name, record in inputs.items():
        file = study / name
        if not file.is_file():
            problems.append(f"input {name} does not exist")
        elif record.get("sha256") != sha256(file):
            problems.append(f"input {name}: recorded sha256 differs from the file")
    for want in EXPECTED_INPUTS.get(pattern, []):
        if not any(fnmatch.fnmatchcase(name, want) for name in inputs):
            problems.append(f"no input matching {want} (inputs: {sorted(inputs)})")
    package = EXPECTED_PACKAGE.get(pattern)
    if package and (prov.get("packages") or {}).get(package) != _version(package):
        problems.append(f"packages[{package}] is {(prov.get('packages') or {}).get(package)!r}, "
                        f"installed {_version(package)!r}")
    if _git_head() and not _is_commit_of_repo(str(prov.get("git_commit") or "")):
        problems.append(f"git_commit {prov.get('git_commit')!r} is not a commit of {REPO}")
    return problems


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _is_commit_of_repo(value: str) -> bool:
    """'<40 hex>' or '<40 hex>+dirty', naming a commit of this checkout."""
    match = re.fullmatch(r"([0-9a-f]{40})(\+dirty)?", value)
    return bool(match) and subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{match.group(1)}^{{commit}}"],
        capture_output=True).returncode == 0


def _git_head() -> str | None:
    proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def test_every_result_file_is_in_the_provenance_table(study):
    rows = doc_rows()
    files = [str(p.relative_to(study)) for p in (study / "results").rglob("*") if p.is_file()]
    assert len(files) > 100
    missing = sorted(f for f in files if row_of(f, rows) is None)
    assert not missing, f"add these to docs/reruns.md's provenance table: {missing}"
    # the validation loop is off in the tiny study; tests/test_frontier_check.py checks its rows
    unused = [g for g, _ in rows if not g.startswith(VALIDATION_ARTIFACTS)
              and not any(fnmatch.fnmatchcase(f, g) for f in files)]
    assert not unused, f"rows matching no file of the tiny study: {unused}"
    for glob, where in rows:
        assert where == "inside" or where == "derived" or where.startswith("beside "), (glob, where)


def _inside_patterns() -> list[str]:
    return [g for g, w in doc_rows() if w == "inside" and not g.startswith(VALIDATION_ARTIFACTS)]


@pytest.mark.parametrize("pattern", _inside_patterns())
def test_inside_provenance_is_complete(study, pattern):
    files = files_of(study, pattern)
    assert files, pattern
    problems = {str(f.relative_to(study)): provenance_problems(study, f, pattern) for f in files}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, json.dumps(problems, indent=1)[:4000]


def test_beside_records_exist_and_carry_provenance(study):
    for glob, where in doc_rows():
        if not where.startswith("beside "):
            continue
        target = where.split(" ", 1)[1].strip()
        for file in files_of(study, glob):
            record = (file.parent / target).resolve()
            assert record.is_file(), f"{file.relative_to(study)}: no {target} beside it"
            doc = json.loads(record.read_text())
            assert isinstance(doc.get("provenance"), dict), f"{record} has no provenance block"


def test_every_json_artifact_is_inside_or_a_hugging_face_file(study):
    """JSON files without their own block are only the Hugging Face formats that engines read
    (config.json, tokenizer files), each with its record beside it."""
    for glob, where in doc_rows():
        if where == "inside" or not glob.endswith(".json"):
            continue
        name = glob.rsplit("/", 1)[-1]
        assert name in {"config.json", "generation_config.json", "tokenizer.json",
                        "tokenizer_config.json"}, f"{glob} is a JSON artifact without provenance"


def test_settings_are_the_config_slices_that_produced_the_result(study):
    config = tiny_config()
    meta = json.loads(next((study / "results/data").glob("*/meta.json")).read_text())
    assert meta["provenance"]["settings"]["tokenizer"]["vocab_size"] == \
        config["data"]["tokenizer"]["vocab_size"]
    metrics = json.loads((study / "results/runs/a1/16384/seed0/metrics.json").read_text())
    training = metrics["provenance"]["settings"]["training"]
    assert training["lr"] == config["training"]["lr"]
    assert "threads" not in training, "a speed knob is recorded as a result-deciding setting"
    assert metrics["provenance"]["settings"]["tokens"] == 16384
    measured = json.loads((study / "results/throughput/b2/torch.json").read_text())
    assert measured["provenance"]["settings"]["output_len"] == config["throughput"]["output_len"]
    recommendations = json.loads((study / "results/recommendations.json").read_text())
    assert recommendations["provenance"]["settings"]["search"]["d_model_step"] == \
        config["search"]["d_model_step"]


def test_no_temporary_files_left_by_a_clean_run(study):
    """atomic_path's temporaries (.<name>.<random>.tmp*) never survive a successful study."""
    leftovers = [p for p in (study / "results").rglob(".*") if p.is_file()]
    assert not leftovers, leftovers
