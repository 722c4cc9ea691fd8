# Frontier search (the paper's Eq. 4 with pulp) and the study's cost plan.

rule search:
    input:
        conditional="results/fits/conditional.json",
        calibration="results/throughput/calibration.json",
        throughput="results/throughput.csv",
        runs="results/runs.csv",
        quality="results/fits/quality.csv",
    output:
        candidates="results/candidates.csv",
        pareto="results/pareto.csv",
        recommendations="results/recommendations.json",
        plot=report("results/plots/frontier.png", category="Search",
                    caption="../report/frontier.rst"),
    params:
        settings=search_params(),
        code=code_version("search"),
    log:
        "logs/search.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/search.py"


rule plan:
    output:
        "results/plan.csv",
    params:
        # what plan_study reads; the whole config would rerun it on every fit or search change
        config={k: config[k] for k in ("data", "architectures", "architecture_defaults",
                                       "token_budgets", "training")}
        | {"throughput": {k: config["throughput"][k] for k in ("engines", "gpu", "gpus")}},
    log:
        "logs/plan.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/plan.py"
