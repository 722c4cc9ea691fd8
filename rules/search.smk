# Frontier search (the paper's Eq. 4, vectorised) and the study's cost plan.

rule search:
    input:
        conditional=table("results/fits/conditional.json"),
        calibration=table("results/throughput/calibration.json"),
        throughput=table("results/throughput.csv"),
        runs=table("results/runs.csv"),
        quality=table("results/fits/quality.csv"),
    output:
        candidates="results/candidates.csv",
        pareto="results/pareto.csv",
        recommendations="results/recommendations.json",
        plot=report("results/plots/frontier.png", category="Search",
                    caption="../report/frontier.rst"),
        svg="results/plots/frontier.svg",  # every figure is also written as SVG (figures.py)
    params:
        settings=search_rule_params(STUDY),
        code=code_version("search"),
    log:
        "logs/search.log",
    benchmark:
        "logs/benchmarks/search.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/search.py"


rule plan:
    output:
        "results/plan.csv",
    params:
        inputs=study_plan_inputs(STUDY),
        code=code_version("plan"),
    log:
        "logs/plan.log",
    benchmark:
        "logs/benchmarks/plan.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plan.py"
