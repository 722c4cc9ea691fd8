# The frontier check, the "validation loop" of the config (search.validation.enabled; off by
# default). A checkpoint chooses which frontier shapes to train and measure under a
# device-hour budget (archscale.search.frontier_check); once it has run, Snakemake re-evaluates
# the DAG and schedules each chosen shape's config.json, training, evaluation and measurement,
# which are the study's own rules (`use rule ... with:`) on the shape's paths; then
# results/validation.csv compares predicted with observed loss and throughput.
# Everything lives under results/validation/: nothing here feeds runs.csv or the fits.

VAL = "results/validation"
VRUN = f"{VAL}/runs/{{varch}}"


def validation_tokens(wildcards):
    """The search's token budget: the D its predictions are for (a shape's path has no
    {tokens})."""
    return SEARCH_TOKENS


def validation_seed(wildcards):
    """The study's first seed (a shape's path has no {seed})."""
    return VALIDATION_SEED


checkpoint validation_plan:
    input:
        pareto="results/pareto.csv",
        runs="results/runs.csv",
        evals=run_paths(f"{RUN}/eval.json"),
        measurements=expand("results/throughput/{arch}/{engine}.json", arch=ARCHS,
                            engine=SEARCH_ENGINE),
    output:
        plan=f"{VAL}/plan.csv",
        summary=f"{VAL}/plan.json",
    params:
        settings=selection_params(STUDY),
        code=code_version("validation"),
    log:
        "logs/validation/plan.log",
    benchmark:
        "logs/benchmarks/validation_plan.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/validation_plan.py"


def validation_paths(pattern):
    """`pattern` for every shape the checkpoint chose (read once it has run)."""
    import pandas as pd

    plan = pd.read_csv(checkpoints.validation_plan.get().output.plan)
    return [pattern.format(varch=name) for name in plan.loc[plan.status == "validate", "name"]]


# A chosen shape's config.json follows from its name (the shape) and the study's defaults alone,
# not from the plan: a new plan that picks the same shape again reuses its training.
use rule architecture_config as validation_config with:
    input:
        study_checks,
    output:
        f"{VAL}/architectures/{{varch}}/config.json",
    params:
        arch=arch_params(shape_architecture),
    log:
        "logs/validation/architectures/{varch}.log",
    benchmark:
        "logs/benchmarks/validation_config/{varch}.tsv"


# Trained at the search's token budget (SEARCH_TOKENS) with the first seed and the study's
# training section (validation_tokens, validation_seed, shape_training_settings).
use rule train as validation_train with:
    input:
        arch=f"{VAL}/architectures/{{varch}}/config.json",
        train=f"{DATA}/train.bin",
        meta=f"{DATA}/meta.json",
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
        tokenizer_config=f"{DATA}/tokenizer/tokenizer_config.json",
    output:
        model=f"{VRUN}/model/model.safetensors",
        config=f"{VRUN}/model/config.json",
        tokenizer=f"{VRUN}/model/tokenizer.json",
        tokenizer_config=f"{VRUN}/model/tokenizer_config.json",
        log_csv=f"{VRUN}/train_log.csv",
        metrics=f"{VRUN}/metrics.json",
    params:
        arch=arch_params(shape_architecture),
        training=training_params(shape_training_settings),
        tokens=validation_tokens,
        seed=validation_seed,
        seq_len=SEQ_LEN,
        label=lambda wildcards: {"arch": wildcards.varch, "validation": True},
        resume=lambda wildcards: f"{VAL}/resume/{wildcards.varch}",
        code=code_version("train"),
    threads: training_threads(shape_training_settings)
    resources:
        mem_mb=training_mem_mb(shape_architecture, shape_training_settings),
        runtime=training_runtime(shape_architecture, shape_training_settings, validation_tokens),
        gpu=training_gpu_request(shape_training_settings),
        nodes=training_nodes(shape_training_settings),
        slurm_extra=training_slurm_extra(shape_training_settings),
    log:
        "logs/validation/train/{varch}.log",
    benchmark:
        "logs/benchmarks/validation/train/{varch}.tsv"


use rule evaluate as validation_evaluate with:
    input:
        model=f"{VRUN}/model/model.safetensors",
        config=f"{VRUN}/model/config.json",
        tokenizer=f"{VRUN}/model/tokenizer.json",
        val=f"{DATA}/val.bin",
        meta=f"{DATA}/meta.json",
        task_yamls=local_task_files,
        task_data=[f"{MC_DIR}/corpus_mc.jsonl"] if "corpus_mc" in EVAL_TASKS else [],
    output:
        f"{VRUN}/eval.json",
    params:
        evaluation=evaluation_params(STUDY),
        seq_len=SEQ_LEN,
        label=lambda wildcards: {"arch": wildcards.varch, "tokens": validation_tokens(wildcards),
                                 "seed": validation_seed(wildcards)},
        code=code_version("evaluate"),
    resources:
        mem_mb=evaluation_mem_mb(shape_architecture),
        gpu=evaluation_gpu(shape_training_settings),
    log:
        "logs/validation/evaluate/{varch}.log",
    benchmark:
        "logs/benchmarks/validation/evaluate/{varch}.tsv"


use rule throughput as validation_throughput with:
    input:
        config=f"{VAL}/architectures/{{varch}}/config.json",
    output:
        f"{VAL}/throughput/{{varch}}/{{engine}}.json",
    params:
        arch=arch_params(shape_architecture),
    log:
        "logs/validation/throughput/{varch}/{engine}.log",
    benchmark:
        "logs/benchmarks/validation/throughput/{varch}/{engine}.tsv"


rule validation:
    input:
        plan=f"{VAL}/plan.csv",
        metrics=lambda wildcards: validation_paths(f"{VRUN}/metrics.json"),
        evals=lambda wildcards: validation_paths(f"{VRUN}/eval.json"),
        measurements=lambda wildcards: validation_paths(
            f"{VAL}/throughput/{{varch}}/{SEARCH_ENGINE}.json"),
    output:
        report("results/validation.csv", category="Validation",
               caption="../report/validation.rst"),
    params:
        loss_column=config["fit"]["loss_column"],
        code=code_version("validation"),
    log:
        "logs/validation/compare.log",
    benchmark:
        "logs/benchmarks/validation.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/validation.py"
