# The data stage: tokenizer, then one tokenization job per shard (scatter), then a merge (gather).


rule tokenizer:
    input:
        study_checks,
    output:
        json=f"{DATA}/tokenizer/tokenizer.json",
        config=f"{DATA}/tokenizer/tokenizer_config.json",
    params:
        data=data_params(STUDY, "tokenizer"),
        code=code_version("data"),
    log:
        f"logs/data/{CORPUS}/tokenizer.log",
    benchmark:
        f"logs/benchmarks/data/{CORPUS}/tokenizer.tsv"
    threads: 2
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train_tokenizer.py"


rule tokenize_shard:
    input:
        study_checks,
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
    output:
        train=f"{DATA}/shards/{{shard}}.train.bin",
        val=f"{DATA}/shards/{{shard}}.val.bin",
        summary=f"{DATA}/shards/{{shard}}.json",
    params:
        data=data_params(STUDY, "tokenize_shard"),
        code=code_version("data"),
    log:
        f"logs/data/{CORPUS}/shard_{{shard}}.log",
    benchmark:
        f"logs/benchmarks/data/{CORPUS}/shard_{{shard}}.tsv"
    threads: 2
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/tokenize_shard.py"


rule merge_shards:
    input:
        study_checks,
        shards=shard_files(),
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
    output:
        train=f"{DATA}/train.bin",
        val=f"{DATA}/val.bin",
        meta=f"{DATA}/meta.json",
    params:
        data=data_params(STUDY, "merge_shards"),
        code=code_version("data"),
    log:
        f"logs/data/{CORPUS}/merge.log",
    benchmark:
        f"logs/benchmarks/merge_shards/{CORPUS}.tsv"
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/merge_shards.py"
