"""Snakemake `script:` for the Chinchilla fit (stage 1 of the laws); logic in archscale.fit.

Expects:
    input.runs      results/runs.csv (runs.csv columns or the short names N, D, loss)
    output.json     results/fits/chinchilla.json
    output.plot     (optional) PNG of loss vs N and D with the fitted law
    params.fit      the config's `fit` section (loss_column, huber_delta, bootstrap,
                    compute_budgets, seed; the other keys are ignored here)
    threads         bootstrap worker processes (default 2)
    log[0]          (optional) the rule's log file
"""
from archscale.fit.stages import chinchilla_stage
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0] if sm.log else None) as log:
    doc = chinchilla_stage(sm.input.runs, sm.output.json, dict(sm.params.fit),
                           plot=sm.output.get("plot"), workers=max(1, int(sm.threads)),
                           extra_provenance={"rule": sm.rule})
    c = doc["coefficients"]
    log.info("chinchilla fit: " + ", ".join(f"{k} {v:.5g}" for k, v in c.items()))
    for warning in doc["warnings"]:
        log.warning(warning)
