"""Snakemake `script:` for the comparison of law forms; logic in archscale.fit.compare.

Expects:
    input.runs    results/runs.csv
    output.json   results/fits/forms.json: every registered form's fit, optimum per grid size
                  and held-out error against two nulls, the headline form and why
    params.fit    the settings compare_forms reads from the config's `fit` section
    log[0]        (optional) the rule's log file
"""
from archscale.fit.stages import forms_stage
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0] if sm.log else None) as log:
    doc = forms_stage(sm.input.runs, sm.output.json, dict(sm.params.fit))
    log.info(f"reference loss: {doc['reference']['source']}")
    for line in doc["reference"]["degeneracy"]:
        log.warning(f"base-shape Chinchilla fit: {line}")
    log.info(f"headline form: {doc['selection']['form']} ({doc['selection']['reason']})")
