"""Small helpers the Snakemake scripts share: logging to the rule's log file, hub switches."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from archscale.training.job import TrainJob, job_settings


@contextlib.contextmanager
def log_to(log_path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Send stdout, stderr and the 'archscale' logger to the rule's log file, after checking
    that the job runs the code the workflow hashed (`check_job_code`)."""
    check_job_code()
    logger = logging.getLogger("archscale")
    logger.setLevel(logging.INFO)
    if not log_path:
        handler = logging.StreamHandler(sys.stderr)
        logger.addHandler(handler)
        try:
            yield logger
        finally:
            logger.removeHandler(handler)
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as handle:
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = handle
        try:
            yield logger
        except BaseException:
            import traceback
            traceback.print_exc(file=handle)
            raise
        finally:
            sys.stdout, sys.stderr = old_out, old_err
            logger.removeHandler(handler)


def needs_hub(config: dict[str, Any]) -> bool:
    """True when the study reads a corpus, tokenizer or eval task from the Hugging Face hub."""
    data = config["data"]
    if data["source"]["kind"] == "hf":
        return True
    tok = data["tokenizer"]
    if tok["kind"] == "pretrained" and not Path(tok["path"]).exists():
        return True
    return any(task != "corpus_mc" for task in config["evaluation"]["tasks"])


def set_offline_if_possible(config: dict[str, Any]) -> bool:
    """Set the HF offline switches unless the study needs the hub; returns whether it did."""
    if needs_hub(config):
        return False
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[key] = "1"
    return True


def rule_train_job(sm: Any, speed: dict[str, Any]) -> Any:
    """The TrainJob of a training rule (train, validation_train, optimum_check_train): the run
    and its result-deciding settings from the rule's params, paths from its input and output,
    and only the speed knobs (threads, gpus, nodes, checkpoint cadence) from `speed`, the
    study's training settings: what decides the result is what decided the rerun."""
    settings = job_settings(dict(sm.params.training), speed)
    return TrainJob(
        arch_config=sm.input.arch, train_bin=sm.input.train, meta=sm.input.meta,
        tokenizer_dir=os.path.dirname(sm.input.tokenizer),
        model_dir=os.path.dirname(sm.output.model), log_csv=sm.output.log_csv,
        metrics_json=sm.output.metrics, resume_dir=sm.params.resume,
        tokens=int(sm.params.tokens), seed=int(sm.params.seed), seq_len=sm.params.seq_len,
        settings=settings, threads=sm.threads, label=dict(sm.params.label))


def load_study_config(workflow: Any, default_file: str) -> str:
    """Load the study's config into the workflow the way the README promises, and say where it
    came from (for error messages).

    Every config file is read by `archscale.config.read_config_file`, the loader `archscale
    plan` uses: yaml.safe_load, and a YTE template (`__use_yte__`) refused. Snakemake's
    `configfile:` directive would read `default_file` with its own loader, which evaluates a
    YTE template's Python expressions, and would lay --configfile over it, so a paper config
    silently inherited the toy study's settings wherever it was silent. Here a --configfile
    replaces `default_file`, and the config Snakemake built from the command line is replaced by
    the files as read here, with the --config overrides on top (`merge_config`, as Snakemake
    merges them). Snakemake has read a --configfile itself before the workflow starts, so a YTE
    template given there has already been evaluated when it is refused (docs/reruns.md).
    """
    from snakemake.exceptions import WorkflowError

    from archscale.config import YTE_KEY, ConfigError, merge_config, read_config_file

    given = [os.path.relpath(f) for f in workflow.overwrite_configfiles]
    overrides = workflow.config_settings.config or {}
    files = given or [default_file]
    config: dict[str, Any] = {}
    try:
        for path in files:
            config = merge_config(config, read_config_file(path))
    except ConfigError as exc:
        message = str(exc)
        if given and YTE_KEY in message:
            message += (". Snakemake evaluated the template when it read --configfile, before "
                        "this workflow could refuse it; nothing it computed is used")
        raise WorkflowError(message) from None
    workflow.globals["config"] = merge_config(config, overrides)
    if not given:
        workflow.configfiles.append(default_file)  # the report lists it, as with `configfile:`
    return " + ".join(files) + (" with --config overrides" if overrides else "")


# The environment variable that tells a job which archscale package the workflow imported and
# hashed (see `run_jobs_on_this_code`).
CODE_ENV = "ARCHSCALE_WORKFLOW_PACKAGE"


