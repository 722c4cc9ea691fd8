# Config loading and validation, wildcard constraints, and the input/param functions the rules
# share. All logic lives in the archscale package; this file only connects it to Snakemake.
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))  # a checkout works even if not installed

from snakemake.utils import validate

import archscale
from archscale.config import ConfigError, load_study, schema_path
from archscale.stages import code_version
from archscale.workflow import set_offline_if_possible

# The library's validator runs first: its messages name the architecture and the field.
try:
    STUDY = load_study(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, str(schema_path()))  # snakemake's own check, and it fills schema defaults
config = STUDY.config
OFFLINE = set_offline_if_possible(config)

ARCHS = list(STUDY.architectures)
CORPUS = config["data"]["name"]
DATA = f"results/data/{CORPUS}"


wildcard_constraints:
    arch="|".join(map(lambda a: a.replace(".", r"\."), ARCHS)),
    tokens=r"\d+",
    seed=r"\d+",
    shard=r"\d+",
    engine="torch|vllm|sglang",


def arch_params(wildcards):
    """The resolved shape of one architecture: the only thing its config.json depends on."""
    return STUDY.architectures[wildcards.arch].to_dict()


def data_params():
    """The data section: every field that changes tokens (nothing from other sections)."""
    data = config["data"]
    return {k: data[k] for k in ("source", "tokenizer", "val_fraction", "shards", "seq_len")}


def shard_files(wildcards=None):
    n = config["data"]["shards"]
    return [f"{DATA}/shards/{i}.{kind}" for i in range(n) for kind in ("train.bin", "val.bin", "json")]
