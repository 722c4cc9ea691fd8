"""Train one shape the validation loop chose (rule validation_train), with the study's
training settings at the search's token budget; see archscale.training.loop and rules/validation.smk."""
from archscale.config import load_study
from archscale.training.loop import execute
from archscale.workflow.snakemake import log_to, rule_train_job

with log_to(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects this name)
    sm = snakemake  # noqa: F821
    name, tokens, seed = sm.wildcards.varch, int(sm.params.tokens), int(sm.params.seed)
    settings = load_study(sm.config).config["training"]  # with the schema's defaults
    job = rule_train_job(sm, settings, tokens, seed, f"results/validation/resume/{name}",
                         label={"arch": name, "validation": True})
    log.info("validation train %s, %d tokens, seed %d", name, tokens, seed)
    execute(job, gpus=settings["gpus"])
