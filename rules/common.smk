# Config loading and validation, wildcard constraints, and the input, param and resource
# functions the rules share. Only wiring: every formula lives in the archscale package
# (costs, config, search, throughput), which the Snakefile has put on sys.path.
from snakemake.utils import validate

from archscale.architecture import SHAPE_NAME_PATTERN
from archscale.config import ConfigError, load_study
from archscale.schema import schema_path
from archscale.io import DamagedFileError, check_json_files, read_json
from archscale.fit.lr_check import grid_runs as lr_grid_runs, planned_runs as lr_planned_runs
from archscale.costs import (evaluation_memory_mb, study_plan_inputs, training_memory_mb,
                             training_runtime_minutes)
from archscale.search.frontier_check import selection_params
from archscale.search.gqa_search import gqa_search_params
from archscale.search.optimum_plan import FORMS_PATH, optimum_check_params, planned_runs, read_plan
from archscale.search.study import search_rule_params
from archscale.throughput.engines.base import measurement_settings
from archscale.throughput.engines.registry import conda_env, names as engine_names
from archscale.training.launch import slurm_training_request
from archscale.training.job import result_settings
from archscale.training.state import resume_dir
from archscale.workflow.code_versions import code_version
from archscale.workflow.rule_params import (data_params, evaluation_params, fit_params,
                                           lr_check_params)
from archscale.workflow.snakemake import (check_engines_run_shapes, check_losses,
                                         check_no_future_files,
                                         check_outputs_present, check_tables_present,
                                         check_token_files, checks_apply, forced,
                                         set_offline_if_possible, warn_target_misses)

# The library's validator runs first: its messages name the architecture and the field.
try:
    STUDY = load_study(config, source=CONFIG_SOURCE)
    check_engines_run_shapes(STUDY, CONFIG_SOURCE)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, str(schema_path()))  # snakemake's own check, and it fills schema defaults
config = STUDY.config  # canonical: keys sorted, so equal meaning gives equal params
OFFLINE = set_offline_if_possible(config)
warn_target_misses(workflow, STUDY)  # names that promise more than their shapes hold

ARCHS = list(STUDY.architectures)
CORPUS = config["data"]["name"]
DATA = f"results/data/{CORPUS}"
SEQ_LEN = config["data"]["seq_len"]
RUN = "results/runs/{arch}/{tokens}/seed{seed}"
MC_DIR = f"{DATA}/corpus_mc"
EVAL_TASKS = list(config["evaluation"]["tasks"])
THROUGHPUT_ENGINES = list(config["throughput"]["engines"])
SEARCH_ENGINE = STUDY.search_engine()
SEARCH_TOKENS = STUDY.search_tokens()  # the D the search predicts at and the frontier check trains at
VALIDATION = config["search"]["validation"]
GQA_SEARCH = config["search"]["gqa_search"]
VALIDATION_SEED = int(config["training"]["seeds"][0])
OPTIMUM_CHECK = config["optimum_check"]
LR_CHECK = config["lr_check"]


wildcard_constraints:
    arch=r"[A-Za-z0-9_][A-Za-z0-9_.-]*",  # any valid name: unknown ones get configured_architecture's error
    tokens=r"\d+",
    seed=r"\d+",
    shard=r"\d+",
    engine="|".join(engine_names()),  # the registry's names: lowercase words, no regex
    varch=SHAPE_NAME_PATTERN,
    larch=r"[A-Za-z0-9_][A-Za-z0-9_.-]*",  # the loop's: a configured name or a shape name
    size=r"\d+",
    k=r"\d+",
    factor=r"\d+(\.\d+)?",  # the lr check's multiple of the rule's lr (archscale.fit.lr_check)


# --- architectures ---------------------------------------------------------------
# Two families of rules build, train, evaluate and measure models: the study's grid ({arch}, a
# configured architecture, with {tokens} and {seed}) and the shapes the frontier check, the GQA
# step and the optimum check chose ({varch}), whose rules reuse the grid's with `use rule ...
# with:`. Each family passes its own functions (grid_* or shape_*) to the functions below that
# build a rule's params and resources, so no function asks which wildcards a job has.


