"""Snakemake `script:` for the report's HTML tables (archscale.tables).

Expects: input pareto, recommendations, runs, quality; params captions (page -> caption file,
relative to the workflow folder); output pareto, answer, runs, quality (HTML pages); log[0].
"""
from pathlib import Path

from archscale.tables import write_report_tables
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    write_report_tables(sm.input.pareto, sm.input.recommendations, sm.input.runs,
                        sm.input.quality, dict(sm.output.items()),
                        {key: (Path(sm.scriptdir).parent / path).read_text()
                         for key, path in sm.params.captions.items()})
    log.info("report tables: %s", ", ".join(sm.output))
