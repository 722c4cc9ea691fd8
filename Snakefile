# archscale: architecture-conditional scaling laws as one Snakemake workflow.
# This file only loads and validates the config, includes the stages, and names the targets.
# Run: snakemake --cores 2 results/pareto.csv            (laptop, the default study)
#      snakemake --profile slurm results/pareto.csv      (a SLURM cluster, see docs/slurm.md)

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/architectures.smk"
include: "rules/data.smk"
