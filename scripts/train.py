"""Train one run (rules train, validation_train and optimum_check_train).

The run (tokens, seed, label, resume folder) and the result-deciding settings arrive as params
(they decide reruns) and are the only source of those; the speed/bookkeeping knobs (threads,
gpus, nodes, checkpoint cadence, compile) are read from the config, so changing them never
reruns training. More than one GPU
or node launches torchrun; see archscale.training.launch.
"""
from archscale.config import load_study
from archscale.training.launch import execute
from archscale.workflow.snakemake import log_to, rule_train_job

with log_to(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects this name)
    sm = snakemake  # noqa: F821
    study = load_study(sm.config)
    label = dict(sm.params.label)
    # the speed knobs: a configured architecture may override them (also when the closed loop
    # trains another seed of it); a checked or proposed shape never does. The result settings
    # are the params.
    checked = label.get("validation") or label.get("optimum_check")
    speed = study.config["training"] if checked else study.named_training_settings(label["arch"])
    job = rule_train_job(sm, speed)
    settings = job.settings
    log.info("train %s, %d tokens, seed %d (%d threads, %d GPUs x %d nodes)", label["arch"],
             job.tokens, job.seed, sm.threads, settings["gpus"], settings["nodes"])
    execute(job, gpus=settings["gpus"], nodes=settings["nodes"])
