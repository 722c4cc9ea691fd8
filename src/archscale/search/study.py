"""Run the frontier search for a study: connect the fitted law and throughput model to search.py.

Used by the Snakemake rule `search` (scripts/search.py) and by `archscale search` (search_cli.py),
so both produce the same candidates.csv, pareto.csv and recommendations.json.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from archscale.architecture import Architecture, DTYPE_BYTES
from archscale.search.frontier import SHAPE_COLUMNS, SearchError, SizeSpec, add_accounting, run_search
from archscale.throughput.model import Calibration, Workload, predict_tokens_per_s
from archscale.throughput.devices import Device


@dataclass(frozen=True)
class SearchInputs:
    """Everything the search needs besides the candidate-space settings."""

    law: Any                    # archscale.fit.conditional.ConditionalLaw
    calibration: Calibration
    device: Device
    engine: str
    workload: Workload
    tokens: float
    vocab_size: int
    tied: bool


def sizes_from_architectures(archs: Iterable[Architecture], budgets: list[float] | None = None,
                             gap: float = 1.3) -> list[SizeSpec]:
    """Parameter budgets with the depth and head size the paper fixes per size.

    Without explicit budgets: the trained architectures grouped by N (a new group starts when N
    grows by more than `gap`x), each group's median N, most common n_layers and head_dim.
    With budgets: each budget takes the depth/head size of the architecture nearest in log N.
    """
    archs = sorted(archs, key=lambda a: a.n_params_non_embedding)
    if not archs:
        raise SearchError("the search needs at least one configured architecture")

    def mode(values: list[int]) -> int:
        return max(sorted(set(values)), key=values.count)

    if budgets:
        out = []
        for budget in budgets:
            near = min(archs, key=lambda a: abs(math.log(a.n_params_non_embedding / budget)))
            out.append(SizeSpec(float(budget), near.n_layers, near.head_dim))
        return out
    groups: list[list[Architecture]] = [[archs[0]]]
    for arch in archs[1:]:
        if arch.n_params_non_embedding > gap * groups[-1][0].n_params_non_embedding:
            groups.append([arch])
        else:
            groups[-1].append(arch)
    return [SizeSpec(float(np.median([a.n_params_non_embedding for a in g])),
                     mode([a.n_layers for a in g]), mode([a.head_dim for a in g]))
            for g in groups]


def loss_predictor(law: Any):
    def predict(n: np.ndarray, tokens: float, x: np.ndarray, r: np.ndarray) -> np.ndarray:
        return np.asarray(law.predict_at(x, r, n, np.full_like(n, tokens, dtype=float)), float)
    return predict


def throughput_predictor(inputs: SearchInputs):
    factors, _ = inputs.calibration.lookup(inputs.engine, inputs.device.name)

    def predict(shapes: dict[str, np.ndarray]) -> np.ndarray:
        return predict_tokens_per_s(shapes["d_model"], shapes["n_layers"], shapes["n_heads"],
                                    shapes["n_kv_heads"], shapes["head_dim"], shapes["ffn_dim"],
                                    shapes["vocab_size"], inputs.device, inputs.workload, factors,
                                    tie_word_embeddings=inputs.tied, kind="output")
    return predict


def proportion_baseline(x: float, r: float, gqa: int):
    """The candidate nearest to given proportions (by default LLaMA-3.2's: 0.066, 4.8, GQA 4)."""
    def pick(size: SizeSpec, scored: pd.DataFrame) -> pd.Series:
        pool = scored[scored.gqa_group == gqa]
        pool = pool if not pool.empty else scored
        dist = (np.log(pool.d_over_sqrt_n / x) ** 2 + np.log(pool.r_mlp_attn / r) ** 2
                + np.log(pool.n_params_non_embedding / size.budget) ** 2)
        return pool.loc[dist.idxmin()]
    return pick


def named_baseline(arch: Architecture, inputs: SearchInputs, fallback):
    """A configured architecture as the baseline of the size nearest to it."""
    row = pd.DataFrame([{**arch.shape(), "vocab_size": arch.vocab_size, "budget": 0.0}])

    def pick(size: SizeSpec, scored: pd.DataFrame) -> pd.Series:
        if abs(math.log(arch.n_params_non_embedding / size.budget)) > math.log(1.3):
            return fallback(size, scored)
        scored_row = score_rows(row.assign(budget=size.budget), inputs)
        return scored_row.iloc[0]
    return pick


def score_rows(frame: pd.DataFrame, inputs: SearchInputs) -> pd.DataFrame:
    """Accounting, predicted loss and throughput for explicit shapes (baselines, trained runs)."""
    out = add_accounting(frame)
    out["predicted_loss"] = loss_predictor(inputs.law)(
        out.n_params_non_embedding.to_numpy(float), inputs.tokens,
        out.d_over_sqrt_n.to_numpy(float), out.r_mlp_attn.to_numpy(float))
    shapes = {c: out[c].to_numpy() for c in SHAPE_COLUMNS + ["vocab_size"]}
    out["predicted_tokens_per_s"] = throughput_predictor(inputs)(shapes)
    return out


def search_study(settings: dict[str, Any], inputs: SearchInputs, archs: list[Architecture],
                 r_range: tuple[float, float], measured_loss: pd.DataFrame | None = None,
                 measured_speed: pd.DataFrame | None = None,
                 baseline_arch: Architecture | None = None) -> dict[str, Any]:
    """The whole search for one study; returns candidates, pareto and recommendations."""
    sizes = sizes_from_architectures(archs, settings.get("budgets"))
    base = settings["baseline"]
    pick = proportion_baseline(base["d_over_sqrt_n"], base["r_mlp_attn"], base["gqa_group"])
    if baseline_arch is not None:
        pick = named_baseline(baseline_arch, inputs, pick)
    known = pd.DataFrame([a.accounting() for a in archs])
    dtype_bytes = DTYPE_BYTES[inputs.workload.dtype]
    memory = inputs.device.memory_gb * 1e9 * inputs.workload.memory_fraction
    result = run_search(sizes, inputs.vocab_size, inputs.tokens, loss_predictor(inputs.law),
                        throughput_predictor(inputs), settings, r_range, memory,
                        inputs.workload.input_len + inputs.workload.output_len,
                        inputs.workload.batch, inputs.tied, pick, known, dtype_bytes)
    _, calibrated = inputs.calibration.lookup(inputs.engine, inputs.device.name)
    for key in ("candidates", "pareto"):
        frame = result[key]
        frame["engine"] = inputs.engine
        frame["device"] = inputs.device.name
        frame["throughput_calibrated"] = calibrated
        _attach_measurements(frame, archs, measured_loss, measured_speed, inputs)
    for rec in result["recommendations"]:
        rec.update(engine=inputs.engine, device=inputs.device.name,
                   throughput_calibrated=calibrated, workload=inputs.workload.to_dict())
    return result


def _attach_measurements(frame: pd.DataFrame, archs: list[Architecture],
                         measured_loss: pd.DataFrame | None, measured_speed: pd.DataFrame | None,
                         inputs: SearchInputs) -> None:
    """Mark rows whose exact shape was trained (loss) or measured (throughput)."""
    key = lambda row: tuple(int(row[c]) for c in SHAPE_COLUMNS)  # noqa: E731
    by_shape = {tuple(a.shape()[c] for c in SHAPE_COLUMNS): a.name for a in archs}
    names = frame.apply(lambda r: by_shape.get(key(r), ""), axis=1) if len(frame) else []
    frame["trained_architecture"] = names
    loss_map: dict[str, float] = {}
    if measured_loss is not None and not measured_loss.empty:
        at_tokens = measured_loss[measured_loss.tokens == measured_loss.tokens.max()]
        loss_map = at_tokens.groupby("name")["val_loss"].mean().to_dict()
    speed_map: dict[str, float] = {}
    if measured_speed is not None and not measured_speed.empty:
        rows = measured_speed[measured_speed.engine == inputs.engine]
        speed_map = rows.set_index("architecture")["measured_output_tokens_per_s"].to_dict() \
            if "measured_output_tokens_per_s" in rows else {}
    frame["measured_loss"] = [loss_map.get(n, np.nan) for n in frame.trained_architecture]
    frame["measured_tokens_per_s"] = [speed_map.get(n, np.nan)
                                      for n in frame.trained_architecture]
    frame["loss_source"] = np.where(frame.measured_loss.notna(), "measured", "predicted")
    frame["throughput_source"] = np.where(frame.measured_tokens_per_s.notna(), "measured",
                                          "predicted")


PARETO_COLUMNS = ["budget", "name", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                  "ffn_dim", "n_params_non_embedding", "r_mlp_attn", "d_over_sqrt_n", "gqa_group",
                  "predicted_loss", "predicted_tokens_per_s", "loss_threshold",
                  "nearest_trained", "nearest_distance", "loss_source", "measured_loss",
                  "throughput_source", "measured_tokens_per_s", "engine", "device",
                  "throughput_calibrated", "kv_bytes_per_token"]


def pareto_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in PARETO_COLUMNS if c in frame.columns]]
