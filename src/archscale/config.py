"""Load, validate and resolve a study's config.yaml.

The same checks run inside Snakemake (rules/common.smk) and when the library is used on its own,
so a bad config fails the same way everywhere: at load time, with a message naming the
architecture (or section) and the field, before any job starts and before anything is lost.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

from archscale.architecture import (Architecture, ArchitectureError, ShapeTargets, shape_from_name,
                                    solve_shape)
from archscale.devices import known_devices
from archscale.schema import fill_defaults, schema_file
from archscale.settings import StudySettings
from archscale.throughput.engines.registry import names as engine_names

# The fit's loss columns the validation loop and the optimum check can observe on a run they
# train (metrics.json, eval.json); archscale.search.frontier_check compares the prediction with
# one of them.
VALIDATION_LOSS_COLUMNS = ("train_loss", "val_loss", "val_bpb")

# The fewest optimizer steps a token budget may make (see _check_budgets_fill_steps).
MIN_OPTIMIZER_STEPS = 4

EXPLICIT_FIELDS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim")

# Bounds on what an architecture may ask for. Planning solves each targeted shape by scanning
# d_model over +-15 % of x * sqrt(N) (archscale.architecture.solve_shape: ~1 s at 16384, 65 s
# per dry run at N = 1e15), and a training job asks SLURM for 24 bytes a parameter on one node
# (archscale.costs.training_memory_mb: 2.4 TB at 1e11, 24 TB at 1e12). 1e11 is 30 times the
# paper's largest size (3B), and 16384 is LLaMA-3.1-405B's width.
MAX_N_PARAMS = 1e11
MAX_D_MODEL = 16384


class ConfigError(ValueError):
    """config.yaml is malformed; the message names the field and how to fix it."""


def schema() -> dict[str, Any]:
    """The JSON schema of config.yaml, with the enums that registries own filled in: fit.form
    lists the law forms registered in archscale.fit.forms at the time of the call."""
    from archscale.fit import forms  # numpy only; the registry, not a list kept here

    filled = copy.deepcopy(schema_file())
    filled["properties"]["fit"]["properties"]["form"]["enum"] = list(forms.names())
    return filled


def _describe_path(config: dict[str, Any], path: list[Any]) -> str:
    """Render a jsonschema error path, naming architectures by their name."""
    parts: list[str] = []
    node: Any = config
    for i, key in enumerate(path):
        if isinstance(key, int):
            label = f"[{key}]"
            if i == 1 and path[0] == "architectures" and isinstance(node, list) \
                    and key < len(node) and isinstance(node[key], dict) and "name" in node[key]:
                label = f"[{key}] (architecture {node[key]['name']!r})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return "".join(parts) or "<top level>"


def search_engine(search: Mapping[str, Any], throughput: Mapping[str, Any]) -> str:
    """The engine the search predicts throughput for (and the frontier check measures with):
    search.engine when set, else the first of throughput.engines."""
    return search.get("engine") or throughput["engines"][0]


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _schema_error_lines(config: dict[str, Any], errors: list[Any],
                        prefix: list[Any] | None = None, source: str = "") -> list[str]:
    """One line per schema error: where it is (architectures by name), what is wrong, the fix."""
    lines = []
    for err in sorted(errors, key=lambda e: list(map(str, e.path))):
        path = list(err.path)
        where = _describe_path(config, (prefix or []) + path)
        msg = err.message
        if err.validator == "additionalProperties":
            msg += " (unknown key: check its spelling against config.yaml's documented keys)"
        if err.validator in ("pattern", "maximum") and err.schema.get("description"):
            msg += f" ({err.schema['description']})"
        if err.validator == "uniqueItems":
            msg += " (each value names its own runs: remove the repeat)"
        if err.validator == "type" and isinstance(err.instance, str) and _looks_numeric(
                err.instance):
            msg += (" (--config reads the items of a list as text: set lists in the config "
                    "file)" if "--config" in source else
                    " (YAML reads 1e5 or 1.0e5 as text: write 100000 or 1.0e+5)")
        lines.append(f"  - {where}: {msg}")
    return lines


def _training_override_errors(config: dict[str, Any], source: str,
                              validator: jsonschema.Draft202012Validator) -> list[str]:
    """Check each architecture's `training:` overrides as the merged settings its jobs get, so
    a wrong type or a misspelt key fails at load time, before a job deletes anything. Runs
    after the study's own training section passed, so every error here is the override's."""
    lines = []
    for i, spec in enumerate(config["architectures"]):
        override = spec.get("training") or {}
        if not override:
            continue
        merged = {**config.get("training", {}), **override}
        errors = [e for e in validator.iter_errors({**config, "training": merged})
                  if list(e.path)[:1] == ["training"]]
        for err in errors:
            err.path.popleft()
        lines += _schema_error_lines(config, errors, ["architectures", i, "training"], source)
    return lines


def check_schema(config: dict[str, Any], source: str = "config.yaml") -> dict[str, Any]:
    """Validate against the schema and fill defaults; returns a new dict.

    Raises ConfigError with every problem found, each naming its field; `source` names the
    file (or files and --config overrides) the config came from.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"{source} must be a mapping of sections (data, architectures, "
                          f"token_budgets, ...), got {type(config).__name__}")
    full = schema()
    validator = jsonschema.Draft202012Validator(full)
    lines = _schema_error_lines(config, list(validator.iter_errors(config)), source=source)
    if not lines:
        lines = _training_override_errors(config, source, validator)
    if lines:
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(lines))
    config = copy.deepcopy(config)
    fill_defaults(config, full)
    return config


