"""The validation loop: train and measure a few frontier shapes the study never trained.

Why: every row of pareto.csv is an extrapolation of two fitted models (the conditional scaling
law and the calibrated throughput model). Training and measuring a handful of them checks the
extrapolation where it matters, the frontier, at a cost the user bounds. Three pieces:

1. `CostModel`: device-hours of one validation (train, evaluate, measure), fitted on the
   study's own jobs. Training wall time is a straight line in training FLOPs
   (wall_s = a + b * 6N-style FLOPs, non-negative least squares over runs.csv); evaluation and
   measurement take the median duration of the study's own evaluate and throughput jobs.
2. `choose_validations`: a pulp (CBC) binary program, a budgeted facility-location problem:
   choose shapes to train so that the frontier is covered as well as possible. Frontier point
   j is covered by a validated point i of the same budget by s_ij = max(0, 1 - d_ij / radius)
   (d in the frontier's normalised loss / log-throughput plane), weighted by the frontier arc
   length it represents; shapes the study already trained cover for free.
3. `validation_table`: predicted against observed loss and throughput, results/validation.csv.

Nothing here writes runs.csv or the fits: validation results never feed back (no cycle).
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from archscale.architecture import SHAPE_FIELDS, Architecture
from archscale.config import VALIDATION_LOSS_COLUMNS

PLAN_COLUMNS = ["name", "budget", *SHAPE_FIELDS, "n_params_non_embedding", "r_mlp_attn",
                "d_over_sqrt_n", "gqa_group", "predicted_loss", "predicted_tokens_per_s",
                "frontier_weight", "status", "covered_by", "coverage", "train_flops",
                "estimated_hours", "estimated_wall_hours"]


TABLE_COLUMNS = ["name", "budget", *SHAPE_FIELDS, "n_params_non_embedding", "r_mlp_attn",
                 "d_over_sqrt_n", "gqa_group", "tokens", "loss_column", "predicted_loss",
                 "observed_loss", "loss_error", "loss_relative_error", "predicted_tokens_per_s",
                 "measured_tokens_per_s", "throughput_relative_error", "engine", "device",
                 "estimated_wall_hours", "wall_hours"]


class ValidationError(ValueError):
    """A validation loop that cannot run as configured; the message says what to change."""


SHAPE_NAME = re.compile(r"d(\d+)-L(\d+)-h(\d+)-kv(\d+)-dh(\d+)-f(\d+)")


def shape_from_name(name: str) -> dict[str, int]:
    """The shape a search name spells (d<d_model>-L<layers>-h<heads>-kv<kv heads>-dh<head
    dim>-f<ffn dim>, archscale.search.frontier.shape_name), so a validated shape's config.json depends
    on its name alone and a new plan that picks it again reuses its training."""
    match = SHAPE_NAME.fullmatch(name)
    if not match:
        raise ValidationError(f"{name!r} is not a shape name like d64-L2-h2-kv1-dh32-f128")
    return dict(zip(SHAPE_FIELDS, map(int, match.groups())))


# ---------------------------------------------------------------------------------------------
# 1. What a validation costs
# ---------------------------------------------------------------------------------------------

def duration_s(record: Mapping[str, Any]) -> float:
    """Wall seconds between a result's provenance `started` and `finished` timestamps."""
    prov = record.get("provenance") or {}
    try:
        start = _dt.datetime.fromisoformat(prov["started"])
        end = _dt.datetime.fromisoformat(prov["finished"])
    except (KeyError, TypeError, ValueError):
        return float("nan")
    return (end - start).total_seconds()


