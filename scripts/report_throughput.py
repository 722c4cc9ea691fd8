"""Snakemake `script:` for the report's throughput figure (archscale.throughput.plots).

Expects: input[0] results/throughput.csv, output[0] the PNG, log[0].
"""
from archscale.throughput.plots import plot_measured_vs_predicted
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    import pandas as pd

    table = pd.read_csv(sm.input[0])
    plot_measured_vs_predicted(table, sm.output[0])
    log.info("throughput figure: %d measurements", len(table))
