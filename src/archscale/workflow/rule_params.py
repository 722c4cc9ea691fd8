"""Every stage's Snakemake params, built from the study's typed settings, in one place.

Why: a rule reruns when its params change, so the params are the study's rerun contract. The
rules (rules/*.smk) take them from here, and tests/test_settings.py changes one setting at a
time and checks that exactly the stages the setting declares (archscale.settings) see their
params change. Outside Snakemake, `stage_params` shows what would rerun for a config edit.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archscale.costs import study_plan_inputs
from archscale.search.frontier_check import selection_params
from archscale.search.gqa_search import gqa_search_params
from archscale.search.optimum_plan import optimum_check_params
from archscale.search.proposals import proposals_params
from archscale.search.study import search_rule_params
from archscale.throughput.engines.base import measurement_settings
from archscale.throughput.engines.registry import names as engine_names
from archscale.training.job import result_settings

if TYPE_CHECKING:
    from archscale.config import Study


def training_params(study: "Study", arch: str | None) -> dict[str, Any]:
    """A run's result-deciding training settings (rule train's `training` param, built by the
    same `result_settings` from the fields that declare "train"): the architecture's overrides
    applied; a checked shape (arch None) has none."""
    return result_settings(study.config["training"] if arch is None
                           else study.training_settings(arch))


def evaluation_params(study: "Study") -> dict[str, Any]:
    """What changes eval.json (rule evaluate's `evaluation` param)."""
    return study.settings.evaluation.params("evaluate")


def data_params(study: "Study", rule: str) -> dict[str, Any]:
    """What changes one data rule's outputs (tokenizer, tokenize_shard or merge_shards)."""
    return study.settings.data.params(rule)


def fit_params(study: "Study", rule: str) -> dict[str, Any]:
    """What changes one fit rule's output (fit_chinchilla, fit_conditional, fit_quality,
    fit_forms)."""
    return study.settings.fit.params(rule)


def lr_check_params(study: "Study") -> dict[str, Any]:
    """What changes the learning-rate check's runs and tables (rule lr_check_table)."""
    return {**study.settings.lr_check.params("lr_check"),
            "loss_column": study.settings.fit.loss_column}


def stage_params(study: "Study") -> dict[str, Any]:
    """Every stage's params for this study, keyed by the stage names of archscale.settings.
    Per-architecture and per-engine params are dicts by name; the architecture's own shape
    (rule architecture_config's param) is the `architecture` stage's."""
    settings, config = study.settings, study.config
    seq_len = settings.data.seq_len
    return {
        "architecture": {n: a.to_dict() for n, a in study.architectures.items()},
        **{rule: data_params(study, rule) for rule in
           ("tokenizer", "tokenize_shard", "merge_shards")},
        "data_summary": config["data"],
        "train": {"seq_len": seq_len, "shape": training_params(study, None),
                  **{n: training_params(study, n) for n in study.architectures}},
        "runs": {"runs": study.runs(), "tasks": list(settings.evaluation.tasks)},
        "evaluate": {"evaluation": evaluation_params(study), "seq_len": seq_len},
        "corpus_mc": settings.evaluation.corpus_mc,
        "measure": {e: measurement_settings(config["throughput"], e) for e in engine_names()},
        "throughput_table": settings.throughput.params("throughput_table"),
        **{rule: fit_params(study, rule) for rule in
           ("fit_chinchilla", "fit_conditional", "fit_quality", "fit_forms")},
        "search": search_rule_params(study),
        "plan": study_plan_inputs(study),
        "frontier_check": selection_params(study),
        "gqa_plan": gqa_search_params(study),
        "gqa_step": {"loss_column": settings.fit.loss_column,
                     "loss_tolerance": settings.search.gqa_search["loss_tolerance"]},
        "optimum_check": optimum_check_params(study),
        "lr_check": lr_check_params(study),
        "loop_tables": {"loss_column": settings.fit.loss_column},
        "proposals": proposals_params(study),
        "loop_round": settings.loop.params("loop_round"),
    }
