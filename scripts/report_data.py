"""Snakemake `script:` for the report's data summary (archscale.data.summary).

Expects: input.meta (the corpus's meta.json), input.tokenizer (tokenizer_config.json),
params.data (the config's data section), output[0] the CSV, log[0].
"""
from archscale.data.summary import data_summary
from archscale.io import write_csv
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    import pandas as pd

    rows = data_summary(sm.input.meta, sm.input.tokenizer, dict(sm.params.data))
    write_csv(sm.output[0], pd.DataFrame(rows))
    log.info("data summary: %d rows", len(rows))
