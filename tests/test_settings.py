"""The typed settings (archscale.settings): every field's declaration of the stages it changes
is checked against the params the workflow builds (archscale.workflow.rule_params), by
changing one setting at a time. This is the one rerun mechanism; tests/test_reruns.py runs the
scenarios users hit through Snakemake."""
from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest

from archscale.config import ConfigError, load_study, read_config_file
from archscale.schema import schema_file
from archscale.settings import IMPLIED_STAGES, SECTIONS, STAGES, Section, SettingsError
from archscale.throughput.engines.base import engine_class
from archscale.throughput.engines.registry import names as engine_names
from archscale.training.job import RESULT_FREE_SETTINGS, TrainJob, result_settings
from archscale.workflow.rule_params import stage_params
from conftest import REPO, tiny_config


def _configs() -> dict[str, dict[str, Any]]:
    """A CPU study with every optional loop on, and a GPU paper config (its plan prices GPU
    memory, which reads more training settings)."""
    tiny = tiny_config()
    tiny["search"].setdefault("validation", {})["enabled"] = True
    tiny["search"].setdefault("gqa_search", {})["enabled"] = True
    tiny.setdefault("optimum_check", {})["enabled"] = True
    tiny["training"]["seeds"] = [0, 1]  # so the lr check has another trained seed to move to
    tiny["lr_check"] = {"enabled": True, "architectures": ["a1"]}
    tiny["throughput"]["threads"] = 2  # so a CPU measurement's device count shows a device change
    return {"tiny": tiny, "paper-1b": read_config_file(REPO / "configs" / "paper-1b.yaml")}


CONFIGS = _configs()


# Changes of the settings that hold names, which no generic rule can invent.
EXPLICIT = {
    "data.name": ["other"],
    "evaluation.tasks": [["corpus_mc", "arc_easy"]],
    "throughput.engines": [["vllm", "torch"]],  # the first engine is the search's
    "throughput.gpu": ["H100", "cpu"],
    "throughput.gpus": [{"X1": {"peak_tflops": 100.0, "hbm_gbps": 1000.0, "memory_gb": 40.0}}],
    "throughput.engine_args": [{"vllm": {"swap_space": 1}}],
    "fit.loss_column": ["train_loss"],
    "fit.form": ["additive"],
    "search.budgets": [[30000.0]],
    "search.engine": ["torch", "vllm"],
    "lr_check.architectures": [["a2"]],
    "lr_check.seeds": [[1]],
    "loop.target_widths": [{"x": 0.05}],
    "loop.target_verdicts": [{"u_r": "supported"}],
}


def _changed(value: Any, enum: list[Any] | None) -> Iterator[Any]:
    """Other valid-looking values of one setting (several tries: a config check may refuse
    one). Nested mappings are changed one leaf at a time by the caller."""
    if enum:
        yield from (v for v in enum if v != value)
    elif isinstance(value, bool):
        yield not value
    elif isinstance(value, int):
        yield from (value * 2, value + 1, max(value - 1, 0)) if value else (1, 2)
    elif isinstance(value, float):
        yield from (value * 0.5, value * 1.5)
    elif value is None:
        yield from (7, 0.5, "H100")
    elif isinstance(value, list):
        if value and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            if value[-1]:
                yield [*value[:-1], value[-1] * 2]
            yield [value[0] + 1, *value[1:]]
            yield [*value, max(value) + 1]


def _variants(config: dict[str, Any], section: str, key: str) -> Iterator[tuple[str, dict]]:
    """(label, config) with one setting of `section` changed: a scalar, or one leaf of a
    mapping-valued setting."""
    value = config[section][key]
    prop = schema_file()["properties"][section]["properties"][key]
    leaves = ([((key,), value, prop.get("enum"))] if not isinstance(value, dict) else
              [((key, k), v, prop.get("properties", {}).get(k, {}).get("enum"))
               for k, v in value.items() if not isinstance(v, dict)])
    explicit = EXPLICIT.get(f"{section}.{key}")
    if explicit:
        leaves = [((key,), value, [v for v in explicit if v != value] or None)]
    for path, leaf, enum in leaves:
        for new in _changed(leaf, enum):
            out = copy.deepcopy(config)
            node = out[section]
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = new
            yield ".".join((section, *path)), out


def _stages_changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    return {stage for stage in STAGES if before[stage] != after[stage]}


