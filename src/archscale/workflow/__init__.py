"""What connects the library to Snakemake: the rules' helpers and the code hashes.

- snakemake:     logging to a rule's log, the hub switches, a training rule's job.
- code_versions: the per-stage code hash every rule passes as a param.
"""
