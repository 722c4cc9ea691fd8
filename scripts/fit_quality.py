"""Snakemake `script:` for fit quality by progressive extrapolation; logic in archscale.fit.

Expects:
    input.runs    results/runs.csv (runs.csv columns or the short names N, D, loss, x, r)
    output.csv    results/fits/quality.csv, one row per fold (archscale.fit.quality.COLUMNS);
                  folds that cannot be evaluated without leakage have status 'skipped'
    params.fit    the config's `fit` section (form, r_range, huber_delta, loss_column)
    log[0]        (optional) the rule's log file
"""
from archscale.fit.stages import quality_stage
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0] if sm.log else None) as log:
    table = quality_stage(sm.input.runs, sm.output.csv, dict(sm.params.fit))
    for row in table.itertuples(index=False):
        log.info(f"fold {row.fold}: {row.status} mse {row.mse:.4g} spearman {row.spearman:.3g} "
                 f"{row.reason}")
