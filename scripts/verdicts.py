"""Snakemake `script:` for the verdicts; logic in archscale.fit.verdicts.

Expects:
    input.forms                      results/fits/forms.json
    input.recommendations            results/recommendations.json
    input.throughput                 results/throughput.csv (its held-out throughput error)
    input.check                      results/optimum_check/runs.csv, or nothing when the
                                     optimum check is off
    input.lr_check                   results/lr_check/transfer.csv, or nothing when the
                                     learning-rate check is off
    output.json                      results/fits/verdicts.json
    log[0]                           (optional) the rule's log file
"""
from archscale.fit.stages import verdicts_stage
from archscale.fit.verdicts import summary_lines
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0] if sm.log else None) as log:
    doc = verdicts_stage(sm.input.forms, sm.output.json,
                         check_runs=sm.input.check[0] if sm.input.check else None,
                         recommendations=sm.input.recommendations,
                         throughput=sm.input.throughput,
                         lr_transfer=sm.input.lr_check[0] if sm.input.lr_check else None)
    for line in summary_lines(doc):
        log.info(line)