@dataclass(frozen=True)
class CostModel:
    """Device-hours of one validation: train at `tokens`, evaluate, measure with one engine."""

    fixed_s: float            # a: start-up seconds of a training job
    s_per_flop: float         # b: seconds per training FLOP
    eval_s: float             # median evaluate job
    measure_s: float          # median throughput job of the validating engine
    train_devices: int        # GPUs of a training job (its threads on a CPU study)
    eval_devices: int
    measure_devices: int

    @classmethod
    def fit(cls, runs: pd.DataFrame, seq_len: int, eval_seconds: Iterable[float],
            measure_seconds: Iterable[float], train_devices: int, eval_devices: int,
            measure_devices: int) -> "CostModel":
        """Fit the training line on runs.csv (its wall_s and shapes), take median durations."""
        from scipy.optimize import nnls

        if runs.empty:
            raise ValidationError("runs.csv has no run to estimate validation costs from")
        flops = np.array([training_flops(row, seq_len) * float(row["tokens"])
                          for _, row in runs.iterrows()])
        wall = runs["wall_s"].to_numpy(float)
        if np.ptp(flops) > 0:
            (fixed, per_flop), _ = nnls(np.column_stack([np.ones_like(flops), flops]), wall)
        else:
            fixed, per_flop = 0.0, float(np.median(wall / flops))
        return cls(fixed_s=float(fixed), s_per_flop=float(per_flop),
                   eval_s=_median(eval_seconds, "evaluate"),
                   measure_s=_median(measure_seconds, "throughput"),
                   train_devices=int(train_devices), eval_devices=int(eval_devices),
                   measure_devices=int(measure_devices))

    def train_seconds(self, flops: float) -> float:
        return self.fixed_s + self.s_per_flop * flops

    def hours(self, flops: float) -> float:
        """Device-hours (GPU-hours; CPU thread-hours on a CPU study) of training (FLOPs),
        evaluating and measuring one shape: what the budget is spent in."""
        seconds = (self.train_seconds(flops) * self.train_devices
                   + self.eval_s * self.eval_devices + self.measure_s * self.measure_devices)
        return seconds / 3600.0

    def wall_hours(self, flops: float) -> float:
        """Wall-clock hours of the three jobs run one after the other."""
        return (self.train_seconds(flops) + self.eval_s + self.measure_s) / 3600.0


def _median(values: Iterable[float], what: str) -> float:
    finite = [v for v in values if v == v and v >= 0]
    if not finite:
        raise ValidationError(f"no {what} job of the study records its start and end time; "
                              f"rebuild them (snakemake --forcerun {what})")
    return float(np.median(finite))


def training_flops(row: Mapping[str, Any], seq_len: int) -> float:
    """Training FLOPs per token of the shape in `row` (runs.csv or pareto.csv columns)."""
    return architecture_of(row, name=str(row.get("name", "shape"))).training_flops_per_token(seq_len)


def architecture_of(row: Mapping[str, Any], name: str, **extra: Any) -> Architecture:
    """The Architecture of a table row holding the shape columns and vocab_size."""
    shape = {f: int(row[f]) for f in SHAPE_FIELDS}
    return Architecture(name=name, **shape, vocab_size=int(row["vocab_size"]), **extra)


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


def choose_validations(pareto: pd.DataFrame, hours: np.ndarray, budget_hours: float,
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
        raise ValidationError("pareto.csv has no row: nothing to validate")
    if radius <= 0:
        raise ValidationError(f"search.validation.coverage_radius must be > 0, got {radius}")
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
        raise ValidationError(f"the validation program is {pulp.LpStatus[status]}")
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


def plan_validations(pareto: pd.DataFrame, runs: pd.DataFrame, cost: CostModel,
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
    plan = choose_validations(pareto, hours, float(settings["budget_hours"]),
                              int(settings["max_architectures"]),
                              float(settings["coverage_radius"]), trained)
    plan["train_flops"] = flops
    plan["estimated_wall_hours"] = np.where(
        plan.status == "trained", 0.0, [cost.wall_hours(f) for f in flops])
    return plan[[c for c in PLAN_COLUMNS if c in plan.columns]]


def plan_summary(plan: pd.DataFrame) -> dict[str, Any]:
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

def validation_table(plan: pd.DataFrame, observed: Mapping[str, Mapping[str, Any]],
                     loss_column: str) -> pd.DataFrame:
    """One row per validated shape: predictions (from the plan), observations, errors.

    observed: name -> {"metrics": metrics.json, "eval": eval.json, "throughput": engine json}.
    `loss_column` is the fit's (train_loss or val_loss): the loss the law predicts.
    """
    rows = []
    for _, row in plan[plan.status == "validate"].iterrows():
        got = observed.get(row["name"])
        if got is None:
            raise ValidationError(f"no observation for validated shape {row['name']!r}")
        metrics, evaluation, measured = got["metrics"], got["eval"], got["throughput"]
        observed_values = {**metrics, **evaluation}   # train_loss; val_loss, val_bpb
        if not isinstance(observed_values.get(loss_column), (int, float)):
            raise ValidationError(f"fit.loss_column {loss_column!r} is in neither metrics.json "
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
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)
