"""Collect every run's metrics and evaluation into results/runs.csv (rule collect_runs)."""
from archscale.io import write_csv
from archscale.training.evaluate import runs_table
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    runs = [(arch, tokens, seed, metrics, evaluation) for (arch, tokens, seed), metrics, evaluation
            in zip(sm.params.runs, sm.input.metrics, sm.input.evals)]
    table = runs_table(sm.input.architectures, runs, sm.params.tasks)
    write_csv(sm.output[0], table)
    log.info("runs.csv: %d runs", len(table))