def configured_architecture(name):
    """`name`, or a WorkflowError listing the configured names (a target for an unknown
    architecture would otherwise get Snakemake's bare MissingRuleException)."""
    if name not in STUDY.architectures:
        raise WorkflowError(f"architecture {name!r} is not in {CONFIG_SOURCE}; configured: "
                            f"{', '.join(ARCHS)}. Add it under architectures: or fix the target")
    return name


def grid_architecture(wildcards):
    """The configured architecture {arch} (an unknown name gets configured_architecture's
    error)."""
    return STUDY.architectures[configured_architecture(wildcards.arch)]


def shape_architecture(wildcards):
    """The shape {varch} that the frontier check, the GQA step or the optimum check chose: its
    name is its shape, so it needs no config entry."""
    return STUDY.shape_architecture(wildcards.varch)


def arch_params(architecture):
    """The params function of the resolved shape, the only thing a config.json depends on;
    `architecture` is the family's (grid_architecture or shape_architecture)."""
    return lambda wildcards: architecture(wildcards).to_dict()


# --- data ------------------------------------------------------------------------


def shard_files(wildcards=None):
    n = config["data"]["shards"]
    return [f"{DATA}/shards/{i}.{kind}" for i in range(n) for kind in ("train.bin", "val.bin", "json")]


DATA_RULES = ("tokenizer", "tokenize_shard", "merge_shards")  # a run forcing one rebuilds the data


# --- the study's runs, and the checks of its files on disk ------------------------


def run_paths(pattern):
    """Expand a per-run path pattern over every run of the study."""
    return [pattern.format(arch=a, tokens=t, seed=s) for a, t, s in STUDY.runs()]


_DONE = set()  # the checks of files on disk already run in this process


def once(name, check):
    """Run `check` the first time it is asked for in this process: while the first DAG is
    built, before any job starts. (A later pass, after a checkpoint, sees the files of jobs
    that are being rebuilt removed, which the checks would take for lost files.)"""
    if name not in _DONE:
        _DONE.add(name)
        check()


def train_outputs(arch, tokens, seed):
    """The files one run's train job writes (its model/, train_log.csv, metrics.json)."""
    return expand(list(map(str, rules.train.output)), arch=arch, tokens=tokens, seed=seed)


def study_output_jobs():
    """(rule, outputs, files built from them) of every per-architecture, per-run and
    per-measurement job of the study, for check_outputs_present."""
    jobs = []
    for arch in ARCHS:
        jobs.append(("architecture_config", [f"results/architectures/{arch}/config.json"],
                     ["results/architectures.csv"]))
        jobs += [("throughput", [f"results/throughput/{arch}/{engine}.json"],
                  ["results/throughput.csv"]) for engine in THROUGHPUT_ENGINES]
    for arch, tokens, seed in STUDY.runs():
        run = RUN.format(arch=arch, tokens=tokens, seed=seed)
        jobs.append(("train", train_outputs(arch, tokens, seed),
                     [f"{run}/eval.json", "results/runs.csv"]))
        jobs.append(("evaluate", [f"{run}/eval.json"], ["results/runs.csv"]))
    return jobs


def trains_again(arch, metrics_path):
    """Whether a run's train job reruns anyway: the training settings its metrics.json records
    are not the study's now (a lowered lr for a run that diverged, say)."""
    try:
        recorded = read_json(metrics_path)["provenance"]["settings"]["training"]
    except (OSError, DamagedFileError, KeyError, TypeError):
        return False
    return recorded != result_settings(STUDY.training_settings(arch))


def run_loss_files():
    """(metrics.json paths, eval.json paths) of the runs this run does not rebuild anyway: by
    force, or because their training settings changed (their old files are being replaced)."""
    metrics, evals = [], []
    for arch, tokens, seed in STUDY.runs():
        run = RUN.format(arch=arch, tokens=tokens, seed=seed)
        files = train_outputs(arch, tokens, seed) + [f"{run}/eval.json"]
        if not (forced(workflow, ("train",), files)
                or trains_again(arch, f"{run}/metrics.json")):
            metrics.append(f"{run}/metrics.json")
            if not forced(workflow, ("evaluate",), files[-1:]):
                evals.append(f"{run}/eval.json")
    return metrics, evals


