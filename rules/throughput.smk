# Throughput: one measurement per (architecture, engine) on the architecture's config.json with
# dummy weights (it never waits for training or data), then the table that calibrates the
# roofline model on the measurements and reports its leave-one-out error.
#
# One rule serves the three engines: the engine is the {engine} wildcard, and the conda
# environment follows it (vllm and sglang each have their own, their pins clash; torch uses the
# study's own environment). One rule name keeps the SLURM profile's set-resources `throughput`.

rule throughput:
    input:
        study_checks,
        config="results/architectures/{arch}/config.json",
    output:
        "results/throughput/{arch}/{engine}.json",
    params:
        arch=arch_params(grid_architecture),
        settings=throughput_settings,
        code=code_version("throughput"),
    log:
        "logs/throughput/{arch}/{engine}.log",
    benchmark:
        "logs/benchmarks/throughput/{arch}/{engine}.tsv"
    threads: throughput_cores  # on the CPU: alone, so nothing else runs on the cores it times
    resources:
        gpu=throughput_gpus,
    conda:
        throughput_conda
    script:
        "../scripts/throughput.py"


rule throughput_table:
    input:
        results=measurements,
    output:
        table=report("results/throughput.csv", category="Throughput",
                     caption="../report/throughput_table.rst"),
        calibration="results/throughput/calibration.json",
    params:
        gpu=config["throughput"]["gpu"],
        gpus=config["throughput"]["gpus"],
        code=code_version("throughput_model"),
    log:
        "logs/throughput/table.log",
    benchmark:
        "logs/benchmarks/throughput_table.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/throughput_table.py"
