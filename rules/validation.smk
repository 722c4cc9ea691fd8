# The validation loop (search.validation.enabled; off by default). A checkpoint chooses which
# frontier shapes to train and measure under a device-hour budget (archscale.search.frontier_check); once
# it has run, Snakemake re-evaluates the DAG and schedules each chosen shape's config.json,
# training, evaluation and measurement; results/validation.csv compares predicted with observed
# loss and throughput.
# Everything lives under results/validation/: nothing here feeds runs.csv or the fits.

VAL = "results/validation"
VRUN = f"{VAL}/runs/{{varch}}"


wildcard_constraints:
    varch=r"d\d+-L\d+-h\d+-kv\d+-dh\d+-f\d+",


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
        settings=validation_params(),
        code=code_version("validation"),
    log:
        "logs/validation/plan.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/validation_plan.py"


# A chosen shape's config.json follows from its name (the shape) and the study's defaults alone,
# not from the plan: a new plan that picks the same shape again reuses its training.
rule validation_config:
    output:
        f"{VAL}/architectures/{{varch}}/config.json",
    params:
        arch=validation_arch_params,
        code=code_version("architecture"),
    log:
        "logs/validation/architectures/{varch}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/architecture_config.py"


rule validation_train:
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
        training=result_settings(config["training"]),
        tokens=VALIDATION_TOKENS,
        seed=VALIDATION_SEED,
        seq_len=config["data"]["seq_len"],
        code=code_version("train"),
    threads: config["training"]["threads"]
    resources:
        mem_mb=validation_training_mem_mb,
        runtime=validation_training_runtime,
        gpu=config["training"]["gpus"],
    log:
        "logs/validation/train/{varch}.log",
    benchmark:
        "benchmarks/validation/train/{varch}.tsv"
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/validation_train.py"


rule validation_evaluate:
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
        evaluation=evaluation_params(),
        seq_len=config["data"]["seq_len"],
        label=lambda wildcards: {"arch": wildcards.varch, "tokens": VALIDATION_TOKENS,
                                 "seed": VALIDATION_SEED},
        code=code_version("evaluate"),
    threads: config["evaluation"]["threads"]
    resources:
        gpu=1 if config["training"]["gpus"] > 0 else 0,
    log:
        "logs/validation/evaluate/{varch}.log",
    benchmark:
        "benchmarks/validation/evaluate/{varch}.tsv"
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/evaluate.py"


rule validation_throughput:
    input:
        config=f"{VAL}/architectures/{{varch}}/config.json",
    output:
        f"{VAL}/throughput/{{varch}}/{{engine}}.json",
    params:
        settings=throughput_settings,
        code=code_version("throughput"),
    log:
        "logs/validation/throughput/{varch}/{engine}.log",
    benchmark:
        "benchmarks/validation/throughput/{varch}/{engine}.tsv"
    threads: config["throughput"]["threads"]
    resources:
        gpu=throughput_gpus,
    conda:
        throughput_conda
    script:
        "../scripts/throughput.py"


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
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/validation.py"
