"""The closed loop's files: where each round lives, which runs it trains, and the table of rounds.

Why a module of its own: the round policy (archscale.search.design_loop) decides from plain
tables; this module turns the workflow's files into those tables and back, so that the
Snakemake rules (rules/loop.smk) and their scripts stay wiring.

Layout (docs/outputs.md): round 0 is the study itself (results/runs.csv, results/fits/,
results/proposals.csv). Round k >= 1 lives in results/loop/round<k>/: its decision
(decision.json, plan.csv: the proposals it trains), then, when it trains, the study's runs plus
every loop run so far (runs.csv), their fits (chinchilla.json, conditional.json, forms.json),
the search and verdicts on them, and the next proposals. The loop's runs live in
results/loop/runs/<name>/<tokens>/seed<seed>/, where <name> is a configured architecture (a new
seed of it) or a shape name (d..-L..-h..-kv..-dh..-f..), so a run proposed twice trains once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from archscale.architecture import Architecture
from archscale.fit.forms.base import AXES
from archscale.search.proposals import optimum_interval
from archscale.training.evaluate import runs_table

LOOP_DIR = "results/loop"
LOOP_RUN = LOOP_DIR + "/runs/{name}/{tokens}/seed{seed}"

#: Round 0: the study's own files, which round 1 decides from.
STUDY_ROUND = {"runs": "results/runs.csv", "conditional": "results/fits/conditional.json",
               "proposals": "results/proposals.csv", "verdicts": "results/fits/verdicts.json"}

ROUND_COLUMNS = ["round", "reason", "runs_trained", "device_hours", "spent_after_hours",
                 "budget_hours", "x_star", "x_star_low", "x_star_high", "x_width",
                 "r_star", "r_star_low", "r_star_high", "r_width", "verdict_u_x",
                 "verdict_u_r", "verdict_x_star", "verdict_r_star", "detail"]


def round_files(k: int) -> dict[str, str]:
    """The files of round k (0: the study's own): what round k+1 decides from."""
    if k == 0:
        return dict(STUDY_ROUND)
    folder = f"{LOOP_DIR}/round{k}"
    return {"runs": f"{folder}/runs.csv", "conditional": f"{folder}/conditional.json",
            "proposals": f"{folder}/proposals.csv", "verdicts": f"{folder}/verdicts.json"}


def planned_runs(plan_csv: str | Path) -> list[tuple[str, int, int]]:
    """(name, tokens, seed) of every run a round's plan.csv trains (empty when it stops)."""
    plan = pd.read_csv(plan_csv)
    if plan.empty:
        return []
    return [(str(r["name"]), int(r["tokens"]), int(r["seed"])) for _, r in plan.iterrows()]


def unique_runs(plans: Iterable[str | Path]) -> list[tuple[str, int, int]]:
    """The runs of several rounds' plans, each once, in the order first planned."""
    seen: dict[tuple[str, int, int], None] = {}
    for plan in plans:
        for run in planned_runs(plan):
            seen.setdefault(run, None)
    return list(seen)


def verdicts_by_finding(doc: Mapping[str, Any]) -> dict[str, str]:
    """finding -> verdict of a verdicts.json (the loop's verdict targets read it)."""
    return {f["finding"]: f["verdict"] for f in doc.get("findings", [])}


def loop_run_rows(runs: list[tuple[str, int, int]], configs: Iterable[str | Path],
                  metrics: Iterable[str | Path], evals: Iterable[str | Path],
                  tasks: list[str]) -> pd.DataFrame:
    """runs.csv rows of the loop's runs: the accounting of each run's config.json, then its
    results (archscale.training.evaluate.runs_table, which builds the study's own rows); a
    round's runs.csv is the study's plus these."""
    configs = list(configs)
    accounting = {name: Architecture.from_hf_config(config, name=name).accounting()
                  for (name, _, _), config in zip(runs, configs)}
    return runs_table(pd.DataFrame(list(accounting.values())),
                      [(n, t, s, m, e) for (n, t, s), m, e in zip(runs, metrics, evals)], tasks)


def round_runs_table(study_runs: str | Path, loop_rows: pd.DataFrame) -> pd.DataFrame:
    """The study's runs.csv followed by the loop's runs so far."""
    study = pd.read_csv(study_runs)
    if loop_rows.empty:
        return study
    return pd.concat([study, loop_rows[study.columns]], ignore_index=True)


def round_row(decision: Mapping[str, Any], conditional: Mapping[str, Any] | None,
              verdicts: Mapping[str, Any] | None) -> dict[str, Any]:
    """One row of results/loop/rounds.csv: a round's decision, and the optimum and verdicts
    of the fit it decided from (round 1's: the study's own)."""
    row: dict[str, Any] = {
        "round": int(decision["round"]), "reason": decision["reason"],
        "runs_trained": int(decision["n_picked"]), "device_hours": decision["picked_hours"],
        "spent_after_hours": decision["spent_after_hours"],
        "budget_hours": decision["budget_hours"], "detail": decision["detail"]}
    for axis in AXES:
        value, low, high = optimum_interval(conditional or {}, axis)
        row.update({f"{axis}_star": value, f"{axis}_star_low": low, f"{axis}_star_high": high,
                    f"{axis}_width": high - low})
    found = verdicts_by_finding(verdicts or {})
    for finding in ("u_x", "u_r", "x_star", "r_star"):
        row[f"verdict_{finding}"] = found.get(finding)
    return row


def rounds_table(decisions: Iterable[Mapping[str, Any]],
                 fits: Iterable[tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]]
                 ) -> pd.DataFrame:
    """results/loop/rounds.csv: one row per round, with the fit each round decided from."""
    rows = [round_row(d, c, v) for d, (c, v) in zip(decisions, fits)]
    return pd.DataFrame(rows, columns=ROUND_COLUMNS)
