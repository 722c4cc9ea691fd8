"""Train (or load) the study's tokenizer into results/data/<corpus>/tokenizer/."""
import os
from pathlib import Path

from archscale.data.corpus import load_pretrained_tokenizer, train_tokenizer
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]) as log:  # noqa: F821
    data = snakemake.params.data  # noqa: F821
    os.environ["RAYON_NUM_THREADS"] = str(snakemake.threads)  # noqa: F821
    out_dir = Path(snakemake.output.json).parent  # noqa: F821
    if data["tokenizer"]["kind"] == "bpe":
        summary = train_tokenizer(data["source"], data["tokenizer"], data["shards"], out_dir)
    else:
        summary = load_pretrained_tokenizer(data["tokenizer"], out_dir)
    log.info("tokenizer: %s", summary)
