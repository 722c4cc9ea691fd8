"""The frontier search of a study: connect the fitted law and the throughput model to Eq. 4
(archscale.search.frontier).

`run_study_search` is the one entry point: the Snakemake rule `search` (scripts/search.py) and
`archscale search` (archscale.cli.search) both describe their search as a `SearchSettings` and
call it, and both write its result with archscale.search.outputs, so both produce the same
candidates.csv, pareto.csv and recommendations.json.

The candidates' r = MLP/attention range is the law's own: the r span of the runs it was fitted
on (`law.r_fitted`, conditional.json's optimum.r_fitted; for the published law, the paper's
fitting range). Outside it the law's r factor was never fitted, so no candidate is scored there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import pandas as pd

from archscale.architecture import DTYPE_BYTES, SHAPE_FIELDS, Architecture, shape_name
from archscale.config import search_engine
from archscale.search.frontier import (SearchError, SearchProblem, SizeSpec, add_accounting,
                                       run_search, shape_names)
from archscale.devices import Device, get_device
from archscale.throughput.model import Calibration, Workload, predict_tokens_per_s

if TYPE_CHECKING:
    from archscale.config import Study


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
            out.append(SizeSpec(float(round(budget)), near.n_layers, near.head_dim))
        return out
    groups: list[list[Architecture]] = [[archs[0]]]
    for arch in archs[1:]:
        if arch.n_params_non_embedding > gap * groups[-1][0].n_params_non_embedding:
            groups.append([arch])
        else:
            groups[-1].append(arch)
    # a budget is a parameter count: a group's median rounds to a whole one
    return [SizeSpec(float(round(np.median([a.n_params_non_embedding for a in g]))),
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
    shapes = {c: out[c].to_numpy() for c in list(SHAPE_FIELDS) + ["vocab_size"]}
    out["predicted_tokens_per_s"] = throughput_predictor(inputs)(shapes)
    return out


def law_r_range(law: Any) -> tuple[float, float]:
    """The r span the law was fitted on: the candidates' r limits."""
    span = getattr(law, "r_fitted", None)
    if span is None:
        raise SearchError("the conditional law records no fitted r range (optimum.r_fitted in "
                          "conditional.json), so the search cannot tell where its r factor "
                          "holds; refit it with `archscale fit conditional` or the workflow's "
                          "fit rule, which record the range")
    low, high = (float(v) for v in span)
    return low, high


