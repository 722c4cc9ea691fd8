"""Train one (architecture, token budget, seed) run (Snakemake rule train).

Result-deciding settings arrive as params (they decide reruns); the speed/bookkeeping knobs
(threads, gpus, checkpoint cadence, compile) are read from the config so changing them never
reruns training. More than one GPU launches torchrun; see archscale.training.loop.
"""
from archscale.config import load_study
from archscale.training.loop import execute, resume_dir
from archscale.workflow.snakemake import log_to, rule_train_job

with log_to(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects this name)
    sm = snakemake  # noqa: F821
    arch, tokens, seed = sm.wildcards.arch, int(sm.wildcards.tokens), int(sm.wildcards.seed)
    settings = load_study(sm.config).training_settings(arch)
    job = rule_train_job(sm, settings, tokens, seed, resume_dir(arch, tokens, seed),
                         label={"arch": arch})
    log.info("train %s, %d tokens, seed %d (%d threads, %d GPUs)", arch, tokens, seed,
             sm.threads, settings["gpus"])
    execute(job, gpus=settings["gpus"])
