# The learning-rate check (lr_check.enabled; off by default): train each named architecture
# again at other multiples of its rule's lr (lr_check.factors), at its largest token budget,
# for lr_check.seeds, with the study's own rules (`use rule ... with:`) on the check's paths.
# results/lr_check/runs.csv lists those runs beside the grid's runs at the rule's lr, and
# transfer.csv says per architecture whether the rule's lr is within 2 seed SDs of the best
# (archscale.fit.lr_check). The verdicts read transfer.csv; nothing here feeds runs.csv or
# the fits.

LR_DIR = "results/lr_check"
LR_RUN = f"{LR_DIR}/runs/{{arch}}/lr{{factor}}/{{tokens}}/seed{{seed}}"


def lr_check_paths(pattern):
    """`pattern` for every planned (arch, factor, tokens, seed) lr-check run."""
    return [pattern.format(arch=a, factor=f, tokens=t, seed=s)
            for a, f, t, s in lr_planned_runs(STUDY)]


def lr_grid_paths(pattern):
    """`pattern` (a grid run's) for the runs at the rule's lr that the check compares with."""
    return [pattern.format(arch=a, tokens=t, seed=s) for a, t, s in lr_grid_runs(STUDY)]


def lr_check_training(wildcards):
    """The grid's result settings for {arch}, with the peak lr scaled by {factor}: the rule
    (training.lr_rule) scales it per width as for every run."""
    settings = result_settings(grid_training_settings(wildcards))
    return {**settings, "lr": float(settings["lr"]) * float(wildcards.factor)}


use rule train as lr_check_train with:
    input:
        configured_run,
        arch="results/architectures/{arch}/config.json",
        train=f"{DATA}/train.bin",
        meta=f"{DATA}/meta.json",
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
        tokenizer_config=f"{DATA}/tokenizer/tokenizer_config.json",
    output:
        model=f"{LR_RUN}/model/model.safetensors",
        config=f"{LR_RUN}/model/config.json",
        tokenizer=f"{LR_RUN}/model/tokenizer.json",
        tokenizer_config=f"{LR_RUN}/model/tokenizer_config.json",
        log_csv=f"{LR_RUN}/train_log.csv",
        metrics=f"{LR_RUN}/metrics.json",
    params:
        arch=arch_params(grid_architecture),
        training=lr_check_training,
        tokens=run_tokens,
        seed=run_seed,
        seq_len=SEQ_LEN,
        label=lambda wildcards: {"arch": wildcards.arch, "lr_factor": float(wildcards.factor)},
        resume=lambda wildcards: (f"{LR_DIR}/resume/{wildcards.arch}/lr{wildcards.factor}/"
                                  f"{wildcards.tokens}/seed{wildcards.seed}"),
        code=code_version("train"),
    log:
        "logs/lr_check/train/{arch}/lr{factor}/{tokens}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/lr_check/train/{arch}/lr{factor}/{tokens}/seed{seed}.tsv"


use rule evaluate as lr_check_evaluate with:
    input:
        model=f"{LR_RUN}/model/model.safetensors",
        config=f"{LR_RUN}/model/config.json",
        tokenizer=f"{LR_RUN}/model/tokenizer.json",
        val=f"{DATA}/val.bin",
        meta=f"{DATA}/meta.json",
        task_yamls=local_task_files,
        task_data=[f"{MC_DIR}/corpus_mc.jsonl"] if "corpus_mc" in EVAL_TASKS else [],
    output:
        f"{LR_RUN}/eval.json",
    log:
        "logs/lr_check/evaluate/{arch}/lr{factor}/{tokens}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/lr_check/evaluate/{arch}/lr{factor}/{tokens}/seed{seed}.tsv"


def lr_check_enabled(paths):
    """`paths`, refused while the check is off (the config's switch)."""
    if not LR_CHECK["enabled"]:
        raise WorkflowError(f"{LR_DIR}/ is the learning-rate check's, which is off in "
                            f"{CONFIG_SOURCE}: set lr_check.enabled: true there to build it")
    return valid_json(paths)


rule lr_check_table:
    input:
        metrics=lambda wildcards: lr_check_enabled(lr_check_paths(f"{LR_RUN}/metrics.json")),
        evals=lambda wildcards: lr_check_enabled(lr_check_paths(f"{LR_RUN}/eval.json")),
        grid_metrics=lambda wildcards: lr_check_enabled(lr_grid_paths(f"{RUN}/metrics.json")),
        grid_evals=lambda wildcards: lr_check_enabled(lr_grid_paths(f"{RUN}/eval.json")),
        architectures="results/architectures.csv",
        forms="results/fits/forms.json",  # the pooled seed SD at each token budget
    output:
        runs=f"{LR_DIR}/runs.csv",
        transfer=f"{LR_DIR}/transfer.csv",
    params:
        settings=lr_check_params(STUDY),
        factors=lambda wildcards: [float(f) for _, f, _, _ in lr_planned_runs(STUDY)],
        code=code_version("lr_check"),
    log:
        "logs/lr_check/table.log",
    benchmark:
        "logs/benchmarks/lr_check_table.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/lr_check_table.py"
