# Config loading and validation, wildcard constraints, and the input/param functions the rules
# share. All logic lives in the archscale package; this file only connects it to Snakemake.
import os
import sys

sys.path.insert(0, os.path.join(workflow.basedir, "src"))  # a checkout works even if not installed

from snakemake.utils import validate

import archscale
from archscale.config import ConfigError, load_study, schema_path
from archscale.costs import plan_inputs
from archscale.workflow.code_versions import code_version
from archscale.workflow.snakemake import set_offline_if_possible

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


def data_params(*keys):
    """The data fields a data rule reads (the tokenizer never sees the split or seq_len)."""
    data = config["data"]
    keys = keys or ("source", "tokenizer", "val_fraction", "shards", "seq_len")
    return {k: data[k] for k in keys}


def shard_files(wildcards=None):
    n = config["data"]["shards"]
    return [f"{DATA}/shards/{i}.{kind}" for i in range(n) for kind in ("train.bin", "val.bin", "json")]


# --- used by rules/train.smk ---------------------------------------------------
from archscale.training.loop import result_settings

RUN = "results/runs/{arch}/{tokens}/seed{seed}"


def run_paths(pattern):
    """Expand a per-run path pattern over every run of the study."""
    return [pattern.format(arch=a, tokens=t, seed=s) for a, t, s in STUDY.runs()]


def training_params(wildcards):
    """The training settings that change the trained model (per-architecture overrides
    applied); throughput knobs (threads, gpus, checkpoint cadence, compile) are left out."""
    return result_settings(STUDY.training_settings(wildcards.arch))


def training_threads(wildcards):
    return STUDY.training_settings(wildcards.arch)["threads"]


def training_gpus(wildcards):
    return STUDY.training_settings(wildcards.arch)["gpus"]


def training_mem_mb(wildcards, attempt):
    return training_mem_mb_of(STUDY.architectures[wildcards.arch],
                              STUDY.training_settings(wildcards.arch), attempt)


def training_mem_mb_of(arch, settings, attempt):
    """Host memory: ~1.5 GB for torch + transformers, 24 bytes a parameter (float32 weights,
    gradients, two Adam moments, the resume copy) and, on CPU, one micro-batch's activations
    (attention probabilities and logits included); doubled on each retry."""
    seq = config["data"]["seq_len"]
    mb = 1500 + 24 * arch.n_params_total / 1e6
    if settings["gpus"] == 0:
        per_token = arch.n_layers * (12 * arch.d_model + 4 * arch.n_heads * arch.head_dim
                                     + 4 * arch.ffn_dim + 2 * arch.n_heads * seq) \
            + 4 * arch.vocab_size
        mb += 4 * per_token * settings["micro_batch_size"] * seq / 1e6
    return int(mb * attempt)


# --- used by rules/evaluate.smk ------------------------------------------------
MC_DIR = f"{DATA}/corpus_mc"
EVAL_TASKS = list(config["evaluation"]["tasks"])


def evaluation_params():
    """The evaluation settings that change eval.json (threads only change speed)."""
    return {k: v for k, v in config["evaluation"].items() if k != "threads"}


def local_task_files(wildcards=None):
    """The task YAMLs of the locally built tasks the study evaluates."""
    return [f"{MC_DIR}/corpus_mc.yaml"] if "corpus_mc" in EVAL_TASKS else []


def evaluation_mem_mb(wildcards, attempt):
    """Host memory: ~2 GB for torch, transformers and lm-eval, plus float32 weights."""
    return int((2000 + 8 * STUDY.architectures[wildcards.arch].n_params_total / 1e6) * attempt)


# --- used by rules/throughput.smk ----------------------------------------------
from archscale.throughput.engines.base import measurement_settings

THROUGHPUT_ENGINES = list(config["throughput"]["engines"])


def throughput_settings(wildcards):
    """Only the throughput keys that change this engine's measurement (not gpu / gpus)."""
    return measurement_settings(config["throughput"], wildcards.engine)


def throughput_conda(wildcards):
    return None if wildcards.engine == "torch" else f"../envs/{wildcards.engine}.yaml"