def search_study(settings: dict[str, Any], inputs: SearchInputs, archs: list[Architecture],
                 measured_loss: pd.DataFrame | None = None,
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
    result = run_search(SearchProblem(
        sizes=sizes, vocab_size=inputs.vocab_size, tokens=inputs.tokens,
        loss=loss_predictor(inputs.law), throughput=throughput_predictor(inputs),
        settings=settings, r_range=law_r_range(inputs.law), memory_bytes=memory,
        workload_tokens_per_seq=inputs.workload.input_len + inputs.workload.output_len,
        batch=inputs.workload.batch, tied=inputs.tied, baseline_for=pick, known=known,
        dtype_bytes=dtype_bytes,
        baseline_gqa_group=(baseline_arch.gqa_group if baseline_arch is not None
                            else int(base["gqa_group"]))))
    _, calibrated = inputs.calibration.lookup(inputs.engine, inputs.device.name)
    for key in ("candidates", "pareto"):
        frame = result[key]
        frame["engine"] = inputs.engine
        frame["device"] = inputs.device.name
        frame["throughput_calibrated"] = calibrated
        frame["law_range"] = law_range(frame, inputs.law)
        _attach_measurements(frame, archs, measured_loss, measured_speed, inputs)
    for rec in result["recommendations"]:
        rec.update(engine=inputs.engine, device=inputs.device.name,
                   throughput_calibrated=calibrated, workload=inputs.workload.to_dict())
        rec["loss_change_vs_baseline"] = loss_change_intervals(rec, inputs.law, inputs.tokens)
        rec["warnings"] = (range_warnings(rec, inputs.law) + gqa_warnings(rec)
                           + ([] if baseline_arch is not None else
                              baseline_warnings(base["r_mlp_attn"], inputs.law)))
    return result


#: The picks of a recommendation that a user may act on (archscale.search.frontier).
PICKS = ("baseline", "most_accurate", "fastest_at_baseline_loss",
         "fastest_at_baseline_loss_after_gqa_search")


def _range_status(x: np.ndarray, r: np.ndarray, law: Any) -> np.ndarray:
    x_span, r_span = getattr(law, "x_fitted", None), getattr(law, "r_fitted", None)
    if x_span is None or r_span is None:
        return np.full(len(x), "unknown", dtype=object)
    out_x = (x < x_span[0]) | (x > x_span[1])
    out_r = (r < r_span[0]) | (r > r_span[1])
    return np.select([out_x & out_r, out_x, out_r],
                     ["outside x and r", "outside x", "outside r"], "inside").astype(object)


def baseline_warnings(requested_r: float, law: Any) -> list[str]:
    """A sentence when the baseline's requested r lies outside the candidates' r range (the
    law's fitted span): the baseline is then the nearest candidate inside it, another shape
    than the one asked for."""
    low, high = law_r_range(law)
    if low <= requested_r <= high:
        return []
    return [f"the baseline's requested r_mlp_attn {requested_r:.3g} (search.baseline) lies "
            f"outside the r span the law was fitted on ({low:.3g}-{high:.3g}), where the search "
            "scores candidates, so the baseline is the nearest shape inside it; train shapes at "
            "that r, or name a configured architecture as search.baseline.architecture"]


def speed_warnings(rec: dict[str, Any], error: Mapping[str, Any] | None) -> list[str]:
    """A sentence when the predicted speed-up over the baseline is smaller than the throughput
    model's mean leave-one-out error for the engine: the model cannot tell the two apart."""
    speedup = rec.get("speedup_vs_baseline")
    mean = (error or {}).get("mean_abs_relative_error")
    if not isinstance(speedup, (int, float)) or not isinstance(mean, (int, float)):
        return []
    if abs(speedup - 1.0) >= mean:
        return []
    return [f"the predicted speed-up over the baseline ({speedup:.3f}x) is smaller than the "
            f"throughput model's mean leave-one-out error for {rec.get('engine')} "
            f"({100 * mean:.0f} % over {error.get('n_measurements', '?')} measurements), so the "
            "model cannot tell the two apart; measure both (search.validation) before "
            "relying on it"]


def loss_change_intervals(rec: dict[str, Any], law: Any, tokens: float
                          ) -> dict[str, dict[str, float]]:
    """Per pick other than the baseline: its predicted loss minus the baseline's, and the
    percentile interval of that change over the law's bootstrap refits (each refit predicts
    both shapes, so what the refits share cancels). Without refits (no fit.bootstrap, or the
    published law) only the predicted change is given."""
    base = rec.get("baseline")
    if not base:
        return {}
    picks = {key: rec[key] for key in PICKS[1:] if rec.get(key)}
    out = {key: {"predicted": float(pick["predicted_loss"]) - float(base["predicted_loss"])}
           for key, pick in picks.items()}
    refit_predictions = getattr(law, "refit_predictions_at", None)
    if not picks or refit_predictions is None:
        return out
    shapes = pd.DataFrame([base, *picks.values()])
    losses = refit_predictions(shapes["d_over_sqrt_n"].to_numpy(float),
                               shapes["r_mlp_attn"].to_numpy(float),
                               shapes["n_params_non_embedding"].to_numpy(float),
                               np.full(len(shapes), float(tokens)))
    if losses is None:
        return out
    level = float(law.refit_level)
    for i, key in enumerate(picks, start=1):
        change = losses[:, i] - losses[:, 0]
        change = change[np.isfinite(change)]
        if len(change) == 0:
            continue
        low, high = np.quantile(change, [(1 - level) / 2, (1 + level) / 2])
        out[key].update(low=float(low), high=float(high), level=level,
                        n_refits=int(len(change)))
    return out


def gqa_warnings(rec: dict[str, Any]) -> list[str]:
    """One sentence per pick whose GQA group differs from the baseline's: the law has no GQA
    term, so its loss at that group is untested."""
    return [f"{key} {rec[key]['name']} has GQA group {rec[key]['gqa_group']}, not the "
            f"baseline's {rec['baseline_gqa_group']}: untested, since the law has no GQA term "
            "and predicts its loss as if GQA changed nothing; measure it with the GQA search "
            "(search.gqa_search) before relying on it"
            for key in PICKS if key in rec and rec[key].get("gqa_status") == "untested"]


def law_range(frame: pd.DataFrame, law: Any) -> np.ndarray:
    """Per row: "inside" the x and r spans the law was fitted on, "outside x", "outside r",
    "outside x and r", or "unknown" (a law that stores no spans, such as the published one).
    Outside, the predicted loss extrapolates the law."""
    return _range_status(frame["d_over_sqrt_n"].to_numpy(float),
                         frame["r_mlp_attn"].to_numpy(float), law)


def range_warnings(rec: dict[str, Any], law: Any) -> list[str]:
    """One sentence per pick of a recommendation whose shape lies outside the fitted spans."""
    warnings = []
    for key in PICKS:
        pick = rec.get(key)
        if not pick:
            continue
        status = _range_status(np.array([pick["d_over_sqrt_n"]]), np.array([pick["r_mlp_attn"]]),
                               law)[0]
        pick["law_range"] = status
        if status.startswith("outside"):
            warnings.append(
                f"{key} {pick['name']} (x = {pick['d_over_sqrt_n']:.3g}, r = "
                f"{pick['r_mlp_attn']:.3g}) lies {status} of the fitted range (x "
                f"{law.x_fitted[0]:.3g}-{law.x_fitted[1]:.3g}, r {law.r_fitted[0]:.3g}-"
                f"{law.r_fitted[1]:.3g}): its predicted loss extrapolates the law; train it "
                "(search.validation) before relying on it")
    return warnings


def _attach_measurements(frame: pd.DataFrame, archs: list[Architecture],
                         measured_loss: pd.DataFrame | None, measured_speed: pd.DataFrame | None,
                         inputs: SearchInputs) -> None:
    """Mark rows whose exact shape was trained (loss) or measured (throughput)."""
    by_shape = {shape_name(a.shape()): a.name for a in archs}
    frame["trained_architecture"] = [by_shape.get(n, "") for n in shape_names(frame)]
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
                  "throughput_calibrated", "law_range", "gqa_status", "kv_bytes_per_token"]


