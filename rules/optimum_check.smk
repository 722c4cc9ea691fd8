# The optimum check (optimum_check.enabled; off by default): train the shape the headline law
# predicts optimal at each of the largest grid sizes, at the size's token budget with every seed
# forms.json lists. A checkpoint solves the shapes from results/fits/forms.json
# (archscale.search.optimum_plan); once it has run, Snakemake re-evaluates the DAG and schedules
# each shape's config.json, training and evaluation, which are the study's own rules
# (`use rule ... with:`) on the shape's paths, with the study's training section; then
# results/optimum_check/runs.csv lists what each seed reached.
# Everything lives under results/optimum_check/: nothing here feeds runs.csv or the fits.

OPT = "results/optimum_check"
ORUN = f"{OPT}/runs/{{varch}}/{{tokens}}/seed{{seed}}"


forms_table = table(FORMS_PATH)


def optimum_check_forms(wildcards):
    """forms.json, as a study table; refused while the check is off (the config's switch)."""
    if not OPTIMUM_CHECK["enabled"]:
        raise WorkflowError(f"{OPT}/ is the optimum check's, which is off in {CONFIG_SOURCE}: "
                            "set optimum_check.enabled: true there to build it")
    return forms_table(wildcards)


optimum_check_forms.table_path = FORMS_PATH  # check_tables_present follows it to plan.csv


checkpoint optimum_check_plan:
    input:
        forms=optimum_check_forms,
    output:
        plan=f"{OPT}/plan.csv",
    params:
        settings=optimum_check_params(STUDY),
        code=code_version("optimum_check"),
    log:
        "logs/optimum_check/plan.log",
    benchmark:
        "logs/benchmarks/optimum_check_plan.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/optimum_check_plan.py"


def optimum_check_paths(pattern):
    """`pattern` for every (varch, tokens, seed) run the checkpoint planned (read once it has
    run)."""
    plan = read_plan(checkpoints.optimum_check_plan.get().output.plan)
    return [pattern.format(varch=v, tokens=t, seed=s) for v, t, s in planned_runs(plan)]


# A planned shape's config.json follows from its name (the shape) and the study's defaults
# alone, not from the plan: a new fit that predicts the same shape again reuses its training.
use rule architecture_config as optimum_check_config with:
    input:
        study_checks,
    output:
        f"{OPT}/architectures/{{varch}}/config.json",
    params:
        arch=arch_params(shape_architecture),
    log:
        "logs/optimum_check/architectures/{varch}.log",
    benchmark:
        "logs/benchmarks/optimum_check_config/{varch}.tsv"


# Trained like the grid's runs: the study's training section (shape_training_settings: a
# {varch} has no per-architecture override), the token budget and seed of its path.
use rule train as optimum_check_train with:
    input:
        arch=f"{OPT}/architectures/{{varch}}/config.json",
        train=f"{DATA}/train.bin",
        meta=f"{DATA}/meta.json",
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
        tokenizer_config=f"{DATA}/tokenizer/tokenizer_config.json",
    output:
        model=f"{ORUN}/model/model.safetensors",
        config=f"{ORUN}/model/config.json",
        tokenizer=f"{ORUN}/model/tokenizer.json",
        tokenizer_config=f"{ORUN}/model/tokenizer_config.json",
        log_csv=f"{ORUN}/train_log.csv",
        metrics=f"{ORUN}/metrics.json",
    params:
        arch=arch_params(shape_architecture),
        training=training_params(shape_training_settings),
        tokens=run_tokens,
        seed=run_seed,
        seq_len=SEQ_LEN,
        label=lambda wildcards: {"arch": wildcards.varch, "optimum_check": True},
        resume=lambda wildcards: (f"{OPT}/resume/{wildcards.varch}/{wildcards.tokens}/"
                                  f"seed{wildcards.seed}"),
        code=code_version("train"),
    threads: training_threads(shape_training_settings)
    resources:
        mem_mb=training_mem_mb(shape_architecture, shape_training_settings),
        runtime=training_runtime(shape_architecture, shape_training_settings, run_tokens),
        gpu=training_gpu_request(shape_training_settings),
        nodes=training_nodes(shape_training_settings),
        slurm_extra=training_slurm_extra(shape_training_settings),
    log:
        "logs/optimum_check/train/{varch}/{tokens}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/optimum_check/train/{varch}/{tokens}/seed{seed}.tsv"


use rule evaluate as optimum_check_evaluate with:
    input:
        model=f"{ORUN}/model/model.safetensors",
        config=f"{ORUN}/model/config.json",
        tokenizer=f"{ORUN}/model/tokenizer.json",
        val=f"{DATA}/val.bin",
        meta=f"{DATA}/meta.json",
        task_yamls=local_task_files,
        task_data=[f"{MC_DIR}/corpus_mc.jsonl"] if "corpus_mc" in EVAL_TASKS else [],
    output:
        f"{ORUN}/eval.json",
    params:
        evaluation=evaluation_params(STUDY),
        seq_len=SEQ_LEN,
        label=lambda wildcards: {"arch": wildcards.varch, "tokens": run_tokens(wildcards),
                                 "seed": run_seed(wildcards)},
        code=code_version("evaluate"),
    resources:
        mem_mb=evaluation_mem_mb(shape_architecture),
        gpu=evaluation_gpu(shape_training_settings),
    log:
        "logs/optimum_check/evaluate/{varch}/{tokens}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/optimum_check/evaluate/{varch}/{tokens}/seed{seed}.tsv"


rule optimum_check_runs:
    input:
        plan=f"{OPT}/plan.csv",
        metrics=lambda wildcards: valid_json(optimum_check_paths(f"{ORUN}/metrics.json")),
        evals=lambda wildcards: valid_json(optimum_check_paths(f"{ORUN}/eval.json")),
    output:
        f"{OPT}/runs.csv",
    params:
        loss_column=config["fit"]["loss_column"],
        code=code_version("optimum_check"),
    log:
        "logs/optimum_check/runs.log",
    benchmark:
        "logs/benchmarks/optimum_check_runs.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/optimum_check_runs.py"