@dataclass(frozen=True)
class Study:
    """A validated config with its architectures resolved to explicit shapes."""

    config: dict[str, Any]
    architectures: dict[str, Architecture]

    @cached_property
    def settings(self) -> StudySettings:
        """The config's sections as typed objects (archscale.settings): each field declares
        which stages' results it changes, and the rules' params follow from that."""
        return StudySettings.from_config(self.config)


    def token_budgets(self, arch: str) -> list[int]:
        spec = self.arch_spec(arch)
        return [int(t) for t in spec.get("token_budgets") or self.config["token_budgets"]]

    def arch_spec(self, arch: str) -> dict[str, Any]:
        for spec in self.config["architectures"]:
            if spec["name"] == arch:
                return spec
        raise KeyError(f"no architecture named {arch!r} in config.yaml")

    def training_settings(self, arch: str) -> dict[str, Any]:
        """The training section with this architecture's overrides applied (canonical, so the
        same settings give the same Snakemake params whatever the keys' order)."""
        settings = copy.deepcopy(self.config["training"])
        settings.update(self.arch_spec(arch).get("training") or {})
        return canonical(settings)

    def runs(self) -> list[tuple[str, int, int]]:
        """Every (architecture, token budget, seed) the study trains."""
        return [(a, t, s) for a in self.architectures for t in self.token_budgets(a)
                for s in self.training_settings(a)["seeds"]]

    def search_tokens(self) -> int:
        """The token budget D the search predicts the loss at (and the frontier check trains
        at): search.tokens, else the study's largest token budget."""
        return int(self.config["search"]["tokens"]
                   or max(t for a in self.architectures for t in self.token_budgets(a)))

    def named_architecture(self, name: str) -> Architecture:
        """A configured architecture by its name, else the shape a shape name spells out (a
        run the closed loop trains is either)."""
        return self.architectures[name] if name in self.architectures else \
            self.shape_architecture(name)

    def named_training_settings(self, name: str) -> dict[str, Any]:
        """A configured architecture's training settings, its overrides applied; a shape that
        is only a name has none: the training section."""
        return self.training_settings(name) if name in self.architectures else \
            self.config["training"]

    def shape_architecture(self, name: str) -> Architecture:
        """A shape the search named (d64-L2-...), resolved as a configured architecture of that
        shape would be: its config.json depends on the name and the study's defaults only."""
        return resolve_architecture({"name": name, **shape_from_name(name)}, self.config)

    def search_engine(self) -> str:
        """The engine the search predicts throughput for (see `search_engine`)."""
        return search_engine(self.config["search"], self.config["throughput"])

    def target_misses(self) -> list[str]:
        """One sentence per architecture given by targets whose shape misses its x or r target
        by more than targets.tolerance (N is held to it already, or the study fails to load).
        Integer heads and MLP widths can leave a small model far from its targets: n64-r16's
        nearest shape has r 11.25, so its name promises more than its shape holds."""
        misses = []
        for spec in self.config["architectures"]:
            targets = spec.get("targets")
            if not targets:
                continue
            arch = self.architectures[spec["name"]]
            tolerance = float(targets.get("tolerance", 0.02))
            parts = []
            for label, key, got in (("x", "d_over_sqrt_n", arch.d_over_sqrt_n),
                                    ("r", "r_mlp_attn", arch.r_mlp_attn)):
                want = float(targets[key])
                off = got / want - 1
                if abs(off) > tolerance:
                    parts.append(f"{label} {got:.3g} for {want:g} ({off:+.0%})")
            if parts:
                misses.append(f"{spec['name']}: {', '.join(parts)}; tolerance {tolerance:.0%}")
        return misses


