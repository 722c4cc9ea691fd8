"""Join measured and predicted throughput; fit the model's factors (rule throughput_table)."""
from archscale.throughput.calibrate import build_table
from archscale.workflow.code_versions import code_version
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects this name)
    build_table(results=list(snakemake.input.results),  # noqa: F821
                gpu=snakemake.params.gpu, gpus=snakemake.params.gpus,  # noqa: F821
                table_path=snakemake.output.table,  # noqa: F821
                calibration_path=snakemake.output.calibration, log=log,  # noqa: F821
                model_code_version=code_version("throughput_model"))
