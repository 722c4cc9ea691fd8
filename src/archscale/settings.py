"""One typed settings object per config section, each field declaring what its value changes.

Why: which settings rerun which stage used to live in hand-kept lists in five places (the
trainer's result-free set, the rules' param dicts, the engines, the search). Here each field of
a section says, once, which stages' results it changes (`STAGES` names them); the rules' params,
the trainer's result settings and the fit rules' slices follow from those declarations
(`Section.params`), and tests/test_reruns.py checks every declaration against the params the
workflow really builds, by changing one field at a time.

Defaults are not written here: the objects are built from the schema-filled config (the schema,
src/archscale/schemas/config.schema.json, is the one place defaults live), and
`Section.from_mapping` fills a partial mapping from it, for users of the library outside a study.

Params stay plain, canonical dicts (`Section.params`): Snakemake compares only builtin values
and silently drops other objects from its rerun check.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping

from archscale.schema import fill_defaults, schema_file

#: The stages whose results a setting can change: the Snakemake rules (or families of rules)
#: whose params carry it. A field changes a stage's result exactly when it is declared for it.
STAGES: dict[str, str] = {
    "architecture": "each architecture's config.json (rule architecture_config)",
    "tokenizer": "the tokenizer (rule tokenizer)",
    "tokenize_shard": "the token shards (rule tokenize_shard)",
    "merge_shards": "train.bin, val.bin and meta.json (rule merge_shards)",
    "data_summary": "the report's data summary (rule data_summary)",
    "train": "every run's checkpoint, train_log.csv and metrics.json (rule train and its uses)",
    "runs": "which runs the study trains (the run paths and the tables that list them)",
    "evaluate": "every run's eval.json (rule evaluate and its uses)",
    "corpus_mc": "the offline multiple-choice task (rule corpus_mc)",
    "measure": "throughput measurements, of the engines whose measurement_keys name the field",
    "throughput_table": "throughput.csv and calibration.json (rule throughput_table)",
    "fit_chinchilla": "results/fits/chinchilla.json",
    "fit_conditional": "results/fits/conditional.json",
    "fit_quality": "results/fits/quality.csv (progressive extrapolation)",
    "fit_forms": "results/fits/forms.json (the law forms compared)",
    "search": "candidates.csv, pareto.csv and recommendations.json (rule search)",
    "plan": "results/plan.csv (rule plan)",
    "frontier_check": "the frontier check's selection (search.validation)",
    "gqa_plan": "the GQA step's plan (search.gqa_search)",
    "gqa_step": "each decided GQA step",
    "optimum_check": "the optimum check's plan (optimum_check)",
    "lr_check": "the learning-rate check's runs and tables (lr_check)",
    "loop_tables": "the tables of the frontier check, GQA step and optimum check runs",
    "proposals": "results/proposals.csv",
    "loop_round": "each round's decision of the closed loop (results/loop/round<k>/plan.csv)",
}

#: Stages whose params hold every resolved architecture, so a setting that changes the
#: architectures (the "architecture" stage) changes theirs too, without declaring them.
IMPLIED_STAGES: dict[str, tuple[str, ...]] = {"architecture": ("search", "plan", "proposals")}

# The rule families that read one field each, used in several declarations below.
_ALL_DATA = ("tokenizer", "tokenize_shard", "merge_shards", "data_summary")
_ALL_FITS = ("fit_chinchilla", "fit_conditional")
_LOOPS = ("frontier_check", "gqa_plan", "proposals")  # price their runs in device-hours


def changes(*stages: str, why: str = "") -> Any:
    """A field that changes the results of `stages` (none: speed or bookkeeping only)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; known: {sorted(STAGES)}")
    return field(metadata={"changes": frozenset(stages), "why": why})


class SettingsError(ValueError):
    """A section mapping with keys the schema does not know; the message names them."""


