"""Merge the tokenized shards into train.bin / val.bin and write meta.json (the gather step)."""
from archscale.data.corpus import merge_shards, tokenizer_summary, write_meta
from archscale.provenance import now, provenance
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]) as log:  # noqa: F821
    sm = snakemake  # noqa: F821
    started = now()
    data = sm.params.data
    files = list(sm.input.shards)
    triples = [tuple(files[i:i + 3]) for i in range(0, len(files), 3)]
    meta = merge_shards(triples, sm.output.train, sm.output.val, data["seq_len"])
    import os
    meta.update(tokenizer_summary(os.path.dirname(sm.input.tokenizer), data["tokenizer"]))
    meta["seq_len"] = data["seq_len"]
    meta["files"] = {"train": "train.bin", "val": "val.bin", "tokenizer": "tokenizer/",
                     "read_with": "numpy.memmap(path, dtype=meta['dtype'], mode='r')"}
    meta["provenance"] = provenance(settings=data, inputs=[sm.input.tokenizer], started=started,
                                    packages=("numpy", "tokenizers", "transformers"))
    write_meta(sm.output.meta, meta)
    log.info("merged: train %d tokens, val %d tokens", meta["train_tokens"], meta["val_tokens"])
    dup = meta["duplicates"]
    if any(dup.values()):
        log.warning("corpus: %d directory symlink(s) a wildcard reached were not followed and "
                    "%d repeat(s) of a file already read were skipped; %d document(s) repeat an "
                    "earlier text and were put on its side of the split (meta.json: duplicates)",
                    dup["paths_through_symlinks"], dup["paths_same_file"],
                    dup["duplicate_documents"])
