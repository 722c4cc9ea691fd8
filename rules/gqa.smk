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


def _gqa_size(size):
    """The plan's entry for one size (its budget, as an integer, names it in paths)."""
    plan = read_json(checkpoints.gqa_plan.get().output[0])
    for entry in plan["sizes"]:
        if int(entry["budget"]) == int(size) and "steps" in entry:
            return entry
    raise WorkflowError(f"results/gqa/plan.json plans no GQA steps for size {size}")


def gqa_step_inputs(wildcards):
    """Step k reads the baseline's and its own shape's evaluation and measurement, and step
    k-1's decision (which orders the chain)."""
    entry, k = _gqa_size(wildcards.size), int(wildcards.k)
    if k >= len(entry["steps"]):
        raise WorkflowError(f"size {wildcards.size} has {len(entry['steps'])} planned GQA steps, "
                            f"no step {k}")
    base, name = entry["baseline"], entry["steps"][k]["name"]
    files = {"plan": checkpoints.gqa_plan.get().output[0],
             "baseline_eval": f"{VAL}/runs/{base}/eval.json",
             "baseline_speed": f"{VAL}/throughput/{base}/{SEARCH_ENGINE}.json",
             "eval": f"{VAL}/runs/{name}/eval.json",
             "speed": f"{VAL}/throughput/{name}/{SEARCH_ENGINE}.json"}
    if k > 0:
        files["previous"] = f"{GQA_DIR}/{wildcards.size}/step{k - 1}.json"
    return files


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


def gqa_chain(wildcards):
    """Every decided step of every planned size: walk each chain until a step says stop."""
    plan = read_json(checkpoints.gqa_plan.get().output[0])
    steps = []
    for entry in plan["sizes"]:
        if "steps" not in entry:
            continue
        for k in range(len(entry["steps"])):
            path = checkpoints.gqa_step.get(size=str(int(entry["budget"])), k=str(k)).output[0]
            steps.append(path)
            if read_json(path)["row"]["decision"] != "continue":
                break
    return steps


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
