"""The frontier check (the validation loop, search.validation): train and measure a few frontier
shapes the study never trained.

Why: every row of pareto.csv is an extrapolation of two fitted models (the conditional scaling
law and the calibrated throughput model). Training and measuring a handful of them checks the
extrapolation where it matters, the frontier, at a cost the user bounds. Three pieces:

1. `archscale.costs.FittedJobCosts`: device-hours of checking one shape (train, evaluate,
   measure), fitted on the study's own jobs.
2. `choose_checked_shapes`: a pulp (CBC) binary program, a budgeted facility-location problem:
   choose shapes to train so that the frontier is covered as well as possible. Frontier point
   j is covered by a validated point i of the same budget by s_ij = max(0, 1 - d_ij / radius)
   (d in the frontier's normalised loss / log-throughput plane), weighted by the frontier arc
   length it represents; shapes the study already trained cover for free.
3. `comparison_table`: predicted against observed loss and throughput, results/validation.csv.

Nothing here writes runs.csv or the fits: validation results never feed back (no cycle).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from archscale.architecture import SHAPE_FIELDS
from archscale.config import VALIDATION_LOSS_COLUMNS
from archscale.costs import FittedJobCosts, duration_s, training_flops

if TYPE_CHECKING:
    from archscale.config import Study

SELECTION_COLUMNS = ["name", "budget", *SHAPE_FIELDS, "n_params_non_embedding", "r_mlp_attn",
                     "d_over_sqrt_n", "gqa_group", "predicted_loss", "predicted_tokens_per_s",
                     "frontier_weight", "status", "covered_by", "coverage", "train_flops",
                     "estimated_hours", "estimated_wall_hours"]


COMPARISON_COLUMNS = ["name", "budget", *SHAPE_FIELDS, "n_params_non_embedding",
                      "r_mlp_attn", "d_over_sqrt_n", "gqa_group", "tokens", "loss_column",
                      "predicted_loss", "observed_loss", "loss_error", "loss_relative_error",
                      "predicted_tokens_per_s", "measured_tokens_per_s",
                      "throughput_relative_error", "engine", "device", "estimated_wall_hours",
                      "wall_hours"]


class FrontierCheckError(ValueError):
    """A validation loop that cannot run as configured; the message says what to change."""


def selection_params(study: "Study") -> dict[str, Any]:
    """What changes the frontier check's selection (the checkpoint's params): the loop's own
    settings, the run it prices (tokens, sequence length), the engine it measures with, and the
    devices each of its jobs occupies (the budget is device-hours)."""
    config = study.config
    train, tp = config["training"], config["throughput"]
    return {
        "validation": config["search"]["validation"],
        "tokens": study.search_tokens(),
        "seq_len": config["data"]["seq_len"],
        "engine": study.search_engine(),
        "train_devices": train["gpus"] or train["threads"],
        "eval_devices": 1 if train["gpus"] else config["evaluation"]["threads"],
        "measure_devices": tp["threads"] if tp["device"] == "cpu" else 1,
    }


# ---------------------------------------------------------------------------------------------
# 2. Which shapes to validate: budgeted coverage of the frontier, with pulp
# ---------------------------------------------------------------------------------------------

def frontier_plane(pareto: pd.DataFrame) -> np.ndarray:
    """Each frontier row's (loss, log throughput), scaled to [0, 1] within its budget."""
    out = np.zeros((len(pareto), 2))
    for _, idx in pareto.groupby("budget").indices.items():
        coords = np.column_stack([pareto["predicted_loss"].to_numpy(float)[idx],
                                  np.log(pareto["predicted_tokens_per_s"].to_numpy(float)[idx])])
        span = np.ptp(coords, axis=0)
        out[idx] = (coords - coords.min(axis=0)) / np.where(span > 0, span, 1.0)
    return out


def frontier_weights(pareto: pd.DataFrame) -> np.ndarray:
    """The share of the frontier each row stands for: half the arc to each neighbour (by
    loss), normalised so every budget weighs the same and all weights sum to 1."""
    plane = frontier_plane(pareto)
    weights = np.zeros(len(pareto))
    groups = pareto.groupby("budget").indices
    for _, idx in groups.items():
        order = idx[np.argsort(plane[idx, 0], kind="stable")]
        if len(order) == 1:
            weights[order] = 1.0
        else:
            gaps = np.linalg.norm(np.diff(plane[order], axis=0), axis=1)
            share = np.zeros(len(order))
            share[:-1] += gaps / 2
            share[1:] += gaps / 2
            weights[order] = share / share.sum() if share.sum() > 0 else 1.0 / len(order)
    return weights / len(groups)


