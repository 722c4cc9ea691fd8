"""Snakemake `script:` for the architecture-conditional law (stage 2); logic in archscale.fit.

Expects:
    input.runs        results/runs.csv (runs.csv columns or the short names N, D, loss, x, r)
    input.chinchilla  (optional) results/fits/chinchilla.json, used for L_opt when
                      fit.l_opt is 'chinchilla' and outside the empirical points otherwise;
                      without it a Chinchilla law is fitted on the runs
    output.json       results/fits/conditional.json (format: archscale.fit.conditional)
    output.u_curves   (optional) PNG: loss against d/sqrt(N) and r with the fitted factors
    output.predicted  (optional) PNG: predicted against observed loss
    params.fit        the config's `fit` section (form, l_opt, r_range, bootstrap, seed, ...)
    log[0]            (optional) the rule's log file
"""
from archscale.fit.stages import conditional_stage
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0] if sm.log else None) as log:
    doc = conditional_stage(
        sm.input.runs, sm.output.json, dict(sm.params.fit),
        chinchilla=sm.input.get("chinchilla"),
        plots={"u_curves": sm.output.get("u_curves"), "predicted": sm.output.get("predicted")},
        extra_provenance={"rule": sm.rule})
    opt = doc["optimum"]
    log.info(f"conditional fit ({doc['form']}): x* = {opt['x_star']:.4g}, "
             f"r* = {opt['r_star']:.4g}, rmse {doc['fit']['rmse']:.4g}")
    for warning in doc["warnings"]:
        log.warning(warning)