def max_position_embeddings(spec: dict[str, Any], config: dict[str, Any]) -> int:
    """The context length written into one architecture's config.json.

    It depends on the training sequence length only, never on the throughput workload or the
    evaluation lengths: config.json is an input of every training run, so tying it to those
    would retrain the study when a measurement setting changes. The throughput engines and the
    evaluation raise the limit in their own copy of the config when they need more (RoPE has no
    learned positions, so this changes nothing they compute).
    """
    seq_len = int(config["data"]["seq_len"])
    if "max_position_embeddings" in spec:
        value = int(spec["max_position_embeddings"])
        if value < seq_len:
            raise ConfigError(
                f"architecture {spec['name']!r}: max_position_embeddings ({value}) is shorter "
                f"than data.seq_len ({seq_len}), the length it is trained on; raise it or drop it")
        return value
    default = config["architecture_defaults"].get("max_position_embeddings", 2048)
    return max(int(default), seq_len)


def resolve_architecture(spec: dict[str, Any], config: dict[str, Any]) -> Architecture:
    """Turn one architectures[] entry into an explicit Architecture."""
    name = spec["name"]
    defaults = config["architecture_defaults"]
    tok = config["data"]["tokenizer"]
    given = [f for f in EXPLICIT_FIELDS if f in spec]
    if "targets" in spec:
        extra = [f for f in given if f not in ("n_layers", "head_dim")]
        if extra or "n_layers" not in spec or "head_dim" not in spec:
            raise ConfigError(
                f"architecture {name!r}: with targets give n_layers and head_dim only "
                f"(found {given}); the other shape fields are solved from the targets")
        t = spec["targets"]
        _check_targets_bounds(name, float(t["n_params"]), float(t["d_over_sqrt_n"]))
        shape = solve_shape(ShapeTargets(
            n_params=float(t["n_params"]), d_over_sqrt_n=float(t["d_over_sqrt_n"]),
            r_mlp_attn=float(t["r_mlp_attn"]), gqa_group=int(t["gqa_group"]),
            n_layers=int(spec["n_layers"]), head_dim=int(spec["head_dim"]),
            ffn_multiple=int(t.get("ffn_multiple", 64)), tolerance=float(t.get("tolerance", 0.02))),
            name=name)
    else:
        missing = [f for f in EXPLICIT_FIELDS if f not in spec]
        if missing:
            raise ConfigError(
                f"architecture {name!r}: missing {', '.join(missing)}; give all of "
                f"{', '.join(EXPLICIT_FIELDS)} or n_layers, head_dim and targets")
        shape = {f: spec[f] for f in EXPLICIT_FIELDS}
    arch = Architecture(
        name=name, **shape, vocab_size=tok["vocab_size"],
        tie_word_embeddings=spec.get("tie_word_embeddings", defaults["tie_word_embeddings"]),
        rope_theta=float(spec.get("rope_theta", defaults["rope_theta"])),
        rms_norm_eps=float(spec.get("rms_norm_eps", defaults["rms_norm_eps"])),
        max_position_embeddings=max_position_embeddings(spec, config),
        bos_token_id=tok["bos_token_id"], eos_token_id=tok["eos_token_id"])
    if arch.n_params_non_embedding > MAX_N_PARAMS:
        raise ConfigError(
            f"architecture {name!r}: its shape has N = {arch.n_params_non_embedding:.3g} "
            f"non-embedding parameters, above the bound {MAX_N_PARAMS:.0e} (30 times the "
            "paper's largest size; a training job would ask for 24 bytes a parameter on one "
            "node): shrink d_model, n_layers or ffn_dim")
    return arch


