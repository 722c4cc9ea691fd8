"""Tokenize one shard of the corpus (the scatter step of the data stage)."""
import os
import time

from archscale.data.corpus import tokenize_shard
from archscale.io import write_json
from archscale.provenance import now, provenance
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    os.environ["RAYON_NUM_THREADS"] = str(sm.threads)
    data = sm.params.data
    started, t0 = now(), time.perf_counter()
    summary = tokenize_shard(data["source"], os.path.dirname(sm.input.tokenizer),
                             int(sm.wildcards.shard), data["shards"], data["val_fraction"],
                             data["tokenizer"]["vocab_size"], sm.output.train, sm.output.val)
    seconds = time.perf_counter() - t0
    summary.update(started=started, seconds=round(seconds, 3),
                   tokens_per_s=round((summary["train_tokens"] + summary["val_tokens"]) / seconds))
    summary["provenance"] = provenance(settings=data, inputs=[sm.input.tokenizer], started=started,
                                       packages=("numpy", "tokenizers"))
    write_json(sm.output.summary, summary)
    log.info("shard %s: %s", sm.wildcards.shard, summary)
