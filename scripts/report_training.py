"""Snakemake `script:` for the report's training curves (archscale.training.plots).

Expects: input.logs (every run's train_log.csv), params.runs ((architecture, tokens, seed) in
the same order), output[0] the PNG, log[0].
"""
from archscale.training.plots import plot_training_curves
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    plot_training_curves(list(sm.input.logs), [tuple(r) for r in sm.params.runs], sm.output[0])
    log.info("training curves of %d runs", len(sm.input.logs))