def _check_targets_bounds(name: str, n_params: float, x: float) -> None:
    """Refuse targets whose shape would take long to solve or could not be trained (see
    MAX_N_PARAMS, MAX_D_MODEL): the message names the architecture, the value and the bound."""
    if n_params > MAX_N_PARAMS:  # also in the schema; resolve_architecture runs without it
        raise ConfigError(
            f"architecture {name!r}: targets.n_params {n_params:.3g} is above the bound "
            f"{MAX_N_PARAMS:.0e} (30 times the paper's largest size; a training job would ask "
            "for 24 bytes a parameter on one node): lower it")
    d_model = x * math.sqrt(n_params)
    if d_model > MAX_D_MODEL:
        raise ConfigError(
            f"architecture {name!r}: targets.d_over_sqrt_n {x:g} at n_params {n_params:.3g} "
            f"asks for d_model = {d_model:,.0f}, above the bound {MAX_D_MODEL} (LLaMA-3.1-405B's "
            "width; solving wider shapes takes seconds each): lower d_over_sqrt_n or n_params")


def _check_semantics(config: dict[str, Any]) -> None:
    """Checks a JSON schema cannot express."""
    names = [a["name"] for a in config["architectures"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"architectures: duplicate name(s) {dupes}; each name must be unique "
                          "(it names the result folders)")
    data = config["data"]
    _check_data_name(data["name"])
    src = data["source"]
    if src["kind"] == "files" and not src.get("paths"):
        raise ConfigError("data.source.paths: required when data.source.kind is 'files'")
    if src["kind"] == "files":
        _check_corpus_files(src["paths"])
    if src["kind"] == "hf" and not src.get("dataset"):
        raise ConfigError("data.source.dataset: required when data.source.kind is 'hf'")
    tok = data["tokenizer"]
    if tok["kind"] == "pretrained" and not tok.get("path"):
        raise ConfigError("data.tokenizer.path: required when data.tokenizer.kind is 'pretrained'")
    for key in ("bos_token_id", "eos_token_id"):
        if tok[key] >= tok["vocab_size"]:
            raise ConfigError(f"data.tokenizer.{key} ({tok[key]}) must be below vocab_size "
                              f"({tok['vocab_size']})")
    lo, hi = config["fit"]["r_range"]
    if not 0 < lo < hi:
        raise ConfigError(f"fit.r_range: need 0 < low < high, got {[lo, hi]}")
    lo, hi = config["search"]["d_model_range"]
    if not lo < hi:
        raise ConfigError(f"search.d_model_range: need low < high, got {[lo, hi]}")
    train = config["training"]
    if train["global_batch_tokens"] < data["seq_len"]:
        raise ConfigError(f"training.global_batch_tokens ({train['global_batch_tokens']}) is "
                          f"smaller than one sequence (data.seq_len {data['seq_len']})")
    _check_budgets_fill_steps(config)
    _check_engine_names(config["throughput"])
    devices = known_devices(config["throughput"].get("gpus", {}))
    if config["throughput"]["gpu"] not in devices:
        raise ConfigError(f"throughput.gpu: unknown device preset {config['throughput']['gpu']!r};"
                          f" known: {sorted(devices)} (add one under throughput.gpus)")
    base = config["search"]["baseline"].get("architecture")
    if base is not None and base not in names:
        raise ConfigError(f"search.baseline.architecture: {base!r} is not a configured "
                          f"architecture; known: {names}")
    loss_column = config["fit"]["loss_column"]
    if config["search"]["validation"]["enabled"] and loss_column not in VALIDATION_LOSS_COLUMNS:
        raise ConfigError(f"fit.loss_column: the validation loop observes only "
                          f"{list(VALIDATION_LOSS_COLUMNS)} on the shapes it trains, not "
                          f"{loss_column!r}; pick one or set search.validation.enabled: false")
    if config["optimum_check"]["enabled"] and loss_column not in VALIDATION_LOSS_COLUMNS:
        raise ConfigError(f"fit.loss_column: the optimum check observes only "
                          f"{list(VALIDATION_LOSS_COLUMNS)} on the shapes it trains, not "
                          f"{loss_column!r}; pick one or set optimum_check.enabled: false")
    _check_lr_check(config, names)
    tasks = config["evaluation"]["tasks"]
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated:
        raise ConfigError(f"evaluation.tasks: {', '.join(map(repr, repeated))} listed more than "
                          "once (each task is evaluated once per run and names its own "
                          "column: remove the repeat)")
    engine = config["search"].get("engine")
    if engine is not None and engine not in config["throughput"]["engines"]:
        raise ConfigError(f"search.engine: {engine!r} is not among throughput.engines "
                          f"{config['throughput']['engines']}")


def _check_engine_names(throughput: dict[str, Any]) -> None:
    """throughput.engines and the keys of throughput.engine_args must name known engines. The
    schema leaves them open because the engines' registry, not the schema, lists the engines
    (archscale.throughput.engines.registry: a new engine is a module, not a schema edit)."""
    known = engine_names()
    for field, named in (("engines", throughput["engines"]),
                         ("engine_args", list(throughput.get("engine_args") or {}))):
        unknown = [name for name in named if name not in known]
        if unknown:
            raise ConfigError(f"throughput.{field}: unknown engine(s) "
                              f"{', '.join(map(repr, unknown))}; known: {list(known)} (a new "
                              "engine is a module registered in "
                              "archscale.throughput.engines.registry, see docs/throughput.md)")


_FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _check_data_name(name: str) -> None:
    """data.name is one folder under results/data/, so it follows the architecture names' rule:
    '.' or '..' would write the corpus loose into results/ or beside it, and a path separator
    would nest it elsewhere."""
    if not _FOLDER_NAME.fullmatch(name):  # refuses ".", ".." and "a/b" too
        raise ConfigError(f"data.name: {name!r} is not a folder name (it names "
                          "results/data/<name>/): use letters, digits, '_', '.', '-', not "
                          "starting with '.' or '-', e.g. 'stdlib'")


def _check_lr_check(config: dict[str, Any], names: list[str]) -> None:
    """The learning-rate check names configured architectures, leaves factor 1 to the grid
    (its runs are the rule's lr) and uses seeds each architecture trains (its comparison)."""
    check = config["lr_check"]
    unknown = [a for a in check["architectures"] if a not in names]
    if unknown:
        raise ConfigError(f"lr_check.architectures: {unknown} are not configured "
                          f"architectures; known: {names}")
    if any(float(f) == 1.0 for f in check["factors"]):
        raise ConfigError("lr_check.factors: 1 is the rule's own lr, which the grid's runs "
                          "already train; list only the other multiples (e.g. [0.5, 2])")
    for arch in check["architectures"]:
        spec = next(a for a in config["architectures"] if a["name"] == arch)
        seeds = (spec.get("training") or {}).get("seeds", config["training"]["seeds"])
        extra = [s for s in check["seeds"] if s not in seeds]
        if extra:
            raise ConfigError(f"lr_check.seeds: {arch} trains seeds {list(seeds)}, not {extra}, "
                              "so its rule's lr has no run to compare against; list seeds it "
                              "trains")
    if check["enabled"] and config["fit"]["loss_column"] not in VALIDATION_LOSS_COLUMNS:
        raise ConfigError(f"fit.loss_column: the lr check observes only "
                          f"{list(VALIDATION_LOSS_COLUMNS)} on the runs it trains; pick one or "
                          "set lr_check.enabled: false")


def _check_budgets_fill_steps(config: dict[str, Any]) -> None:
    """Every token budget must fill MIN_OPTIMIZER_STEPS global batches: with fewer, warmup and
    decay are each under a step and the run is one or two updates of a random model."""
    for i, spec in enumerate(config["architectures"]):
        batch = {**config["training"], **(spec.get("training") or {})}["global_batch_tokens"]
        for tokens in spec.get("token_budgets") or config["token_budgets"]:
            if tokens < MIN_OPTIMIZER_STEPS * batch:
                where = ("token_budgets" if "token_budgets" not in spec
                         else f"architectures[{i}] (architecture {spec['name']!r}).token_budgets")
                raise ConfigError(
                    f"{where}: {tokens} tokens make {tokens / batch:.2g} optimizer steps of "
                    f"training.global_batch_tokens {batch} for architecture {spec['name']!r}; "
                    f"a run needs at least {MIN_OPTIMIZER_STEPS * batch} tokens "
                    f"({MIN_OPTIMIZER_STEPS} steps): raise the budget or lower the batch")


def _check_corpus_files(patterns: list[str]) -> None:
    """Fail at load time, before any job deletes an output, when the corpus is missing/empty.
    The files are those the data stage reads (archscale.data.corpus.corpus_files: directory
    symlinks not followed, each real file once)."""
    import os

    from archscale.data.corpus import DataError, corpus_files

    try:
        files = corpus_files(patterns).paths
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    if sum(os.path.getsize(f) for f in files) == 0:
        raise ConfigError(f"data.source.paths: the corpus files {patterns} are all empty; "
                          "point data.source.paths at text")


def canonical(value: Any) -> Any:
    """The same meaning in one form: mapping keys sorted (recursively) and whole floats written
    as ints (2048.0 -> 2048). Snakemake compares a job's params by repr, so a config re-saved
    with its keys in another order, or 1024 written 1024.0, must give equal params."""
    if isinstance(value, Mapping):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return type(value)(canonical(v) for v in value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    return value


def merge_config(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` laid over `base` as Snakemake lays --config over a config file: mappings
    merge key by key, any other value (a list included) replaces."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# The top-level key that makes Snakemake evaluate a config file as a YTE template
# (snakemake.common.configfile: yte.process_yaml(..., require_use_yte=True)).
YTE_KEY = "__use_yte__"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's mapping, or a ConfigError naming the file and what is wrong. The file is
    read with yaml.safe_load (data only, no tags that build Python objects), and a YTE template
    (`YTE_KEY`) is refused: the workflow and `archscale plan` read every config file here."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; give the path of a study's "
                          "YAML file (config.yaml, configs/*.yaml)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must be a mapping of sections (data, architectures, "
                          f"token_budgets, ...), got {type(config).__name__}")
    if YTE_KEY in config:
        raise ConfigError(
            f"{path}: {YTE_KEY} turns on YTE templating, which runs the Python expressions "
            "written in the file (`?...` values, `?if`/`?for` keys) when Snakemake reads it. "
            "A study's config is data, read the same way by the workflow and by `archscale "
            f"plan`: remove {YTE_KEY} and write each value out (generate the file with a script "
            "if it must be computed)")
    return config


def load_study(config: dict[str, Any] | str | Path, source: str | None = None) -> Study:
    """Validate a config (dict or YAML path) and resolve every architecture.

    `source` names where the config came from in every error (default: the path, or
    "config.yaml" for a dict). The study's config is canonical (see `canonical`).
    """
    if not isinstance(config, dict):
        source = source or str(config)
        config = read_config_file(config)
    source = source or "config.yaml"
    config = canonical(check_schema(config, source))
    try:
        _check_semantics(config)
        archs: dict[str, Architecture] = {}
        for spec in config["architectures"]:
            archs[spec["name"]] = resolve_architecture(spec, config)
    except (ConfigError, ArchitectureError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    study = Study(config=config, architectures=archs)
    study.settings  # built once, here: a section the typed objects do not know fails at load
    return study
