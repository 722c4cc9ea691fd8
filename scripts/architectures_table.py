"""Collect every architecture's accounting into results/architectures.csv."""
import pandas as pd

from archscale.architecture import Architecture
from archscale.io import write_csv
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]):  # noqa: F821
    rows = [Architecture.from_hf_config(path, name=name).accounting()
            for path, name in zip(snakemake.input, snakemake.params.names)]  # noqa: F821
    write_csv(snakemake.output[0], pd.DataFrame(rows))  # noqa: F821
