"""Train one (architecture, token budget, seed) run (Snakemake rule train).

Result-deciding settings arrive as params (they decide reruns); the speed/bookkeeping knobs
(threads, gpus, checkpoint cadence, compile) are read from the config so changing them never
reruns training. More than one GPU launches torchrun; see archscale.train.
"""
import os

from archscale.config import load_study
from archscale.train import TrainJob, execute, resume_dir, result_settings
from archscale.workflow import log_to

with log_to(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects this name)
    sm = snakemake  # noqa: F821
    arch, tokens, seed = sm.wildcards.arch, int(sm.wildcards.tokens), int(sm.wildcards.seed)
    settings = load_study(sm.config).training_settings(arch)
    if result_settings(settings) != sm.params.training:
        raise RuntimeError("the training settings resolved in the job differ from the rule's "
                           "params; rerun snakemake (the config changed under the job?)")
    job = TrainJob(
        arch_config=sm.input.arch, train_bin=sm.input.train, meta=sm.input.meta,
        tokenizer_dir=os.path.dirname(sm.input.tokenizer),
        model_dir=os.path.dirname(sm.output.model), log_csv=sm.output.log_csv,
        metrics_json=sm.output.metrics, resume_dir=resume_dir(arch, tokens, seed), tokens=tokens,
        seed=seed, seq_len=sm.params.seq_len, settings=settings, threads=sm.threads,
        label={"arch": arch})
    log.info("train %s, %d tokens, seed %d (%d threads, %d GPUs)", arch, tokens, seed,
             sm.threads, settings["gpus"])
    execute(job, gpus=settings["gpus"])