RUN_LOSSES = {  # what each run file must hold as a finite number, and the fix of one that does not
    "metrics.json": (("train_loss",),
                     "The run diverged (or the file was edited). Lower training.lr (or the "
                     "architecture's own training.lr) and run again: the run retrains with the "
                     "new settings (the trainer now stops a run that diverges). An edited file: "
                     "rerun it"),
    "eval.json": (("val_loss", "val_bpb"),
                  "The evaluation gave no finite loss (or the file was edited): rerun it"),
}


def check_run_losses():
    """Every run's metrics.json and eval.json (but those being rebuilt) readable, with finite
    losses (RUN_LOSSES; archscale.workflow.snakemake.check_losses)."""
    metrics, evals = run_loss_files()
    for name, paths in (("metrics.json", metrics), ("eval.json", evals)):
        keys, fix = RUN_LOSSES[name]
        check_losses(workflow, paths, keys, fix)


def valid_json(paths):
    """An input function's paths, each existing one checked to be readable JSON while the DAG
    is built: a damaged metrics.json stops the run with its name, before the job that reads it
    starts (its failure would delete the table it writes)."""
    try:
        check_json_files([paths] if isinstance(paths, str) else paths)
    except DamagedFileError as exc:
        raise WorkflowError(str(exc)) from None
    return paths


def measurement_paths():
    """The throughput measurement of every architecture with every engine of the study."""
    return expand("results/throughput/{arch}/{engine}.json", arch=ARCHS, engine=THROUGHPUT_ENGINES)


def check_study_files():
    """The checks of the study's files on disk, run once, by the first input function of the
    run (rule all's, or the target's: an input function's error deeper in the DAG is dropped
    by Snakemake when the file it would build exists). Each stops the run, before any job,
    with the files and the fix (archscale.workflow.snakemake): a result dated in the future;
    a train.bin or val.bin whose size is not meta.json's; an output of a run, an architecture
    or a measurement that is lost while what was built from it is present; a run whose
    metrics.json or eval.json is damaged or holds a loss that is not a finite number; a
    damaged measurement (those being rebuilt by force aside)."""
    if not checks_apply(workflow):  # a cluster job's own DAG, --summary, --report
        return
    once("future", lambda: check_no_future_files(workflow))
    once("tokens", lambda: check_token_files(workflow, DATA, DATA_RULES))
    once("outputs", lambda: check_outputs_present(workflow, study_output_jobs()))
    once("losses", check_run_losses)
    once("measurements", lambda: valid_json([path for path in measurement_paths()
                                             if not forced(workflow, ("throughput",), [path])]))


def study_checks(wildcards=None):
    """No input: the input function that runs check_study_files, for rules without another."""
    check_study_files()
    return []


def configured_architecture_input(wildcards):
    """No input: refuses an unknown {arch} while the DAG is built (see configured_architecture).
    The {varch} rules take study_checks instead: a chosen shape needs no config entry."""
    check_study_files()
    configured_architecture(wildcards.arch)
    return []


def configured_run(wildcards):
    """No input: refuses, while the DAG is built, a run that the study does not configure
    (it would train, but no table would ever collect it)."""
    check_study_files()
    arch = configured_architecture(wildcards.arch)
    tokens, seed = int(wildcards.tokens), int(wildcards.seed)
    budgets, seeds = STUDY.token_budgets(arch), STUDY.training_settings(arch)["seeds"]
    if tokens not in budgets or seed not in seeds:
        raise WorkflowError(
            f"results/runs/{arch}/{tokens}/seed{seed} is not a run of the study in "
            f"{CONFIG_SOURCE}: {arch} trains token budgets {budgets} with seeds {seeds}. "
            "Add the budget or seed to the config (then runs.csv collects it) or fix the target")
    return []


STUDY_TABLES = []  # every path given to table(), checked together


def table(path):
    """The input function of a study table (runs.csv, a fit, the calibration): while the DAG is
    built, a damaged JSON table stops the run with its name, and a table that is missing while
    files built from it exist stops it with the command that rebuilds it (Snakemake would say
    "Nothing to be done"; archscale.workflow.snakemake.check_tables_present)."""

    def table_input(wildcards):
        check_study_files()
        check_tables_present(workflow, STUDY_TABLES)
        return valid_json(path) if path.endswith(".json") else path

    if path not in STUDY_TABLES:
        STUDY_TABLES.append(path)
    table_input.table_path = path
    return table_input


