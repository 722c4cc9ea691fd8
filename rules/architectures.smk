# Architecture accounting: one HF config.json per architecture, and the aggregate table.


rule architecture_config:
    input:
        configured_architecture_input,
    output:
        "results/architectures/{arch}/config.json",
    params:
        arch=arch_params(grid_architecture),
        code=code_version("architecture"),
    log:
        "logs/architectures/{arch}.log",
    benchmark:
        "logs/benchmarks/architecture_config/{arch}.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/architecture_config.py"


rule architectures_table:
    input:
        study_checks,
        expand("results/architectures/{arch}/config.json", arch=ARCHS),
    output:
        "results/architectures.csv",
    params:
        names=ARCHS,
    log:
        "logs/architectures/table.log",
    benchmark:
        "logs/benchmarks/architectures_table.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/architectures_table.py"