@dataclass(frozen=True)
class Section:
    """A config section as a typed object. Subclasses name their `SECTION` and declare fields."""

    SECTION: ClassVar[str]
    #: A stage's key order where its params had one before these declarations: Snakemake
    #: compares params by repr, so another order would rerun every finished study once.
    #: Holds the same keys as the declarations (tests/test_settings.py checks it).
    PARAM_ORDER: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "Section":
        """From a section mapping; keys it lacks take the schema's defaults."""
        filled = cls.complete(values)
        unknown = sorted(set(filled) - set(cls.field_names()))
        if unknown:
            raise SettingsError(f"{cls.SECTION}: unknown settings {unknown}; known: "
                                f"{', '.join(cls.field_names())}")
        missing = sorted(set(cls.field_names()) - set(filled))
        values = {**{k: None for k in missing}, **filled}
        return cls(**values)

    @classmethod
    def complete(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` with the keys it lacks taken from the schema's defaults, as a plain dict
        (what a library caller's partial settings mean; a study's are complete already)."""
        filled = copy.deepcopy(dict(values))
        fill_defaults(filled, schema_file()["properties"][cls.SECTION])
        return filled

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def changing(cls, stage: str) -> tuple[str, ...]:
        """The fields that change `stage`'s results, in declaration order."""
        if stage not in STAGES:
            raise KeyError(f"unknown stage {stage!r}; known: {sorted(STAGES)}")
        return tuple(f.name for f in fields(cls) if stage in f.metadata["changes"])

    @classmethod
    def declared(cls, name: str) -> frozenset[str]:
        """The stages field `name` declares it changes."""
        for f in fields(cls):
            if f.name == name:
                return f.metadata["changes"]
        raise KeyError(f"{cls.SECTION} has no setting {name!r}")

    def params(self, stage: str) -> dict[str, Any]:
        """The fields that change `stage`, as a plain dict (a rule's params), in sorted key
        order (a canonical config's) unless PARAM_ORDER keeps an older one."""
        keys = self.PARAM_ORDER.get(stage) or sorted(self.changing(stage))
        return {k: copy.deepcopy(getattr(self, k)) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {k: copy.deepcopy(getattr(self, k)) for k in sorted(self.field_names())}


@dataclass(frozen=True)
class DataSettings(Section):
    """`data`: the corpus, its tokenizer and the token files."""

    SECTION: ClassVar[str] = "data"
    PARAM_ORDER: ClassVar[dict[str, tuple[str, ...]]] = {
        "tokenizer": ("source", "tokenizer", "shards"),
        "tokenize_shard": ("source", "tokenizer", "shards", "val_fraction"),
        "merge_shards": ("source", "tokenizer", "val_fraction", "shards", "seq_len"),
    }
    name: str = changes("data_summary", why="names the data folder; the summary prints it")
    source: dict[str, Any] = changes(*_ALL_DATA)
    tokenizer: dict[str, Any] = changes(*_ALL_DATA, "architecture", "plan",
                                        why="vocab_size sizes the embedding and the plan's FLOPs")
    seq_len: int = changes("merge_shards", "data_summary", "architecture", "train", "evaluate",
                           "frontier_check", "gqa_plan", "proposals", "plan")
    val_fraction: float = changes("tokenize_shard", "merge_shards", "data_summary")
    shards: int = changes(*_ALL_DATA, "plan")


@dataclass(frozen=True)
class TrainingSettings(Section):
    """`training`: the optimizer, schedule and devices of every training run."""

    SECTION: ClassVar[str] = "training"
    seeds: list[int] = changes("runs", "plan", "proposals",
                               why="which runs exist (their paths), not what one run computes")
    global_batch_tokens: int = changes("train")
    micro_batch_size: int = changes(
        "plan", why="gradient accumulation sums the same sequences' gradients whatever the split: "
            "float rounding only (tests/test_train.py); the plan's GPU memory")
    lr: float = changes("train")
    lr_rule: dict[str, Any] = changes("train")
    schedule: str = changes("train")
    warmup_fraction: float = changes("train")
    decay_fraction: float = changes("train")
    min_lr_ratio: float = changes("train")
    weight_decay: float = changes("train")
    beta1: float = changes("train")
    beta2: float = changes("train")
    grad_clip: float = changes("train")
    init_std: float = changes("train")
    dtype: str = changes("train", "plan")
    compile: bool = changes(why="the same graph, compiled: speed only")
    allow_repeats: bool = changes("train")
    checkpoint_every_steps: int = changes(why="how often a resume state is written")
    log_every_steps: int = changes("train", why="the rows of train_log.csv")
    threads: int = changes(*_LOOPS, why="speed; the loops price a job in device-hours")
    gpus: int = changes(*_LOOPS, "plan", why="speed; the device-hours and memory of a job")
    nodes: int = changes("plan", why="speed: the same global batch over more devices; the plan's "
                                     "GPU memory")
    parallel: str = changes("plan", why="ddp or fsdp: float rounding only "
                                        "(tests/test_train_parallel.py); the plan's memory")
    activation_checkpointing: bool = changes("plan", why="recomputed activations: float "
                                                         "rounding only; the plan's memory")


@dataclass(frozen=True)
class EvaluationSettings(Section):
    """`evaluation`: the validation loss and the lm-eval tasks of every run."""

    SECTION: ClassVar[str] = "evaluation"
    val_tokens: int = changes("evaluate")
    tasks: list[str] = changes("evaluate", "runs", why="runs.csv has a column per task")
    corpus_mc: dict[str, Any] = changes("evaluate", "corpus_mc")
    batch_size: int = changes("evaluate")
    limit: int | None = changes("evaluate")
    threads: int = changes("frontier_check", "gqa_plan", "proposals",
                           why="speed; the loops price an evaluation in device-hours")
    harness_model: str = changes("evaluate")


@dataclass(frozen=True)
class ThroughputSettings(Section):
    """`throughput`: the measured workload, the engines and the device presets.

    "measure" is declared by every key some engine reads; which engine reads which is the
    engine's own declaration (its module's measurement_keys; tests check they agree)."""

    SECTION: ClassVar[str] = "throughput"
    engines: list[str] = changes("search", "plan", "frontier_check", "gqa_plan",
                                 why="which measurements exist; the first is the search's")
    gpu: str = changes("throughput_table", "search")
    gpus: dict[str, Any] = changes("throughput_table", "search", "plan")
    device: str = changes("measure", "search", "frontier_check", "gqa_plan")
    dtype: str = changes("measure", "search")
    batch_size: int = changes("measure", "search")
    input_len: int = changes("measure", "search")
    output_len: int = changes("measure", "search")
    warmup: int = changes("measure")
    repeats: int = changes("measure")
    seed: int = changes("measure")
    threads: int = changes("measure", "frontier_check", "gqa_plan")
    max_num_batched_tokens: int | None = changes("measure", "search")
    gpu_memory_utilization: float = changes("measure", "search")
    cuda_graph_max_batch: int | None = changes("measure", "search")
    enforce_eager: bool = changes("measure")
    max_num_seqs: int | None = changes("measure", "search")
    max_model_len: int | None = changes("measure")
    chunked_prefill_size: int | None = changes("measure")
    engine_args: dict[str, Any] = changes("measure", why="each engine's own entry, its params")


# The fit settings every law fit reads; l_opt and compute_budgets only the Chinchilla and
# conditional fits (quality and forms fix their own reference loss).
_FIT_READERS = ("fit_chinchilla", "fit_conditional", "fit_quality", "fit_forms")


@dataclass(frozen=True)
class FitSettings(Section):
    """`fit`: how the Chinchilla law and the conditional law are fitted."""

    SECTION: ClassVar[str] = "fit"
    PARAM_ORDER: ClassVar[dict[str, tuple[str, ...]]] = {
        "fit_quality": ("loss_column", "form", "r_range", "huber_delta", "size_tolerance",
                        "min_train_sizes", "n_starts"),
        "fit_forms": ("loss_column", "form", "r_range", "bootstrap", "seed", "size_tolerance",
                      "huber_delta", "n_starts", "min_train_sizes"),
    }
    loss_column: str = changes(*_FIT_READERS, "proposals", "loop_tables", "gqa_step",
                               "lr_check")
    l_opt: str = changes(*_ALL_FITS)
    form: str = changes(*_FIT_READERS)
    r_range: list[float] = changes(*_FIT_READERS, "proposals")
    huber_delta: float = changes(*_FIT_READERS)
    bootstrap: int = changes(*_ALL_FITS, "fit_forms")
    compute_budgets: list[float] = changes(*_ALL_FITS)
    seed: int = changes(*_ALL_FITS, "fit_forms")
    size_tolerance: float = changes(*_FIT_READERS, "proposals")
    n_starts: int = changes(*_FIT_READERS)
    min_train_sizes: int = changes(*_FIT_READERS)


@dataclass(frozen=True)
class SearchSettings(Section):
    """`search`: the candidate grid, the baseline and the loops that check the frontier."""

    SECTION: ClassVar[str] = "search"
    budgets: list[float] | None = changes("search")
    tokens: float | None = changes("search", "frontier_check", "gqa_plan",
                                   why="the D the search predicts at and the loops train at")
    n_params_tolerance: float = changes("search", "optimum_check")
    d_model_range: list[float] = changes("search")
    d_model_step: int = changes("search")
    ffn_multiple: int = changes("search", "gqa_plan", "optimum_check", "proposals")
    gqa_groups: list[int] = changes("search")
    baseline: dict[str, Any] = changes("search")
    engine: str | None = changes("search", "frontier_check", "gqa_plan")
    validation: dict[str, Any] = changes("frontier_check")
    gqa_search: dict[str, Any] = changes("gqa_plan", "gqa_step",
                                         why="loss_tolerance decides the steps, the rest the plan")


@dataclass(frozen=True)
class OptimumCheckSettings(Section):
    """`optimum_check`: train the shapes the headline law predicts optimal."""

    SECTION: ClassVar[str] = "optimum_check"
    enabled: bool = changes(why="whether the check's jobs exist")
    sizes: int = changes("optimum_check")


@dataclass(frozen=True)
class LrCheckSettings(Section):
    """`lr_check`: train named architectures at other multiples of their rule's lr
    (archscale.fit.lr_check)."""

    SECTION: ClassVar[str] = "lr_check"
    enabled: bool = changes(why="whether the check's jobs exist")
    architectures: list[str] = changes("lr_check")
    factors: list[float] = changes("lr_check")
    seeds: list[int] = changes("lr_check")


@dataclass(frozen=True)
class ProposalsSection(Section):
    """`proposals`: where results/proposals.csv (and so the closed loop) may place a run
    (archscale.search.proposals.CANDIDATE_PLACES)."""

    SECTION: ClassVar[str] = "proposals"
    candidates: str = changes("proposals")


@dataclass(frozen=True)
class LoopSection(Section):
    """`loop`: the closed loop's rounds, device-hour budget and targets. Its checks and
    meaning are archscale.search.design_loop.LoopSettings's, built from these values."""

    SECTION: ClassVar[str] = "loop"
    enabled: bool = changes(why="whether the loop's jobs exist")
    rounds: int = changes("loop_round")
    budget_hours: float = changes("loop_round")
    runs_per_round: int = changes("loop_round")
    target_widths: dict[str, float] = changes("loop_round")
    target_verdicts: dict[str, str] = changes("loop_round")


SECTIONS: tuple[type[Section], ...] = (DataSettings, TrainingSettings, EvaluationSettings,
                                       ThroughputSettings, FitSettings, SearchSettings,
                                       OptimumCheckSettings, LrCheckSettings, ProposalsSection,
                                       LoopSection)


@dataclass(frozen=True)
class StudySettings:
    """Every typed section of one study, built once when the study loads."""

    data: DataSettings
    training: TrainingSettings
    evaluation: EvaluationSettings
    throughput: ThroughputSettings
    fit: FitSettings
    search: SearchSettings
    optimum_check: OptimumCheckSettings
    lr_check: LrCheckSettings
    proposals: ProposalsSection
    loop: LoopSection

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "StudySettings":
        """From a schema-filled config (load_study's)."""
        return cls(**{s.SECTION: s.from_mapping(config.get(s.SECTION) or {}) for s in SECTIONS})

    def section(self, name: str) -> Section:
        return getattr(self, name)
