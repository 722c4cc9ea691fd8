"""Write results/plan.csv: GPU-hours, disk and job counts of the study (archscale.costs)."""
from archscale.costs import study_plan_from_inputs
from archscale.io import write_csv
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]):  # noqa: F821
    write_csv(snakemake.output[0], study_plan_from_inputs(dict(snakemake.params.inputs)))  # noqa: F821
