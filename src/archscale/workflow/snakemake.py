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