def run_results(name):
    """Every run's `name` (metrics.json, eval.json), after check_study_files, which checks
    that each one is readable JSON with finite losses (RUN_LOSSES)."""
    check_study_files()
    return run_paths(f"{RUN}/{name}")


def measurements(wildcards):
    """Every throughput measurement of the study, after check_study_files, which checks that
    each one is readable JSON."""
    check_study_files()
    return measurement_paths()


# --- training --------------------------------------------------------------------


def grid_training_settings(wildcards):
    """The training section with {arch}'s own overrides."""
    return STUDY.training_settings(wildcards.arch)


def shape_training_settings(wildcards):
    """The training section as configured: a chosen shape ({varch}) has no overrides."""
    return config["training"]


def run_tokens(wildcards):
    """The token budget a run's path names ({tokens}: the grid's and the optimum check's)."""
    return int(wildcards.tokens)


def run_seed(wildcards):
    """The seed a run's path names ({seed}: the grid's and the optimum check's)."""
    return int(wildcards.seed)


# Each function below takes the family's own functions (`architecture`, `settings`: grid_* or
# shape_*; `tokens`: run_tokens or the frontier check's validation_tokens) and returns the
# callable Snakemake evaluates for each job of a train or evaluate rule.


def training_params(settings):
    """The training settings that change the trained model (per-architecture overrides
    applied); throughput knobs (threads, gpus, checkpoint cadence, compile) are left out."""
    return lambda wildcards: result_settings(settings(wildcards))


def training_threads(settings):
    return lambda wildcards: settings(wildcards)["threads"]


def training_gpu_request(settings):
    """GPUs a training job asks SLURM for, in all (the plugin's `gpu` is a total for the job,
    sent as --gpus): `gpus` per node, at least one, times `nodes`."""
    return lambda wildcards: slurm_training_request(settings(wildcards))["gpu"]


def training_nodes(settings):
    return lambda wildcards: slurm_training_request(settings(wildcards))["nodes"]


def training_slurm_extra(settings):
    return lambda wildcards: slurm_training_request(settings(wildcards))["slurm_extra"]


def training_mem_mb(architecture, settings):
    return lambda wildcards, attempt: training_memory_mb(architecture(wildcards),
                                                         settings(wildcards), SEQ_LEN, attempt)


def training_runtime(architecture, settings, tokens):
    return lambda wildcards: training_runtime_minutes(architecture(wildcards), settings(wildcards),
                                                      tokens(wildcards), SEQ_LEN)


# --- evaluation ------------------------------------------------------------------


def local_task_files(wildcards=None):
    """The task YAMLs of the locally built tasks the study evaluates."""
    return [f"{MC_DIR}/corpus_mc.yaml"] if "corpus_mc" in EVAL_TASKS else []


def evaluation_mem_mb(architecture):
    return lambda wildcards, attempt: evaluation_memory_mb(architecture(wildcards), attempt)


def evaluation_gpu(settings):
    """One GPU when the run trained on GPUs, none when it trained on the CPU."""
    return lambda wildcards: 1 if settings(wildcards)["gpus"] > 0 else 0


# --- throughput ------------------------------------------------------------------


def throughput_settings(wildcards):
    """Only the throughput keys that change this engine's measurement (not gpu / gpus)."""
    return measurement_settings(config["throughput"], wildcards.engine)


def throughput_conda(wildcards):
    """The engine's own env file (its module declares it); None: the study's environment."""
    env = conda_env(wildcards.engine)
    return None if env is None else f"../envs/{env}"


def throughput_cores(wildcards):
    """Every core Snakemake has, for a CPU measurement run on this machine: no training or
    evaluation job can then share the cores it times (the measurement itself still runs
    throughput.threads threads, its settings). A GPU measurement, or one that SLURM places,
    asks for throughput.threads: the scheduler gives it its own device or CPUs."""
    own = config["throughput"]["threads"]
    if config["throughput"]["device"] != "cpu" or not workflow.local_exec:
        return own
    try:
        return max(own, workflow.cores)
    except WorkflowError:  # no --cores (a dry run may omit it)
        return own


def throughput_gpus(wildcards):
    """One GPU unless the study measures on the CPU (the default laptop study)."""
    return 0 if config["throughput"]["device"] == "cpu" else 1
