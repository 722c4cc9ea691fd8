"""What every throughput engine shares: settings, prompts, the timing loop and the result record.

Why one loop for all engines: the comparison between engines and architectures is only fair when
each gets the same exact-token prompts, the same warm-up and the same timed repeats, and when
every repeat is checked to have generated exactly batch * output_len tokens (an engine that stops
at an EOS would otherwise look fast).
"""
from __future__ import annotations

import abc
import importlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

import numpy as np

from archscale.architecture import Architecture
from archscale.io import write_json
from archscale.throughput.engine_defaults import EngineDefaults, Factors
from archscale.throughput.engines.registry import ENGINE_SCHEDULING, engine_class

# Config keys (throughput section) that change a measurement: the blocks engines build their
# measurement_keys from. throughput.gpu/gpus and throughput.engines only feed the model or the
# DAG, so they are in none.
COMMON_KEYS = ("device", "dtype", "batch_size", "input_len", "output_len", "warmup", "repeats",
               "seed", "threads")
SERVED_KEYS = ("max_model_len", "max_num_seqs", "max_num_batched_tokens",
               "gpu_memory_utilization", "enforce_eager", "cuda_graph_max_batch")
# Per-engine blocks of extra keyword arguments passed through to the engine's constructor
# (config.yaml: throughput.engine_args.<engine>); empty unless the study sets them.
ENGINE_ARGS_KEY = "engine_args"


class EngineUnavailable(RuntimeError):
    """The engine's package is not importable here; the message says what to install."""


class IncompleteGeneration(RuntimeError):
    """An engine generated fewer or more tokens than asked: the timing would be meaningless."""


@dataclass(frozen=True)
class MeasureSettings:
    """Everything that decides a measurement, engine-neutral; engines pin what they support."""

    batch: int
    input_len: int
    output_len: int
    dtype: str = "auto"              # auto: bfloat16 on GPU, float32 on CPU
    device: str = "auto"             # auto | cpu | cuda
    warmup: int = 1
    repeats: int = 3
    seed: int = 0
    threads: int | None = None
    max_model_len: int | None = None           # None: input_len + output_len
    max_num_seqs: int | None = None            # None: batch (all requests run at once)
    max_num_batched_tokens: int | None = None  # None: the engine's pinned prefill chunk
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    chunked_prefill_size: int | None = None    # SGLang; None: max_num_batched_tokens
    cuda_graph_max_batch: int | None = None    # None: the engine's pinned CUDA-graph limit
    engine_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("batch", "input_len", "output_len", "repeats"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"throughput setting {key} must be >= 1, got "
                                 f"{getattr(self, key)}")
        if self.warmup < 0:
            raise ValueError(f"throughput setting warmup must be >= 0, got {self.warmup}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"throughput setting device must be auto, cpu or cuda, got "
                             f"{self.device!r}")

    @property
    def model_len(self) -> int:
        return int(self.max_model_len or self.input_len + self.output_len)

    @property
    def seqs(self) -> int:
        return int(self.max_num_seqs or self.batch)

    def batched_tokens(self, engine: str) -> int:
        """Prompt tokens per prefill step as `engine` runs them (configured, else its pinned
        default: its Engine.scheduling)."""
        return ENGINE_SCHEDULING[engine].prefill_chunk(self.max_num_batched_tokens, self.batch,
                                                       self.input_len)

    def graph_max_batch(self, engine: str) -> int:
        """The largest decode batch `engine` captures CUDA graphs for: configured, else its
        pinned default, and never more than the running sequences (larger graphs would only
        cost start-up time and memory)."""
        return min(ENGINE_SCHEDULING[engine].graph_limit(self.cuda_graph_max_batch), self.seqs)

    def resolved_dtype(self, on_gpu: bool) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "bfloat16" if on_gpu else "float32"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, throughput: Mapping[str, Any], engine: str) -> "MeasureSettings":
        """From config.yaml's throughput section (only the keys that matter to `engine`)."""
        return cls.from_dict(measurement_settings(throughput, engine))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MeasureSettings":
        renames = {"batch_size": "batch"}
        kwargs = {renames.get(k, k): v for k, v in data.items()}
        unknown = set(kwargs) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown throughput settings {sorted(unknown)}")
        return cls(**kwargs)


