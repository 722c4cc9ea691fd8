"""Roofline model of batched offline generation throughput, calibrated per (engine, device).

Why: the search stage ranks thousands of never-measured architectures by throughput, so it needs
a model that is (1) a function of the shape alone, (2) vectorised over numpy arrays of shapes
(>= 1e5 candidates/s), and (3) anchored to the measurements of the same engine and device.

The model, for a batch of B requests of S_in prompt and S_out generated tokens:
- Memory: weights (tied embeddings stored once) and an activation estimate are resident; the rest
  of `memory_fraction` of device memory is the KV pool. A paged engine (vLLM, SGLang) runs at most
  c = min(B, max_num_seqs, pool // (S_in+S_out) tokens of KV) sequences at once, in ceil(B/c)
  waves; a static-cache engine (torch) needs the whole batch's cache or cannot run it.
- Prefill: FLOPs from archscale.architecture.prefill_flops (layers, causal attention) plus the LM
  head for the one sampled position; bytes = the weights once per prefill step (chunks of
  the prefill chunk) plus the KV written.
- Decode (S_out-1 steps per wave; prefill samples the first token): per token
  forward_flops_per_token at the mean context (S_in + S_out/2; the full S_in+S_out for a static
  cache, whose attention spans the whole buffer); bytes = every layer weight and the LM head once
  per step plus each sequence's KV read once per step.
- Each phase takes max(FLOPs / (peak * compute_efficiency), bytes / (bandwidth *
  memory_efficiency)) plus a fixed cost per forward step (step_overhead_s + n_layers *
  layer_overhead_s: scheduling, sampling, kernel launches).
- The engines differ in more than their factors (each engine's declared `scheduling`, pinned
  by the engine when it runs): the prefill chunk (vLLM 16384 tokens, SGLang 8192, torch the
  whole batch) sets the prefill steps and the activation memory; decode steps with more
  running sequences than the captured CUDA graphs (vLLM 512, SGLang 256) pay eager kernel
  launches (EAGER_LAYER_LAUNCH_S per layer); SGLang's overlap scheduler hides step_overhead_s
  behind the GPU time of each phase instead of adding it.
The four efficiency factors are fitted per (engine, device) to measured runs by least squares on
log time with a weak prior towards the documented defaults (DEFAULT_FACTORS: each engine's
declared `default_factors`), so a factor the measurements cannot see stays at its default.
Where nothing was measured for an (engine, device) the defaults are used and the result is
flagged "uncalibrated".
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from archscale.architecture import (DTYPE_BYTES, Architecture, forward_flops_per_token,
                                    kv_bytes_per_token, non_embedding_params, prefill_flops)
from archscale.io import write_json
from archscale.devices import Device
from archscale.settings import ThroughputSettings
from archscale.throughput.engine_defaults import FACTOR_NAMES, EngineDefaults, Factors
from archscale.throughput.engines.registry import ENGINE_SCHEDULING, Declared, names

MODEL_ID = "roofline-prefill-decode/1"
CALIBRATION_FORMAT = "archscale-throughput-calibration/1"


# Documented defaults (used uncalibrated, and as the fit's prior). Typical values: served engines
# reach ~50-60 % of dense peak in large prefills and ~70-80 % of bandwidth in decode; with CUDA
# graphs a decode step costs well under a millisecond of scheduling and almost nothing per layer.
# HF eager generation launches every kernel from Python: milliseconds per step, ~0.4 ms per layer.
# Each engine declares its own (Engine.default_factors); this reads them through the registry.
DEFAULT_FACTORS: Mapping[str, Factors] = Declared("default_factors")

#: Where each default factor comes from (calibration.json and docs/throughput.md repeat it).
DEFAULT_FACTOR_SOURCE = ("documented typical values, not fitted to any measurement: served "
                         "engines reach 50-60 % of dense peak in large prefills and 70-80 % of "
                         "bandwidth in decode, a CUDA-graph decode step costs well under 1 ms of "
                         "scheduling; HF eager generation launches every kernel from Python "
                         "(milliseconds per step, about 0.4 ms per layer)")

#: Extra cost per layer of a decode step an engine with CUDA graphs runs eagerly (its running
#: batch exceeds the captured sizes): the kernel launches from Python, as in HF eager generation.
EAGER_LAYER_LAUNCH_S = DEFAULT_FACTORS["torch"].layer_overhead_s

# Bounds of the fitted factors (efficiencies cannot exceed 1).
_LOWER = np.log([1e-4, 1e-4, 1e-8, 1e-9])
_UPPER = np.log([1.0, 1.0, 10.0, 1.0])


@dataclass(frozen=True)
class Workload:
    """One offline batch as an engine runs it (the paper's setting is the default)."""

    batch: int = 128
    input_len: int = 4096
    output_len: int = 1024
    dtype: str = "bfloat16"
    engine: str = "vllm"
    max_num_seqs: int | None = None            # None: the batch
    max_num_batched_tokens: int | None = None  # None: the engine's pinned prefill chunk
    memory_fraction: float = 0.9
    cuda_graph_max_batch: int | None = None    # None: the engine's pinned CUDA-graph limit

    def __post_init__(self) -> None:
        if self.engine not in ENGINE_SCHEDULING:
            raise ValueError(f"unknown engine {self.engine!r}; known: {sorted(names())}")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {self.dtype!r}; known: {sorted(DTYPE_BYTES)}")
        for key in ("batch", "input_len", "output_len"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"workload {key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], got {self.memory_fraction}")

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def traits(self) -> EngineDefaults:
        return ENGINE_SCHEDULING[self.engine]

    @property
    def prefill_chunk(self) -> int:
        """Prompt tokens per prefill step: configured, else the engine's pinned default; an
        engine without chunked prefill (torch) always prefills the whole batch at once."""
        return self.traits.prefill_chunk(self.max_num_batched_tokens, self.batch, self.input_len)

    @property
    def graph_max_batch(self) -> int:
        """The largest running batch whose decode step replays a CUDA graph (0: none)."""
        return self.traits.graph_limit(self.cuda_graph_max_batch)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Workload":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    #: The keys of config.yaml's throughput section that `from_settings` reads.
    SETTINGS_KEYS = ("dtype", "batch_size", "input_len", "output_len", "max_num_seqs",
                     "max_num_batched_tokens", "gpu_memory_utilization", "cuda_graph_max_batch")

    @classmethod
    def from_settings(cls, throughput: Mapping[str, Any], engine: str,
                      on_gpu: bool = True) -> "Workload":
        """From config.yaml's throughput section (dtype 'auto': bf16 on GPU, fp32 on CPU); a
        partial section takes the schema's defaults."""
        throughput = ThroughputSettings.complete(throughput)
        dtype = throughput["dtype"]
        if dtype == "auto":
            dtype = "bfloat16" if on_gpu else "float32"
        return cls(batch=int(throughput["batch_size"]),
                   input_len=int(throughput["input_len"]),
                   output_len=int(throughput["output_len"]),
                   dtype=dtype, engine=engine,
                   max_num_seqs=throughput.get("max_num_seqs"),
                   max_num_batched_tokens=throughput.get("max_num_batched_tokens"),
                   memory_fraction=float(throughput["gpu_memory_utilization"]),
                   cuda_graph_max_batch=throughput.get("cuda_graph_max_batch"))


@dataclass(frozen=True)
class Prediction:
    """Model outputs, each an array broadcast over the input shapes."""

    time_s: np.ndarray
    prefill_s: np.ndarray
    decode_s: np.ndarray
    concurrency: np.ndarray      # sequences running at once
    waves: np.ndarray
    feasible: np.ndarray         # False where the weights and KV cannot fit
    output_tokens_per_s: np.ndarray
    total_tokens_per_s: np.ndarray


def predict(d_model, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab_size,
            device: Device, workload: Workload, factors: Factors, *,
            tie_word_embeddings=True) -> Prediction:
    """The model's prediction for every shape (ints or numpy arrays, broadcast together)."""
    d, L, h, hkv, dh, f, V = (np.asarray(x, dtype=np.float64) for x in
                              (d_model, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim,
                               vocab_size))
    tied = np.asarray(tie_word_embeddings, dtype=bool)
    w = workload
    B, s_in, s_out, nbytes = float(w.batch), float(w.input_len), float(w.output_len), w.dtype_bytes
    seq_len = s_in + s_out

    n = non_embedding_params(d, L, h, hkv, dh, f)
    head = d * V
    resident_weight_bytes = (n + head * np.where(tied, 1.0, 2.0) + (2 * L + 1) * d) * nbytes
    step_weight_bytes = (n + head) * nbytes          # the input embedding is a gather
    kv_token = kv_bytes_per_token(L, hkv, dh, nbytes)

    chunk = float(w.prefill_chunk)
    if w.traits.paged:
        max_seqs = float(w.max_num_seqs or B)
        activations = chunk * (2 * f + 4 * d) * nbytes + min(B, max_seqs) * V * 4
        pool = device.memory_bytes * w.memory_fraction - resident_weight_bytes - activations
        fits = np.floor(np.maximum(pool, 0.0) / (seq_len * kv_token))
        concurrency = np.minimum(np.minimum(B, max_seqs), fits)
        decode_context = s_in + s_out / 2
    else:
        activations = chunk * (2 * f + 4 * d) * nbytes + B * V * 4
        pool = device.memory_bytes * w.memory_fraction - resident_weight_bytes - activations
        concurrency = np.where(pool >= B * seq_len * kv_token, B, 0.0)
        decode_context = seq_len
    feasible = concurrency >= 1
    running = np.maximum(concurrency, 1.0)
    waves = np.ceil(B / running)
    prefill_steps = np.maximum(np.ceil(B * s_in / chunk), waves)
    decode_steps = waves * (s_out - 1)

    peak = device.peak_flops * factors.compute_efficiency
    bandwidth = device.bandwidth * factors.memory_efficiency
    layer_cost = L * factors.layer_overhead_s
    graphs = w.graph_max_batch
    if graphs > 0:  # decode steps whose running batch exceeds the captured graphs run eagerly
        layer_cost_decode = layer_cost + np.where(running > graphs, L * EAGER_LAYER_LAUNCH_S, 0.0)
    else:
        layer_cost_decode = layer_cost

    def phase_time(flops, nbytes, steps, per_layer):
        """GPU time, plus the per-step scheduling cost: added after each step, or (an engine
        that overlaps scheduling with the GPU) hidden behind the GPU time where shorter."""
        gpu = np.maximum(flops / peak, nbytes / bandwidth)
        scheduling = steps * factors.step_overhead_s
        if w.traits.overlap_scheduling:
            return np.maximum(gpu, scheduling) + steps * per_layer
        return gpu + scheduling + steps * per_layer

    # Prefill: the LM head runs on the sampled (last) position only.
    flops_pre = B * (prefill_flops(n, d, 0, L, h, dh, s_in) + 2 * head)
    bytes_pre = prefill_steps * step_weight_bytes + B * s_in * kv_token
    prefill_s = phase_time(flops_pre, bytes_pre, prefill_steps, layer_cost)

    tokens_dec = B * (s_out - 1)
    flops_dec = tokens_dec * forward_flops_per_token(n, d, V, L, h, dh, decode_context)
    bytes_dec = decode_steps * step_weight_bytes + tokens_dec * decode_context * kv_token
    decode_s = phase_time(flops_dec, bytes_dec, decode_steps, layer_cost_decode)

    time_s = np.where(feasible, prefill_s + decode_s, np.inf)
    return Prediction(
        time_s=time_s, prefill_s=prefill_s, decode_s=decode_s, concurrency=concurrency,
        waves=waves, feasible=feasible,
        output_tokens_per_s=np.where(feasible, B * s_out / time_s, 0.0),
        total_tokens_per_s=np.where(feasible, B * seq_len / time_s, 0.0))


def predict_tokens_per_s(d_model, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab_size,
                         device: Device, workload: Workload, factors: Factors, *,
                         tie_word_embeddings=True, kind: str = "output") -> np.ndarray:
    """Predicted tokens/s per shape: generated ('output') or prompt+generated ('total').

    0 where the model does not fit. The search stage's scoring function.
    """
    if kind not in ("output", "total"):
        raise ValueError(f"kind must be 'output' or 'total', got {kind!r}")
    p = predict(d_model, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab_size, device,
                workload, factors, tie_word_embeddings=tie_word_embeddings)
    return p.output_tokens_per_s if kind == "output" else p.total_tokens_per_s


def predict_architecture(arch: Architecture, device: Device, workload: Workload,
                         factors: Factors) -> Prediction:
    """predict() for one Architecture record (scalar arrays)."""
    return predict(arch.d_model, arch.n_layers, arch.n_heads, arch.n_kv_heads, arch.head_dim,
                   arch.ffn_dim, arch.vocab_size, device, workload, factors,
                   tie_word_embeddings=arch.tie_word_embeddings)


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    """One measured run: what was run, where, and how long one repeat took (mean)."""

    name: str
    engine: str
    device: Device
    workload: Workload
    shape: dict[str, Any]   # d_model..ffn_dim, vocab_size, tie_word_embeddings
    time_s: float

    @classmethod
    def from_result(cls, result: Mapping[str, Any], device: Device,
                    name: str | None = None) -> "Measurement":
        """From a results/throughput/{arch}/{engine}.json record (archscale.throughput.engines.base)."""
        settings = result.get("settings", {})
        workload = Workload(batch=int(result["batch"]), input_len=int(result["input_len"]),
                            output_len=int(result["output_len"]), dtype=result["dtype"],
                            engine=result["engine"],
                            max_num_seqs=settings.get("max_num_seqs"),
                            max_num_batched_tokens=settings.get("max_num_batched_tokens"),
                            memory_fraction=float(settings.get("gpu_memory_utilization", 0.9)),
                            cuda_graph_max_batch=settings.get("cuda_graph_max_batch"))
        arch = result["architecture"]
        return cls(name=name or arch.get("name", "model"), engine=result["engine"],
                   device=device, workload=workload,
                   shape={k: arch[k] for k in ("d_model", "n_layers", "n_heads", "n_kv_heads",
                                               "head_dim", "ffn_dim", "vocab_size",
                                               "tie_word_embeddings")},
                   time_s=float(result["mean_time_s"]))

    def predicted_time(self, factors: Factors) -> float:
        p = predict(**{k: v for k, v in self.shape.items() if k != "tie_word_embeddings"},
                    device=self.device, workload=self.workload, factors=factors,
                    tie_word_embeddings=self.shape.get("tie_word_embeddings", True))
        return float(p.time_s)


@dataclass(frozen=True)
class CalibrationEntry:
    engine: str
    device: str
    factors: Factors
    n_measurements: int
    rms_log_error: float          # in-sample RMS of log(predicted/measured time)
    measurements: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        fitted = (f"fitted to the {self.n_measurements} measurement(s) of {self.engine} on "
                  f"{self.device} listed here: least squares on log time, with a weak prior "
                  "toward the default (a factor the measurements cannot see stays near it)")
        return {"engine": self.engine, "device": self.device, "calibrated": True,
                "n_measurements": self.n_measurements, "rms_log_error": self.rms_log_error,
                "factors": self.factors.to_dict(),
                "factor_sources": {name: fitted for name in FACTOR_NAMES},
                "measurements": list(self.measurements)}


@dataclass
class Calibration:
    """Fitted factors per (engine, device); lookups fall back to the defaults, uncalibrated."""

    entries: dict[tuple[str, str], CalibrationEntry] = field(default_factory=dict)
    defaults: dict[str, Factors] = field(default_factory=lambda: dict(DEFAULT_FACTORS))

    def lookup(self, engine: str, device: str) -> tuple[Factors, bool]:
        """(factors, calibrated): the fitted factors, or the engine's defaults and False."""
        entry = self.entries.get((engine, device))
        if entry is not None:
            return entry.factors, True
        if engine not in self.defaults:
            raise KeyError(f"no default factors for engine {engine!r}; "
                           f"known: {sorted(self.defaults)}")
        return self.defaults[engine], False

    def to_dict(self) -> dict[str, Any]:
        return {"format": CALIBRATION_FORMAT, "model": MODEL_ID,
                "entries": [e.to_dict() for _, e in sorted(self.entries.items())],
                "defaults": {k: v.to_dict() for k, v in sorted(self.defaults.items())},
                "defaults_source": DEFAULT_FACTOR_SOURCE,
                "engine_scheduling": {k: {**asdict(v)}
                                      for k, v in sorted(ENGINE_SCHEDULING.items())},
                "eager_layer_launch_s": {"value": EAGER_LAYER_LAUNCH_S,
                                         "source": "the torch engine's default layer_overhead_s: "
                                                   "kernels launched from Python"}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        if data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"not a throughput calibration (format {data.get('format')!r}, "
                             f"expected {CALIBRATION_FORMAT!r})")
        entries = {}
        for e in data.get("entries", []):
            entry = CalibrationEntry(engine=e["engine"], device=e["device"],
                                     factors=Factors(**e["factors"]),
                                     n_measurements=int(e["n_measurements"]),
                                     rms_log_error=float(e["rms_log_error"]),
                                     measurements=tuple(e.get("measurements", ())))
            entries[(entry.engine, entry.device)] = entry
        defaults = dict(DEFAULT_FACTORS)
        defaults.update({k: Factors(**v) for k, v in data.get("defaults", {}).items()})
        return cls(entries=entries, defaults=defaults)


def load_calibration(path: str | Path | None) -> Calibration:
    """Read a calibration JSON; None gives an empty (all-defaults, uncalibrated) calibration."""
    if path is None:
        return Calibration()
    return Calibration.from_dict(json.loads(Path(path).read_text()))


def save_calibration(calibration: Calibration, path: str | Path,
                     extra: Mapping[str, Any] | None = None) -> None:
    """Write atomically; `extra` (e.g. provenance) is stored beside the fitted entries."""
    write_json(path, {**calibration.to_dict(), **(extra or {})})


PRIOR_WEIGHT = 0.1            # a decade away from the default costs as much as a ~10 % misfit
PRIOR_DECADE = math.log(10.0)


def _fit_group(group: Sequence[Measurement], prior: Factors) -> Factors:
    from scipy.optimize import least_squares  # local: prediction must not need scipy

    theta0 = np.clip(prior.to_log(), _LOWER, _UPPER)
    measured = np.log([m.time_s for m in group])

    def residuals(theta: np.ndarray) -> np.ndarray:
        factors = Factors.from_log(theta)
        predicted = np.log([m.predicted_time(factors) for m in group])
        return np.concatenate([predicted - measured,
                               PRIOR_WEIGHT * (theta - theta0) / PRIOR_DECADE])

    if not np.all(np.isfinite(residuals(theta0))):
        bad = [m.name for m in group if not math.isfinite(m.predicted_time(prior))]
        raise ValueError(f"the throughput model says {bad} cannot fit on device "
                         f"{group[0].device.name!r} (memory), yet they were measured: check "
                         "the device preset (throughput.gpu / throughput.gpus)")
    fit = least_squares(residuals, theta0, bounds=(_LOWER, _UPPER), method="trf",
                        x_scale=1.0, max_nfev=2000)
    return Factors.from_log(fit.x)


def fit_factors(measurements: Iterable[Measurement],
                defaults: Mapping[str, Factors] | None = None) -> Calibration:
    """Fit the factors of every (engine, device) that has measurements."""
    defaults = dict(defaults or DEFAULT_FACTORS)
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        if not (m.time_s > 0 and math.isfinite(m.time_s)):
            raise ValueError(f"measurement {m.name!r} ({m.engine}) has time {m.time_s}")
        groups.setdefault((m.engine, m.device.name), []).append(m)
    entries = {}
    for (engine, device), group in sorted(groups.items()):
        factors = _fit_group(group, defaults[engine])
        errors = np.log([m.predicted_time(factors) / m.time_s for m in group])
        entries[(engine, device)] = CalibrationEntry(
            engine=engine, device=device, factors=factors, n_measurements=len(group),
            rms_log_error=float(np.sqrt(np.mean(errors ** 2))),
            measurements=tuple(m.name for m in group))
    return Calibration(entries=entries, defaults=defaults)


def leave_one_out(measurements: Sequence[Measurement],
                  defaults: Mapping[str, Factors] | None = None) -> list[tuple[float, bool]]:
    """For each measurement: (predicted time with it left out of the fit, calibrated?).

    A measurement alone in its (engine, device) is predicted from the defaults (uncalibrated).
    """
    out = []
    for i, m in enumerate(measurements):
        rest = [o for j, o in enumerate(measurements)
                if j != i and (o.engine, o.device.name) == (m.engine, m.device.name)]
        factors, calibrated = fit_factors(rest, defaults).lookup(m.engine, m.device.name)
        out.append((m.predicted_time(factors), calibrated))
    return out
