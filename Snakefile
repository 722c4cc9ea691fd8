# archscale: architecture-conditional scaling laws as one Snakemake workflow.
# This file only loads and validates the config, includes the stages, and names the targets.
# Run: snakemake --cores 2 results/pareto.csv            (laptop, the default study)
#      snakemake --profile slurm results/pareto.csv      (a SLURM cluster, see docs/slurm.md)
# Rules that run on the submit host, never as cluster jobs, say so with `localrule: True`.

from snakemake.utils import min_version

min_version("9.0")


import os
import sys

# this checkout's src/ wins over an installed archscale (the one sys.path insert of the workflow)
sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from archscale.workflow.snakemake import load_study_config, run_jobs_on_this_code, warn_if_locked

# every job imports the archscale imported here, whose code hashes decide reruns (PYTHONPATH)
run_jobs_on_this_code()
# config.yaml is the study unless --configfile names another: that file replaces it, never
# merges onto it; --config key=value overrides apply on top of either. Every file is read as
# `archscale plan` reads it (safe YAML, no YTE templates), not by a `configfile:` directive.
CONFIG_SOURCE = load_study_config(workflow, "config.yaml")
warn_if_locked(workflow)  # another run is active here: say what that means for this one


include: "rules/common.smk"
include: "rules/architectures.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/throughput.smk"
include: "rules/fit.smk"
include: "rules/search.smk"
include: "rules/validation.smk"
include: "rules/gqa.smk"
include: "rules/optimum_check.smk"
include: "rules/lr_check.smk"
include: "rules/loop.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        # the checks of the study's files, before any job (rules/common.smk)
        study_checks,
        "results/pareto.csv",
        "results/recommendations.json",
        "results/fits/quality.csv",
        # one verdict per finding (rules/fit.smk; the rules: docs/science.md)
        "results/fits/verdicts.json",
        # the runs that would narrow the x* and r* intervals most per device-hour (rules/fit.smk)
        "results/proposals.csv",
        "results/plan.csv",
        # the report's Training, Data and Throughput figures (rules/report.smk)
        REPORT_EXTRAS,
        # the validation loop, when search.validation.enabled (see rules/validation.smk)
        ["results/validation.csv"] if VALIDATION["enabled"] else [],
        # the GQA step by measurement, when search.gqa_search.enabled (see rules/gqa.smk)
        ["results/gqa_search.csv"] if GQA_SEARCH["enabled"] else [],
        # the optimum check, when optimum_check.enabled (see rules/optimum_check.smk)
        ["results/optimum_check/runs.csv"] if OPTIMUM_CHECK["enabled"] else [],
        # the learning-rate check, when lr_check.enabled (see rules/lr_check.smk)
        ["results/lr_check/transfer.csv"] if LR_CHECK["enabled"] else [],
        # the closed loop, when loop.enabled (see rules/loop.smk)
        ["results/loop/rounds.csv"] if config["loop"]["enabled"] else [],


onsuccess:
    # the study's answer at the end of the console: the pick per size, whether its speed-up is
    # larger than the throughput model's error, and the verdicts (archscale.workflow.run_summary)
    from archscale.workflow.run_summary import print_summary

    print_summary("results")