def run_jobs_on_this_code() -> str:
    """Make every job import the archscale package this workflow imported, whose modules decide
    reruns (archscale.workflow.code_versions hashes them), and return that package's folder.

    A job's script runs in a new Python process, where an installed archscale (another
    checkout's, in a shared environment) would come first: Snakemake appends its own search
    paths after the interpreter's. The package's parent folder is put first on PYTHONPATH, which
    every job inherits (also on a cluster node, where the job runs the Snakefile again), and
    CODE_ENV names the package, so a job that still imports another one refuses to run
    (`check_job_code`)."""
    import archscale

    package = os.path.dirname(os.path.realpath(archscale.__file__))
    src = os.path.dirname(package)
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join([src] + rest)
    os.environ[CODE_ENV] = package
    return package


def check_job_code() -> None:
    """Raise RuntimeError when this job imported another archscale than the workflow that
    started it (CODE_ENV): its results would not be those of the code whose hash decides
    reruns."""
    expected = os.environ.get(CODE_ENV)
    here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    if expected and os.path.realpath(expected) != here:
        raise RuntimeError(
            f"this job imported archscale from {here}, but the workflow hashed and runs "
            f"{expected}: the job would run other code than the code whose hash decides "
            "reruns. Remove the other copy from the job's environment (PYTHONPATH, an "
            "installed archscale in the rule's conda env) or run snakemake from the checkout "
            "that holds it")


def check_tables_present(workflow: Any, tables: list[str]) -> None:
    """Refuse, while the DAG is built, a run where a study table is missing while files built
    from it exist, unless the run already forces the rule that writes it.

    Snakemake does not rerun a job whose output is missing when everything downstream of it is
    present and newer (its rule for intermediate files), so with results/runs.csv deleted by a
    failed job, `snakemake results/pareto.csv` would say "Nothing to be done". The workflow
    checks its collected JSON inputs while the DAG is built, so a damaged file no longer gets a
    table deleted; this catches a table lost any other way and gives the one command that
    rebuilds every lost table and what was built from them. (A workflow cannot add --forcerun
    itself: the run's DAG settings are fixed before its input functions run.)
    """
    from snakemake.exceptions import WorkflowError

    settings = workflow.dag_settings
    if settings is None or settings.forceall:
        return
    rules = {rule.name: rule for rule in workflow.rules}
    lost: dict[str, str] = {}  # table -> the rule that writes it
    built_from: list[str] = []
    for table in tables:
        producer = next((name for name, rule in rules.items()
                         if table in map(str, rule.output)), None)
        if (os.path.exists(table) or producer is None or producer in settings.forcerun
                or table in settings.forcerun):
            continue
        downstream = [f for f in _downstream_outputs(rules, producer) if os.path.exists(f)]
        if downstream:
            lost[table] = producer
            built_from += [f for f in downstream if f not in built_from]
    if lost:
        producers = sorted(set(lost.values()))
        raise WorkflowError(
            f"{', '.join(lost)} {'is' if len(lost) == 1 else 'are'} missing, but "
            f"{', '.join(built_from[:3])}{' and more' if len(built_from) > 3 else ''} were "
            f"built from {'it' if len(lost) == 1 else 'them'} (a failed job deletes the table "
            "it writes). Snakemake does not rebuild a missing intermediate file on its own; "
            "rebuild, with what was built from it:\n"
            f"    snakemake --cores all results/pareto.csv --forcerun {' '.join(producers)}")


def _downstream_outputs(rules: dict[str, Any], name: str) -> list[str]:
    """The fixed output paths of every rule that reads, directly or not, what `name` writes."""
    readers: dict[str, set[str]] = {}  # file -> the rules that read it (fixed inputs only)
    for rule in rules.values():
        for path in rule.input:  # a fixed path, or an input function that says its table
            path = path if isinstance(path, str) else getattr(path, "table_path", None)
            if path is not None:
                readers.setdefault(str(path), set()).add(rule.name)
    seen, todo, files = {name}, [name], []
    while todo:
        for out in map(str, rules[todo.pop()].output):
            for reader in sorted(readers.get(out, ())):
                if reader not in seen:
                    seen.add(reader)
                    todo.append(reader)
                    files += [str(f) for f in rules[reader].output if "{" not in str(f)]
    return files


REBUILD = "snakemake --cores all results/pareto.csv"  # the start of every rebuild command


def forced(workflow: Any, rules: tuple[str, ...], files: list[str]) -> bool:
    """Whether this run already rebuilds what `rules` write to `files`: --forceall, --forcerun
    of one of the rules or files, or one of the files as a target."""
    settings = workflow.dag_settings
    if settings is None:
        return False
    asked = {os.path.normpath(str(f)) for f in (*settings.forcerun, *settings.targets)}
    return bool(settings.forceall or asked & set(rules)
                or any(os.path.normpath(f) in asked for f in files))


def checks_apply(workflow: Any) -> bool:
    """The checks of the files on disk run in the process that plans a run (a dry run too); a
    cluster job, which builds a DAG of its own job only, relies on them (and on the job's own
    checks), and `--summary` or `--report`, which run nothing, show the files as they are."""
    return (workflow.dag_settings is not None and workflow.is_main_process
            and getattr(workflow, "execution_settings", None) is not None)