def _observations() -> dict[tuple[str, str], tuple[set[str], list[str]]]:
    """(section, field) -> (stages some change of it changed, the changes that loaded)."""
    seen: dict[tuple[str, str], tuple[set[str], list[str]]] = {}
    for name, config in CONFIGS.items():
        study = load_study(copy.deepcopy(config), source=name)
        done: set[str] = set()
        base = stage_params(study)
        for cls in SECTIONS:
            for key in cls.field_names():
                stages, tried = seen.setdefault((cls.SECTION, key), (set(), []))
                for label, variant in _variants(study.config, cls.SECTION, key):
                    if label in done:
                        continue
                    try:
                        changed = _stages_changed(base, stage_params(load_study(variant)))
                    except ConfigError:
                        continue  # this value is refused; try the next one
                    stages |= changed
                    tried.append(f"{name}: {label} -> {sorted(changed)}")
                    if label not in done:  # one change that loads per leaf is enough
                        done.add(label)
    return seen


@pytest.fixture(scope="module")
def observed() -> dict[tuple[str, str], tuple[set[str], list[str]]]:
    return _observations()


FIELDS = [(cls.SECTION, key) for cls in SECTIONS for key in cls.field_names()]


@pytest.mark.parametrize("section, key", FIELDS)
def test_a_setting_changes_exactly_the_stages_it_declares(section: str, key: str,
                                                          observed) -> None:
    """Changing the setting changes the params of no stage it does not declare (or that a
    declared stage implies, IMPLIED_STAGES), and each stage it declares changes for some change
    of it (in one of the two studies)."""
    declared = set(next(c for c in SECTIONS if c.SECTION == section).declared(key))
    allowed = declared.union(*(IMPLIED_STAGES.get(stage, ()) for stage in declared))
    changed, tried = observed[(section, key)]
    assert tried, f"{section}.{key}: no change of it loads; give it one in EXPLICIT"
    assert changed <= allowed, (f"{section}.{key} changes {sorted(changed - allowed)} "
                                 f"without declaring them:\n" + "\n".join(tried))
    assert changed >= declared, (f"{section}.{key} declares {sorted(declared - changed)} but no "
                                 f"change of it changed them:\n" + "\n".join(tried))


def test_the_sections_are_the_schema_s() -> None:
    """A typed section has exactly the schema's keys: a key added to the schema must declare
    what it changes."""
    for cls in SECTIONS:
        schema_keys = set(schema_file()["properties"][cls.SECTION]["properties"])
        assert set(cls.field_names()) == schema_keys, cls.SECTION


def test_param_orders_hold_the_declared_keys() -> None:
    """PARAM_ORDER only orders a stage's declared keys (it exists so old studies do not
    rerun); it neither adds nor drops one."""
    for cls in SECTIONS:
        for stage, keys in cls.PARAM_ORDER.items():
            assert sorted(keys) == sorted(cls.changing(stage)), (cls.SECTION, stage)


def test_engines_measure_only_declared_keys() -> None:
    """Every key an engine's measurement reads declares the measure stage."""
    measure = set(next(c for c in SECTIONS if c.SECTION == "throughput").changing("measure"))
    for engine in engine_names():
        assert set(engine_class(engine).measurement_keys) <= measure, engine


def test_training_result_settings_follow_the_declarations() -> None:
    training = next(c for c in SECTIONS if c.SECTION == "training")
    assert RESULT_FREE_SETTINGS == set(training.field_names()) - set(training.changing("train"))
    assert {"threads", "gpus", "micro_batch_size", "seeds"} <= RESULT_FREE_SETTINGS
    assert "lr" not in RESULT_FREE_SETTINGS
    study = load_study(tiny_config())
    assert (result_settings(study.training_settings("a1"))
            == training.from_mapping(study.training_settings("a1")).params("train"))


def test_a_partial_section_takes_the_schema_defaults(tmp_path) -> None:
    """Defaults live in the schema only: a library caller's partial training settings get
    grad_clip 1.0 (the trainer once read 0.0 when the key was missing)."""
    job = TrainJob(arch_config="a", train_bin="b", meta="m", tokenizer_dir="t", model_dir="d", resume_dir="r",
                   log_csv="l", metrics_json="j", tokens=1, seed=0, seq_len=8,
                   settings={"lr": 0.01}, threads=1)
    assert job.settings["grad_clip"] == 1.0 and job.settings["lr"] == 0.01


def test_an_unknown_key_is_named() -> None:
    with pytest.raises(SettingsError, match="grad_clipp"):
        next(c for c in SECTIONS if c.SECTION == "training").from_mapping({"grad_clipp": 1})


def test_an_unknown_stage_is_refused() -> None:
    with pytest.raises(KeyError, match="known"):
        Section.changing.__func__(next(iter(SECTIONS)), "trian")
