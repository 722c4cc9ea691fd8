# The GQA step by measurement (search.gqa_search.enabled; off by default): the paper's local
# search over grouped-query attention, decided by trained models (archscale.search.gqa_search).
# A checkpoint plans, per size, the baseline, the Surefire-like pick (Eq. 4 at the baseline's
# GQA group) and its variants with larger groups within a device-hour budget; then one
# checkpoint per step, chained: step k needs step k-1's decision, so variant k is trained,
# evaluated and measured (the validation loop's rules, under results/validation/) only while
# every earlier step matched the measured baseline's loss. results/gqa_search.csv holds the
# steps, results/gqa/recommendations.json the fastest accepted shape per size.
# Nothing here feeds runs.csv or the fits.

GQA_DIR = "results/gqa"


checkpoint gqa_plan:
    input:
        recommendations="results/recommendations.json",
        runs="results/runs.csv",
        evals=run_paths(f"{RUN}/eval.json"),
        measurements=expand("results/throughput/{arch}/{engine}.json", arch=ARCHS,
                            engine=SEARCH_ENGINE),
    output:
        f"{GQA_DIR}/plan.json",
    params:
        settings=gqa_search_params(STUDY),
        code=code_version("gqa"),
    log:
        "logs/gqa/plan.log",
    benchmark:
        "logs/benchmarks/gqa_plan.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/gqa_plan.py"


checkpoint gqa_step:
    input:
        unpack(gqa_step_inputs),
    output:
        f"{GQA_DIR}/{{size}}/step{{k}}.json",
    params:
        loss_column=config["fit"]["loss_column"],
        loss_tolerance=GQA_SEARCH["loss_tolerance"],
        code=code_version("gqa"),
    log:
        "logs/gqa/{size}/step{k}.log",
    benchmark:
        "logs/benchmarks/gqa_step/{size}/step{k}.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/gqa_step.py"


rule gqa_search:
    input:
        plan=f"{GQA_DIR}/plan.json",
        steps=gqa_chain,
    output:
        table=report("results/gqa_search.csv", category="Search",
                     caption="../report/gqa_search.rst"),
        recommendations=f"{GQA_DIR}/recommendations.json",
    params:
        code=code_version("gqa"),
    log:
        "logs/gqa/search.log",
    benchmark:
        "logs/benchmarks/gqa_search.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/gqa_search.py"
