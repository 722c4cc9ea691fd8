"""The data stage: a corpus tokenized once into flat token files, and the offline
multiple-choice task built from its held-out split.

- corpus:  documents from the configured source, the tokenizer, shards, train.bin / val.bin.
- mc_task: `corpus_mc`, the lm-eval task (true continuation among distractors).
"""