def throughput_gpus(wildcards):
    """One GPU unless the study measures on the CPU (the default laptop study)."""
    return 0 if config["throughput"]["device"] == "cpu" else 1


# --- used by rules/search.smk --------------------------------------------------
SEARCH_ENGINE = config["search"]["engine"] or THROUGHPUT_ENGINES[0]
# the token budget D the search predicts the loss at (and the validation loop trains at)
SEARCH_TOKENS = int(config["search"]["tokens"]
                    or max(t for a in ARCHS for t in STUDY.token_budgets(a)))

def search_params():
    """What changes the search's result: its own section, the workload and device of the
    throughput model, the token budget the loss is predicted at, the architectures (for the
    sizes and the nearest-trained column), the fit's r range, and the code."""
    tp = config["throughput"]
    return {
        # the validation loop reads the search's outputs; its settings change no search result
        "search": {k: v for k, v in config["search"].items() if k != "validation"},
        "throughput": {k: tp[k] for k in ("engines", "gpu", "gpus", "device", "dtype",
                                          "batch_size", "input_len", "output_len",
                                          "max_num_batched_tokens", "gpu_memory_utilization")},
        "r_range": config["fit"]["r_range"],
        "tokens": SEARCH_TOKENS,
        "architectures": {a: STUDY.architectures[a].to_dict() for a in ARCHS},
    }


def training_runtime(wildcards):
    return training_runtime_of(STUDY.architectures[wildcards.arch],
                               STUDY.training_settings(wildcards.arch), int(wildcards.tokens))


def training_runtime_of(arch, settings, tokens):
    """SLURM time limit in minutes: the run's FLOPs at an assumed 30 % MFU of an H100-class GPU
    (or 3k tokens/s per CPU thread on CPU), times 2 for safety, plus 20 minutes of start-up.
    A run that still hits the limit resumes from results/resume/ when it is rerun."""
    if settings["gpus"] > 0:
        seconds = arch.training_flops_per_token(config["data"]["seq_len"]) * tokens / (
            0.3 * 989e12 * settings["gpus"])
    else:
        seconds = tokens / (3000 * settings["threads"])
    return int(20 + 2 * seconds / 60)


# --- used by rules/validation.smk ----------------------------------------------
from archscale.config import resolve_architecture
from archscale.search.frontier_check import shape_from_name

VALIDATION = config["search"]["validation"]
VALIDATION_TOKENS = SEARCH_TOKENS
VALIDATION_SEED = int(config["training"]["seeds"][0])


def validation_params():
    """What changes the validation plan: the loop's own settings, the run it prices (tokens,
    sequence length) and the devices each of its jobs occupies (the budget is device-hours)."""
    train, tp = config["training"], config["throughput"]
    return {
        "validation": VALIDATION,
        "tokens": VALIDATION_TOKENS,
        "seq_len": config["data"]["seq_len"],
        "engine": SEARCH_ENGINE,
        "train_devices": train["gpus"] or train["threads"],
        "eval_devices": 1 if train["gpus"] else config["evaluation"]["threads"],
        "measure_devices": tp["threads"] if tp["device"] == "cpu" else 1,
    }


def validation_arch(wildcards):
    """A chosen shape as a configured architecture of that shape would be resolved."""
    spec = {"name": wildcards.varch, **shape_from_name(wildcards.varch)}
    return resolve_architecture(spec, config)


def validation_arch_params(wildcards):
    return validation_arch(wildcards).to_dict()


def validation_training_mem_mb(wildcards, attempt):
    return training_mem_mb_of(validation_arch(wildcards), config["training"], attempt)


def validation_training_runtime(wildcards):
    return training_runtime_of(validation_arch(wildcards), config["training"], VALIDATION_TOKENS)


def validation_paths(pattern):
    """`pattern` for every shape the checkpoint chose (read once it has run)."""
    import pandas as pd

    plan = pd.read_csv(checkpoints.validation_plan.get().output.plan)
    return [pattern.format(varch=name) for name in plan.loc[plan.status == "validate", "name"]]
