# The training stage: one job per (architecture, token budget, seed) of STUDY.runs().
# Resume state lives in results/resume/{arch}/{tokens}/seed{seed}/ (deliberately not an output:
# Snakemake deletes a failed job's outputs, and the state must survive a kill); the job removes
# it when it succeeds. See docs/training.md for SLURM time limits and --rerun-incomplete.
from archscale.train import result_settings

RUN = "results/runs/{arch}/{tokens}/seed{seed}"


def run_paths(pattern):
    """Expand a per-run path pattern over every run of the study."""
    return [pattern.format(arch=a, tokens=t, seed=s) for a, t, s in STUDY.runs()]


def training_params(wildcards):
    """The training settings that change the trained model (per-architecture overrides
    applied); throughput knobs (threads, gpus, checkpoint cadence, compile) are left out."""
    return result_settings(STUDY.training_settings(wildcards.arch))


def training_threads(wildcards):
    return STUDY.training_settings(wildcards.arch)["threads"]


def training_gpus(wildcards):
    return STUDY.training_settings(wildcards.arch)["gpus"]


def training_mem_mb(wildcards, attempt):
    """Host memory: ~1.5 GB for torch + transformers, 24 bytes a parameter (float32 weights,
    gradients, two Adam moments, the resume copy) and, on CPU, one micro-batch's activations
    (attention probabilities and logits included); doubled on each retry."""
    arch = STUDY.architectures[wildcards.arch]
    settings = STUDY.training_settings(wildcards.arch)
    seq = config["data"]["seq_len"]
    mb = 1500 + 24 * arch.n_params_total / 1e6
    if settings["gpus"] == 0:
        per_token = arch.n_layers * (12 * arch.d_model + 4 * arch.n_heads * arch.head_dim
                                     + 4 * arch.ffn_dim + 2 * arch.n_heads * seq) \
            + 4 * arch.vocab_size
        mb += 4 * per_token * settings["micro_batch_size"] * seq / 1e6
    return int(mb * attempt)


rule train:
    input:
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
        arch=arch_params,
        training=training_params,
        seq_len=config["data"]["seq_len"],
        code=code_version("train"),
    threads: training_threads
    resources:
        mem_mb=training_mem_mb,
        gpu=training_gpus,
    log:
        "logs/train/{arch}/{tokens}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{arch}/{tokens}/seed{seed}.tsv"
    script:
        "../scripts/train.py"
