"""Snakemake `script:` for a round's runs.csv (rule loop_runs): the study's runs, then every
run the loop has trained up to this round; archscale.search.loop_rounds.

Expects:
    input.study    results/runs.csv
    input.plans    every round's plan.csv up to this one (their runs, first planned first)
    input.configs, input.metrics, input.evals
                   each of those runs' config.json, metrics.json and eval.json, in that order
    output[0]      results/loop/round<k>/runs.csv (runs.csv's columns)
    params.tasks   the evaluation tasks (runs.csv has a column per task)
"""
from archscale.io import write_csv
from archscale.search.loop_rounds import loop_run_rows, round_runs_table, unique_runs
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    runs = unique_runs(sm.input.plans)
    rows = loop_run_rows(runs, sm.input.configs, sm.input.metrics, sm.input.evals,
                         list(sm.params.tasks))
    table = round_runs_table(sm.input.study, rows)
    write_csv(sm.output[0], table)
    log.info("%d study runs and %d loop runs", len(table) - len(rows), len(rows))
