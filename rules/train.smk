# The training stage: one job per (architecture, token budget, seed) of STUDY.runs().
# Resume state lives in results/resume/{arch}/{tokens}/seed{seed}/ (deliberately not an output:
# Snakemake deletes a failed job's outputs, and the state must survive a kill); the job removes
# it when it succeeds. See docs/training.md for SLURM time limits and --rerun-incomplete.

rule train:
    input:
        configured_run,
        arch="results/architectures/{arch}/config.json",
        train=f"{DATA}/train.bin",
        meta=f"{DATA}/meta.json",
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
        tokenizer_config=f"{DATA}/tokenizer/tokenizer_config.json",
    output:
        model=f"{RUN}/model/model.safetensors",
        config=f"{RUN}/model/config.json",
        tokenizer=f"{RUN}/model/tokenizer.json",
        tokenizer_config=f"{RUN}/model/tokenizer_config.json",
        log_csv=f"{RUN}/train_log.csv",
        metrics=f"{RUN}/metrics.json",
    params:
        arch=arch_params(grid_architecture),
        training=training_params(grid_training_settings),
        tokens=run_tokens,
        seed=run_seed,
        seq_len=SEQ_LEN,
        label=lambda wildcards: {"arch": wildcards.arch},
        resume=lambda wildcards: resume_dir(wildcards.arch, wildcards.tokens, wildcards.seed),
        code=code_version("train"),
    threads: training_threads(grid_training_settings)
    resources:
        mem_mb=training_mem_mb(grid_architecture, grid_training_settings),
        runtime=training_runtime(grid_architecture, grid_training_settings, run_tokens),
        gpu=training_gpu_request(grid_training_settings),
        nodes=training_nodes(grid_training_settings),
        slurm_extra=training_slurm_extra(grid_training_settings),
    log:
        "logs/train/{arch}/{tokens}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train/{arch}/{tokens}/seed{seed}.tsv"
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"