def _last_started(workflow: Any, paths: list[str]) -> float | None:
    """When the job that writes `paths` last started, from Snakemake's metadata records (None
    when none is recorded: a job never run here, or .snakemake/ deleted)."""
    from snakemake.io import IOFile

    times = []
    for path in paths:
        try:
            record = workflow.persistence.metadata(IOFile(path))
        except Exception:  # another persistence backend or a damaged record: no answer
            record = None
        if record is not None and record.starttime:
            times.append(float(record.starttime))
    return max(times) if times else None


def check_outputs_present(workflow: Any, jobs: list[tuple[str, list[str], list[str]]]) -> None:
    """Refuse, while the DAG is built, a run where outputs of a job (a run's model/, metrics.json
    or eval.json, an architecture's config.json, a measurement) are missing although files built
    from them were written after the job last ran. `jobs`: (rule, its outputs, files built from
    them), one per job.

    Snakemake does not rebuild a missing file whose consumers are present and newer, so a
    deleted model/ or run folder gave "Nothing to be done". The job's last start comes from
    Snakemake's metadata: a file a failed job removed is not reported (the job started after
    its consumers were built, and Snakemake reruns it for the reason it ran), nor one never
    built here (a new run, or a study copied without .snakemake/)."""
    from snakemake.exceptions import WorkflowError

    if not checks_apply(workflow):
        return
    lost: list[tuple[str, list[str]]] = []
    for rule, outputs, built in jobs:
        missing = [f for f in outputs if not os.path.exists(f)]
        if not missing or forced(workflow, (rule,), outputs):
            continue
        started = _last_started(workflow, missing)
        if started is not None and any(os.path.exists(f) and os.path.getmtime(f) > started
                                       for f in built):
            lost.append((rule, missing))
    if not lost:
        return
    paths = [f for _, missing in lost for f in missing]
    shown = ", ".join(paths[:6]) + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")
    retrains = any(rule == "train" for rule, _ in lost)
    raise WorkflowError(
        f"{shown} {'is' if len(paths) == 1 else 'are'} missing (deleted?), but files built from "
        f"{'it' if len(paths) == 1 else 'them'} are present. Snakemake does not rebuild a "
        "missing file whose results are already used downstream, and would say \"Nothing to "
        "be done\". Restore the files if you have them (then nothing reruns), or rebuild them "
        f"and what was built from them{' (a lost model retrains its run)' if retrains else ''}:"
        f"\n    {REBUILD} --forcerun {' '.join(missing[0] for _, missing in lost)}")


# A file this many seconds in the future is not a clock difference between hosts.
FUTURE_TOLERANCE_S = 5.0


def check_no_future_files(workflow: Any, root: str = "results") -> None:
    """Refuse, while the DAG is built, a run where a result file's modification time is in the
    future (a clock that was ahead, an archive unpacked with its times, `touch -d`).

    Snakemake would rerun what reads such a file, find the new output older than that input,
    fail the job and delete the output (results/runs.csv, say), and `--forcerun` fails the same
    way. Touching the file gives it the current time: what was built from it then reruns."""
    import time
    from datetime import datetime

    from snakemake.exceptions import WorkflowError

    if not checks_apply(workflow) or not os.path.isdir(root):
        return
    now = time.time()
    ahead = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root)
                   for name in names
                   if os.lstat(os.path.join(folder, name)).st_mtime > now + FUTURE_TOLERANCE_S)
    if not ahead:
        return
    latest = max(os.lstat(f).st_mtime for f in ahead)
    shown = ", ".join(ahead[:5]) + (f" and {len(ahead) - 5} more" if len(ahead) > 5 else "")
    fix = (f"touch -c {' '.join(ahead)}" if len(ahead) <= 5 else
           f"find {root} -newermt now -exec touch -c {{}} +")
    raise WorkflowError(
        f"{shown} {'has' if len(ahead) == 1 else 'have'} a modification time in the future "
        f"(up to {datetime.fromtimestamp(latest):%Y-%m-%d %H:%M:%S}; now "
        f"{datetime.fromtimestamp(now):%Y-%m-%d %H:%M:%S}). A job that reads "
        f"{'it' if len(ahead) == 1 else 'them'} would write an output older than its input, "
        "which Snakemake treats as a failure: it deletes that output (and --forcerun fails the "
        "same way). Give the files the current time (what was built from them then reruns, "
        f"with the same results):\n    {fix}")


