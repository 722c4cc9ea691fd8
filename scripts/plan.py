"""Write results/plan.csv: GPU-hours, disk and job counts of the study (archscale.plan)."""
from archscale.config import load_study
from archscale.io import write_csv
from archscale.plan import plan_study
from archscale.workflow import log_to

with log_to(snakemake.log[0]):  # noqa: F821
    write_csv(snakemake.output[0], plan_study(load_study(dict(snakemake.params.config))))  # noqa: F821
