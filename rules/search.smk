# Frontier search (the paper's Eq. 4 with pulp) and the study's cost plan.


def search_params():
    """What changes the search's result: its own section, the workload and device of the
    throughput model, the token budget the loss is predicted at, the architectures (for the
    sizes and the nearest-trained column), the fit's r range, and the code."""
    tp = config["throughput"]
    return {
        "search": config["search"],
        "throughput": {k: tp[k] for k in ("engines", "gpu", "gpus", "device", "dtype",
                                          "batch_size", "input_len", "output_len",
                                          "max_num_batched_tokens", "gpu_memory_utilization")},
        "r_range": config["fit"]["r_range"],
        "tokens": config["search"]["tokens"] or max(t for a in ARCHS for t in STUDY.token_budgets(a)),
        "architectures": {a: STUDY.architectures[a].to_dict() for a in ARCHS},
    }


rule search:
    input:
        conditional="results/fits/conditional.json",
        calibration="results/throughput/calibration.json",
        throughput="results/throughput.csv",
        runs="results/runs.csv",
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
