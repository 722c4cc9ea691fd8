"""Snakemake `script:` for results/proposals.csv; logic in archscale.search.proposals.

Expects:
    input.runs         results/runs.csv (shape columns, seeds, wall_s)
    input.conditional  results/fits/conditional.json (the law, its bootstrap, its seed noise)
    input.evals        every run's eval.json (their durations price a run's evaluation)
    output.csv         results/proposals.csv (columns: docs/outputs.md)
    params.settings    proposals_params(study): seq_len, ffn_multiple, first_seed, the fit
                       settings read, the devices of a training and an evaluate job
    log[0]             (optional) the rule's log file
"""
from archscale.io import read_json
from archscale.search.proposals import write_proposals
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0] if sm.log else None) as log:
    table, notes = write_proposals(sm.input.runs, sm.input.conditional,
                                   map(read_json, sm.input.evals), dict(sm.params.settings),
                                   sm.output.csv)
    for note in notes:
        log.warning(note)