def pareto_columns(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in PARETO_COLUMNS if c in frame.columns]]


@dataclass(frozen=True)
class SearchSettings:
    """One search as a study describes it: the config's sections and what was fitted."""

    search: Mapping[str, Any]          # the config's search section (schema defaults filled)
    throughput: Mapping[str, Any]      # the throughput section: engines, gpu, gpus, workload
    architectures: list[Architecture]  # sizes, depth and head size, the nearest-trained column
    tokens: float                      # training tokens D the loss is predicted at
    law: Any                           # archscale.fit.conditional.ConditionalLaw
    calibration: Calibration
    engine: str | None = None          # None: search.engine, else the first throughput engine
    gpu: str | None = None             # a device preset; None: throughput.gpu on throughput.device
    # the calibration file's leave_one_out block ({engine: {mean_abs_relative_error, ...}}):
    # a predicted speed-up smaller than that error gets a warning
    throughput_error: Mapping[str, Any] | None = None


def search_inputs(settings: SearchSettings) -> SearchInputs:
    """The device, engine and workload a search predicts throughput for."""

    tp = settings.throughput
    engine = settings.engine or search_engine(settings.search, tp)
    if settings.gpu:   # a preset named outright: served on a GPU unless it is the cpu preset
        gpu, on_gpu = settings.gpu, settings.gpu != "cpu"
    else:
        gpu, on_gpu = tp["gpu"], tp["device"] != "cpu"
    archs = settings.architectures
    return SearchInputs(law=settings.law, calibration=settings.calibration,
                        device=get_device(gpu, tp.get("gpus")), engine=engine,
                        workload=Workload.from_settings(tp, engine, on_gpu=on_gpu),
                        tokens=float(settings.tokens), vocab_size=archs[0].vocab_size,
                        tied=archs[0].tie_word_embeddings)


def run_study_search(settings: SearchSettings, runs: pd.DataFrame | None = None,
                     measured: pd.DataFrame | None = None) -> tuple[dict[str, Any], SearchInputs]:
    """The whole search of one study; returns its result (search_study's) and its inputs.

    runs, measured: runs.csv and throughput.csv, to mark the shapes that were trained or
    measured (the Snakemake rule has them; the command line has not).
    """
    inputs = search_inputs(settings)
    base_name = settings.search["baseline"].get("architecture")
    baseline = next((a for a in settings.architectures if a.name == base_name), None)
    result = search_study(dict(settings.search), inputs, settings.architectures, runs,
                          measured, baseline)
    error = (settings.throughput_error or {}).get(inputs.engine)
    for rec in result["recommendations"]:
        rec["warnings"] += speed_warnings(rec, error)
    return result, inputs


def search_rule_params(study: "Study") -> dict[str, Any]:
    """What changes the search's result (the Snakemake rule's params): the search and
    throughput settings that declare the "search" stage (archscale.settings: the workload and
    device of the throughput model, not the frontier check's or the GQA step's settings), the
    token budget the loss is predicted at and the architectures (for the sizes and the
    nearest-trained column). The r range comes with the law (its input conditional.json)."""
    settings = study.settings
    return {
        "search": settings.search.params("search"),
        "throughput": settings.throughput.params("search"),
        "tokens": study.search_tokens(),
        "architectures": {n: a.to_dict() for n, a in study.architectures.items()},
    }
