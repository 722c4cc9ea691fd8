# The report's Training, Data and Throughput figures (snakemake --report results/report.html).
# Each reads finished tables only; none feeds a fit or the search.


rule training_curves:
    input:
        logs=run_paths(f"{RUN}/train_log.csv"),
    output:
        report("results/plots/training_curves.png", category="Training",
               caption="../report/training_curves.rst"),
    params:
        runs=STUDY.runs(),
        code=code_version("report"),
    log:
        "logs/report/training_curves.log",
    benchmark:
        "logs/benchmarks/training_curves.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/report_training.py"


rule data_summary:
    input:
        meta=f"{DATA}/meta.json",
        tokenizer=f"{DATA}/tokenizer/tokenizer_config.json",
    output:
        report(f"{DATA}/summary.csv", category="Data", caption="../report/data_summary.rst"),
    params:
        data=config["data"],
        code=code_version("report"),
    log:
        "logs/report/data_summary.log",
    benchmark:
        "logs/benchmarks/data_summary.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/report_data.py"


rule throughput_plot:
    input:
        "results/throughput.csv",
    output:
        report("results/plots/throughput.png", category="Throughput",
               caption="../report/throughput.rst"),
    params:
        code=code_version("report"),
    log:
        "logs/report/throughput.log",
    benchmark:
        "logs/benchmarks/throughput_plot.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/report_throughput.py"


# The figures and tables of the report besides the fits and the search (rule all asks for them).
REPORT_EXTRAS = ["results/plots/training_curves.png", f"{DATA}/summary.csv",
                 "results/plots/throughput.png"]