def coverage_matrix(pareto: pd.DataFrame, radius: float) -> np.ndarray:
    """s[i, j]: how well validating row i covers frontier row j (same budget only)."""
    plane = frontier_plane(pareto)
    dist = np.linalg.norm(plane[:, None, :] - plane[None, :, :], axis=2)
    same = pareto["budget"].to_numpy(float)
    cover = np.clip(1.0 - dist / radius, 0.0, 1.0)
    return np.where(same[:, None] == same[None, :], cover, 0.0)


def choose_checked_shapes(pareto: pd.DataFrame, hours: np.ndarray, budget_hours: float,
                          max_architectures: int, radius: float,
                          trained: np.ndarray | None = None) -> pd.DataFrame:
    """Solve the budgeted coverage program; the plan table (one row per frontier row).

    Maximise sum_j w_j sum_i s_ij z_ij subject to sum_i z_ij <= 1 (each point counted once),
    z_ij <= x_i (only validated points cover), sum_i hours_i x_i <= budget, sum_i x_i <=
    max_architectures, x_i = 1 at no cost for shapes the study already trained.
    """
    import pulp

    n = len(pareto)
    if n == 0:
        raise FrontierCheckError("pareto.csv has no row: nothing to validate")
    if radius <= 0:
        raise FrontierCheckError(f"search.validation.coverage_radius must be > 0, got {radius}")
    trained = np.zeros(n, bool) if trained is None else np.asarray(trained, bool)
    w = frontier_weights(pareto)
    s = coverage_matrix(pareto, radius)
    prob = pulp.LpProblem("validation_coverage", pulp.LpMaximize)
    x = [pulp.LpVariable(f"x{i}", cat="Binary") for i in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(n) if s[i, j] > 0]
    z = {(i, j): pulp.LpVariable(f"z{i}_{j}", lowBound=0, upBound=1) for i, j in pairs}
    prob += pulp.lpSum(w[j] * s[i, j] * z[i, j] for i, j in pairs)
    for j in range(n):  # every frontier point counts once, by its best validated cover
        prob += pulp.lpSum(z[i, j] for i in np.flatnonzero(s[:, j] > 0)) <= 1
    for i, j in pairs:
        prob += z[i, j] <= x[i]
    new = [i for i in range(n) if not trained[i]]
    prob += pulp.lpSum(float(hours[i]) * x[i] for i in new) <= float(budget_hours)
    prob += pulp.lpSum(x[i] for i in new) <= int(max_architectures)
    for i in np.flatnonzero(trained):
        prob += x[i] == 1
    status = prob.solve(pulp.PULP_CBC_CMD(msg=False))
    if pulp.LpStatus[status] != "Optimal":
        raise FrontierCheckError(f"the validation program is {pulp.LpStatus[status]}")
    chosen = np.array([round(v.value() or 0) == 1 for v in x])
    covered_by, coverage = [], []
    for j in range(n):
        best = max(((s[i, j], i) for i in range(n) if chosen[i]), default=(0.0, -1))
        coverage.append(float(best[0]))
        covered_by.append(str(pareto.iloc[best[1]]["name"]) if best[0] > 0 else "")
    plan = pareto.copy()
    plan["frontier_weight"] = w
    plan["status"] = np.where(trained, "trained", np.where(chosen, "validate", "skip"))
    plan["covered_by"] = covered_by
    plan["coverage"] = coverage
    plan["estimated_hours"] = np.where(trained, 0.0, hours)
    return plan