def measurement_settings(throughput: Mapping[str, Any], engine: str) -> dict[str, Any]:
    """The slice of config.yaml's throughput section that changes `engine`'s measurement.

    The Snakemake rule passes it as params, so changing, say, gpu_memory_utilization reruns the
    vLLM and SGLang jobs but not the torch ones, and changing throughput.gpu reruns none.
    """
    keys = engine_class(engine).measurement_keys  # unknown engine: ValueError naming the known
    out = {k: throughput[k] for k in keys if throughput.get(k) is not None}
    extra = (throughput.get(ENGINE_ARGS_KEY) or {}).get(engine) or {}
    if extra:
        out["engine_args"] = dict(extra)
    return out


def make_prompts(batch: int, input_len: int, vocab_size: int, seed: int,
                 exclude: Sequence[int] = ()) -> list[list[int]]:
    """`batch` distinct prompts of exactly `input_len` token ids, seeded, avoiding `exclude`.

    Exact ids (no tokenizer, no text) make the prompt length exact on every engine; distinct
    random prompts leave nothing for a prefix cache to reuse.
    """
    allowed = np.setdiff1d(np.arange(vocab_size), np.asarray(list(exclude), dtype=np.int64))
    if allowed.size == 0:
        raise ValueError("no token ids left to build prompts from")
    rng = np.random.default_rng(seed)
    ids = allowed[rng.integers(0, allowed.size, size=(batch, input_len))]
    return ids.tolist()


@dataclass
class ThroughputResult:
    """One engine's measurement of one architecture: results/throughput/{arch}/{engine}.json."""

    engine: str
    engine_version: str
    device: str
    dtype: str
    batch: int
    input_len: int
    output_len: int
    warmup: int
    repeats: int
    times_s: list[float]
    settings: dict[str, Any]        # what was pinned in the engine (its own argument names)
    architecture: dict[str, Any]    # name and shape, from the config.json measured
    load_time_s: float = 0.0
    provenance: dict[str, Any] | None = None

    @property
    def mean_time_s(self) -> float:
        return statistics.fmean(self.times_s)

    def to_dict(self) -> dict[str, Any]:
        t = self.mean_time_s
        data = asdict(self)
        prov = data.pop("provenance")
        data.update({
            "mean_time_s": t,
            "std_time_s": statistics.stdev(self.times_s) if len(self.times_s) > 1 else 0.0,
            "total_tokens_per_s": self.batch * (self.input_len + self.output_len) / t,
            "input_tokens_per_s": self.batch * self.input_len / t,
            "output_tokens_per_s": self.batch * self.output_len / t,
            "requests_per_s": self.batch / t,
            "provenance": prov,
        })
        return data


def read_architecture(model_dir: str | Path) -> dict[str, Any]:
    """Name and shape of the HF config.json in `model_dir` (the directory is the name)."""
    model_dir = Path(model_dir)
    arch = Architecture.from_hf_config(model_dir / "config.json", name=model_dir.name)
    return {"name": arch.name, **arch.shape(), "vocab_size": arch.vocab_size,
            "tie_word_embeddings": arch.tie_word_embeddings,
            "bos_token_id": arch.bos_token_id, "eos_token_id": arch.eos_token_id}


def context_override(model_dir: str | Path, settings: MeasureSettings) -> dict[str, int]:
    """The config override an engine needs when the workload is longer than config.json allows.

    config.json's max_position_embeddings follows the training length only (raising it for a
    longer workload would retrain the study); the engines measure with it raised to the
    workload's model length instead. RoPE has no learned positions, so the override changes
    no weight and no timing, only the engines' length check.
    """
    config = json.loads((Path(model_dir) / "config.json").read_text())
    if settings.model_len > int(config.get("max_position_embeddings") or 0):
        return {"max_position_embeddings": settings.model_len}
    return {}


class Session(abc.ABC):
    """A loaded engine ready to generate; `generate` returns tokens generated per request."""

    device_name: str
    dtype: str
    settings: dict[str, Any]

    @abc.abstractmethod
    def generate(self, prompts: list[list[int]]) -> list[int]:
        ...

    def synchronize(self) -> None:
        """Wait for queued device work (engines that return only when done need nothing)."""

    def close(self) -> None:
        """Release the engine's processes and memory."""