def check_token_files(workflow: Any, data_dir: str, rules: tuple[str, ...]) -> None:
    """Refuse, while the DAG is built, a train.bin or val.bin whose size is not the one its
    meta.json records (a truncated file would otherwise be planned, and then trained on, as the
    whole corpus). The size only: the jobs that read the files also check their sha256
    (archscale.data.corpus.load_tokens). Skipped when the run rebuilds the data (`rules`)."""
    from snakemake.exceptions import WorkflowError

    from archscale.data.corpus import DataError, check_tokens
    from archscale.io import DamagedFileError, read_json

    meta_path = os.path.join(data_dir, "meta.json")
    files = [os.path.join(data_dir, f"{split}.bin") for split in ("train", "val")]
    if (not checks_apply(workflow) or not os.path.exists(meta_path)
            or forced(workflow, rules, [*files, meta_path])):
        return
    try:
        meta = read_json(meta_path)
        sizes = {k: v for k, v in meta.items() if not k.endswith("_sha256")}
        for path in files:
            if os.path.exists(path):
                check_tokens(path, meta_path, sizes)
    except (DataError, DamagedFileError) as exc:
        raise WorkflowError(str(exc)) from None


def check_losses(workflow: Any, paths: list[str], keys: tuple[str, ...], fix: str) -> None:
    """Check, while the DAG is built, that each of `paths` that exists is readable JSON whose
    `keys` hold finite numbers (`val_bpb` may be null): a run whose loss is NaN, infinite or
    null stops the run with the file and the command that reruns it, before results/runs.csv
    is rebuilt and the fits fail on its row. `fix` is said before that command."""
    import math

    from snakemake.exceptions import WorkflowError

    from archscale.io import DamagedFileError, read_json

    if not checks_apply(workflow):
        return
    for path in paths:
        if not os.path.exists(path):
            continue
        try:
            data = read_json(path)
        except DamagedFileError as exc:
            raise WorkflowError(str(exc)) from None
        for key in keys:
            value = data.get(key) if isinstance(data, dict) else None
            if value is None and key == "val_bpb" and isinstance(data, dict):
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) \
                    or not math.isfinite(value):
                shown = "missing" if not isinstance(data, dict) or key not in data else \
                    json.dumps(value)  # null, NaN, Infinity or a string, as in the file
                raise WorkflowError(
                    f"{path}: {key} is {shown}, not a finite number, so the fits cannot use "
                    f"this run. {fix}:\n    {REBUILD} --forcerun {path}")


def warn_if_locked(workflow: Any, lock_dir: str = ".snakemake/locks") -> bool:
    """Say plainly, before Snakemake's terse "Directory cannot be locked", what another run's
    lock means here: a dry run still answers but describes the files as they are now, while
    that run changes them (so its "Nothing to be done" or job list may not hold), and a real
    run refuses to start. Returns whether a lock was found."""
    if not workflow.is_main_process or not os.path.isdir(lock_dir) or not os.listdir(lock_dir):
        return False
    logging.getLogger("archscale").warning(
        "archscale: another snakemake run holds this directory's lock (%s). A dry run (-n) "
        "shows the files as they are now, while that run is still writing them: what it "
        "lists as done or to do can change when that run ends. A real run will refuse to "
        "start. If no snakemake is running here (one was killed), remove the stale lock "
        "with `snakemake --unlock`.", lock_dir)
    return True


def check_engines_run_shapes(study: Any, source: str = "config.yaml") -> None:
    """Refuse, when the study loads, a configured engine that has no kernel for a configured
    shape on the configured device (vLLM's CPU attention and head_dim 16), naming what the
    engine supports; without this the measurement job fails from deep inside the engine.
    Only throughput.device "cpu" is checked: "auto" and "cuda" mean the job's node decides."""
    from archscale.config import ConfigError
    from archscale.throughput.engines.base import shape_problems

    section = study.config["throughput"]
    problems = shape_problems(list(section["engines"]),
                              {name: arch.head_dim for name, arch in study.architectures.items()},
                              str(section["device"]))
    if problems:
        raise ConfigError(f"{source}: throughput.engines cannot measure every architecture on "
                          "device "
                          f"{section['device']!r}:\n  " + "\n  ".join(problems))


def warn_target_misses(workflow: Any, study: Any) -> list[str]:
    """Say, once per run in the main process, which architectures given by targets have a shape
    whose x or r is off its target by more than targets.tolerance (`Study.target_misses`).
    Returns the misses."""
    if not workflow.is_main_process:
        return []
    misses = study.target_misses()
    if misses:
        logging.getLogger("archscale").warning(
            "archscale: %d architecture(s) given by targets miss their x or r target (integer "
            "heads and MLP widths at this size); the fits use the shapes' real x and r, but "
            "the names promise more:\n  %s\nTo come closer, change n_layers or head_dim, or "
            "give the shape explicitly (d_model, n_heads, ...).", len(misses),
            "\n  ".join(misses))
    return misses
