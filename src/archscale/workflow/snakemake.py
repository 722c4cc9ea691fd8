"""Small helpers the Snakemake scripts share: logging to the rule's log file, hub switches."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from archscale.training.loop import TrainJob, result_settings


@contextlib.contextmanager
def log_to(log_path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Send stdout, stderr and the 'archscale' logger to the rule's log file."""
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


def rule_train_job(sm: Any, settings: dict[str, Any]) -> Any:
    """The TrainJob of a training rule (train, validation_train): the run from the rule's
    params, paths from its input and output, after checking that the settings resolved in the
    job are the rule's params."""

    if result_settings(settings) != sm.params.training:
        raise RuntimeError("the training settings resolved in the job differ from the rule's "
                           "params; rerun snakemake (the config changed under the job?)")
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

    Snakemake's `configfile:` directive loads `default_file` and lays --configfile over it, so
    a paper config would silently inherit the toy study's settings wherever it is silent. Here
    a --configfile replaces `default_file`: the directive is skipped and Snakemake's own
    command-line config (--configfile files, then --config overrides) is the whole config.
    Without --configfile, `default_file` is read (a YAML error names its line) and --config
    overrides apply on top, as with the directive.
    """
    from archscale.config import check_yaml_file

    files = [os.path.relpath(f) for f in workflow.overwrite_configfiles]
    overrides = bool(workflow.config_settings.config)
    if not files:
        check_yaml_file(default_file)
        workflow.configfile(default_file)
        files = [default_file]
    return " + ".join(files) + (" with --config overrides" if overrides else "")


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
