# The evaluation stage: the offline multiple-choice task built from the held-out split, one
# evaluation job per run, and results/runs.csv (the table the law fitting reads).

rule corpus_mc_task:
    input:
        study_checks,
        val=f"{DATA}/val.bin",
        meta=f"{DATA}/meta.json",
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
        tokenizer_config=f"{DATA}/tokenizer/tokenizer_config.json",
    output:
        yaml=f"{MC_DIR}/corpus_mc.yaml",
        data=f"{MC_DIR}/corpus_mc.jsonl",
        summary=f"{MC_DIR}/summary.json",
    params:
        settings=config["evaluation"]["corpus_mc"],
        code=code_version("evaluate"),  # the evaluate stage's modules include data/mc_task.py
    log:
        f"logs/data/{CORPUS}/corpus_mc.log",
    benchmark:
        f"logs/benchmarks/corpus_mc_task/{CORPUS}.tsv"
    localrule: True
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/corpus_mc_task.py"


rule evaluate:
    input:
        study_checks,
        model=f"{RUN}/model/model.safetensors",
        config=f"{RUN}/model/config.json",
        tokenizer=f"{RUN}/model/tokenizer.json",
        val=f"{DATA}/val.bin",
        meta=f"{DATA}/meta.json",
        task_yamls=local_task_files,
        task_data=[f"{MC_DIR}/corpus_mc.jsonl"] if "corpus_mc" in EVAL_TASKS else [],
    output:
        f"{RUN}/eval.json",
    params:
        evaluation=evaluation_params(STUDY),
        seq_len=SEQ_LEN,
        label=lambda wildcards: {"arch": wildcards.arch, "tokens": run_tokens(wildcards),
                                 "seed": run_seed(wildcards)},
        code=code_version("evaluate"),
    threads: config["evaluation"]["threads"]
    resources:
        mem_mb=evaluation_mem_mb(grid_architecture),
        gpu=evaluation_gpu(grid_training_settings),
    log:
        "logs/evaluate/{arch}/{tokens}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/evaluate/{arch}/{tokens}/seed{seed}.tsv"
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/evaluate.py"


rule collect_runs:
    input:
        architectures=table("results/architectures.csv"),
        metrics=lambda wildcards: run_results("metrics.json"),
        evals=lambda wildcards: run_results("eval.json"),
    output:
        report("results/runs.csv", category="Training", caption="../report/runs.rst"),
    params:
        runs=STUDY.runs(),
        tasks=EVAL_TASKS,
    log:
        "logs/evaluate/runs.log",
    benchmark:
        "logs/benchmarks/collect_runs.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/collect_runs.py"