class Engine(abc.ABC):
    """A throughput engine: how to import it, load a dummy-weight model, and generate; and what
    the rest of the study needs to know of it, declared here so that the engine is one module
    (read through archscale.throughput.engines.registry, which lists what must be declared)."""

    name: str                         # the config's and the {engine} wildcard's name
    package: str                      # what to install
    install_hint: str                 # where it lives (env file / venv)
    packages: tuple[str, ...]         # distributions whose versions each result records
    conda_env: str | None             # its env file in envs/; None: the study's own environment
    measurement_keys: tuple[str, ...]  # throughput config keys that change its measurement
    scheduling: EngineDefaults        # what it pins when it starts, and the model predicts
    default_factors: Factors          # the throughput model's factors before any calibration

    @abc.abstractmethod
    def version(self) -> str:
        """The engine's version; raises EngineUnavailable when it is not installed."""

    @abc.abstractmethod
    def open(self, model_dir: Path, settings: MeasureSettings) -> Session:
        ...

    def shape_problem(self, head_dim: int, device: str) -> str | None:
        """Why this engine cannot run a shape of `head_dim` on `device` ("cpu", "cuda",
        "auto"), or None. Checked when the study loads, so that a shape the engine has no
        kernel for is named before any job runs, not from deep inside the engine."""
        return None

    def require(self, module: str) -> ModuleType:
        """Import one of the engine's packages, or raise EngineUnavailable saying where it is."""
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise self.unavailable(exc) from exc

    def unavailable(self, exc: BaseException | None = None) -> EngineUnavailable:
        why = f" ({type(exc).__name__}: {exc})" if exc else ""
        return EngineUnavailable(
            f"throughput engine {self.name!r} needs the Python package {self.package!r}, which "
            f"cannot be imported here{why}. {self.install_hint}")

    def measure(self, model_dir: str | Path, settings: MeasureSettings,
                log: Any = None) -> ThroughputResult:
        """Load, warm up, time `repeats` runs of the whole batch; check every token count."""
        model_dir = Path(model_dir)
        version = self.version()
        arch = read_architecture(model_dir)
        prompts = make_prompts(settings.batch, settings.input_len, arch["vocab_size"],
                               settings.seed,
                               exclude={arch["bos_token_id"], arch["eos_token_id"]})
        start = time.perf_counter()
        session = self.open(model_dir, settings)
        load_time = time.perf_counter() - start
        try:
            for i in range(settings.warmup):
                self._run(session, prompts, settings)
                if log:
                    log.info("%s warm-up %d/%d done", self.name, i + 1, settings.warmup)
            times = []
            for i in range(settings.repeats):
                times.append(self._run(session, prompts, settings))
                if log:
                    log.info("%s repeat %d/%d: %.4f s", self.name, i + 1, settings.repeats,
                             times[-1])
        finally:
            session.close()
        return ThroughputResult(
            engine=self.name, engine_version=version, device=session.device_name,
            dtype=session.dtype, batch=settings.batch, input_len=settings.input_len,
            output_len=settings.output_len, warmup=settings.warmup, repeats=settings.repeats,
            times_s=times, settings=session.settings, architecture=arch,
            load_time_s=load_time)

    @staticmethod
    def _run(session: Session, prompts: list[list[int]], settings: MeasureSettings) -> float:
        session.synchronize()
        start = time.perf_counter()
        counts = session.generate(prompts)
        session.synchronize()
        elapsed = time.perf_counter() - start
        wrong = [i for i, c in enumerate(counts) if c != settings.output_len]
        if len(counts) != len(prompts) or wrong:
            raise IncompleteGeneration(
                f"expected {len(prompts)} requests of {settings.output_len} generated tokens; "
                f"got {len(counts)} requests, {len(wrong)} of the wrong length "
                f"(first counts: {counts[:8]})")
        return elapsed


def get_engine(name: str) -> Engine:
    """The engine named `name`: its module is imported now, its package only when it measures."""
    return engine_class(name)()


def shape_problems(engines: list[str], head_dims: Mapping[str, int], device: str) -> list[str]:
    """Every (engine, architecture) pair the engine cannot run on `device`, one sentence each
    (`head_dims`: architecture name -> head_dim)."""
    problems = []
    for name in engines:
        engine = get_engine(name)
        for arch, head_dim in head_dims.items():
            problem = engine.shape_problem(int(head_dim), device)
            if problem:
                problems.append(f"architecture {arch!r}: {problem}")
    return problems


def write_result(result: ThroughputResult, path: str | Path) -> None:
    write_json(path, result.to_dict())