def select_frontier_checks(pareto: pd.DataFrame, runs: pd.DataFrame, cost: FittedJobCosts,
                           seq_len: int, tokens: float, vocab_size: int,
                           settings: Mapping[str, Any]) -> pd.DataFrame:
    """The validation plan: costs for every frontier row, then the coverage program."""
    pareto = pareto.reset_index(drop=True).assign(vocab_size=int(vocab_size))
    flops = np.array([training_flops(row, seq_len) * float(tokens)
                      for _, row in pareto.iterrows()])
    hours = np.array([cost.hours(f) for f in flops])
    trained_shapes = {tuple(int(r[f]) for f in SHAPE_FIELDS) for _, r in runs.iterrows()}
    trained = np.array([tuple(int(r[f]) for f in SHAPE_FIELDS) in trained_shapes
                        for _, r in pareto.iterrows()])
    plan = choose_checked_shapes(pareto, hours, float(settings["budget_hours"]),
                              int(settings["max_architectures"]),
                              float(settings["coverage_radius"]), trained)
    plan["train_flops"] = flops
    plan["estimated_wall_hours"] = np.where(
        plan.status == "trained", 0.0, [cost.wall_hours(f) for f in flops])
    return plan[[c for c in SELECTION_COLUMNS if c in plan.columns]]


def selection_summary(plan: pd.DataFrame) -> dict[str, Any]:
    """Figures for the log and plan.json: chosen shapes, their cost, the coverage reached, and
    why nothing was chosen when the budget buys no shape."""
    chosen = plan[plan.status == "validate"]
    summary: dict[str, Any] = {
        "validate": list(chosen.name), "estimated_hours": float(chosen.estimated_hours.sum()),
        "coverage": float((plan.frontier_weight * plan.coverage).sum())}
    new = plan[plan.status != "trained"]
    if chosen.empty and not new.empty:
        summary["note"] = (f"no shape fits the budget: the cheapest costs "
                           f"{new.estimated_hours.min():.4g} device-hours; raise "
                           "search.validation.budget_hours")
    return summary


# ---------------------------------------------------------------------------------------------
# 3. Predicted against observed
# ---------------------------------------------------------------------------------------------

def comparison_table(plan: pd.DataFrame, observed: Mapping[str, Mapping[str, Any]],
                     loss_column: str) -> pd.DataFrame:
    """One row per validated shape: predictions (from the plan), observations, errors.

    observed: name -> {"metrics": metrics.json, "eval": eval.json, "throughput": engine json}.
    `loss_column` is the fit's (train_loss or val_loss): the loss the law predicts.
    """
    rows = []
    for _, row in plan[plan.status == "validate"].iterrows():
        got = observed.get(row["name"])
        if got is None:
            raise FrontierCheckError(f"no observation for validated shape {row['name']!r}")
        metrics, evaluation, measured = got["metrics"], got["eval"], got["throughput"]
        observed_values = {**metrics, **evaluation}   # train_loss; val_loss, val_bpb
        if not isinstance(observed_values.get(loss_column), (int, float)):
            raise FrontierCheckError(f"fit.loss_column {loss_column!r} is in neither metrics.json "
                                  f"nor eval.json of {row['name']!r}; use one of "
                                  f"{list(VALIDATION_LOSS_COLUMNS)}")
        loss = float(observed_values[loss_column])
        speed = float(measured["output_tokens_per_s"])
        train_s = float(metrics.get("wall_s") or duration_s(metrics))
        hours_spent = (train_s + duration_s(evaluation) + duration_s(measured)) / 3600
        rows.append({
            "name": row["name"], "budget": row["budget"],
            **{f: int(row[f]) for f in SHAPE_FIELDS},
            "n_params_non_embedding": int(row["n_params_non_embedding"]),
            "r_mlp_attn": row["r_mlp_attn"], "d_over_sqrt_n": row["d_over_sqrt_n"],
            "gqa_group": int(row["gqa_group"]), "tokens": int(metrics["tokens_seen"]),
            "loss_column": loss_column,
            "predicted_loss": float(row["predicted_loss"]), "observed_loss": loss,
            "loss_error": loss - float(row["predicted_loss"]),
            "loss_relative_error": loss / float(row["predicted_loss"]) - 1,
            "predicted_tokens_per_s": float(row["predicted_tokens_per_s"]),
            "measured_tokens_per_s": speed,
            "throughput_relative_error": speed / float(row["predicted_tokens_per_s"]) - 1,
            "engine": measured["engine"], "device": measured["device"],
            "estimated_wall_hours": float(row["estimated_wall_hours"]),
            "wall_hours": hours_spent if math.isfinite(hours_spent) else float("nan"),
        })
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
