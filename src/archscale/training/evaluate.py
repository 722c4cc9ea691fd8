"""Evaluation of a trained checkpoint: held-out loss and bits per byte, and lm-eval accuracy.

- Validation loss is measured on fixed windows of val.bin (evenly spread over the split, the
  same for every run), so runs differ only by their model. Bits per byte divides the summed
  loss (in bits) by the UTF-8 bytes of the predicted tokens' text, which makes the figure
  comparable across tokenizers.
- Accuracy runs through lm-evaluation-harness's evaluator on the saved checkpoint directory (the
  same files vLLM and SGLang load), with each task's metric named as the paper reports it;
  `acc_avg` is their mean.
- `evaluation.harness_model` picks what computes the model: `native` (the default) reads the
  checkpoint into a plain-torch forward (archscale.training.llama_forward, with lm-eval's
  interface in archscale.training.harness_lm), which gives transformers' logits (bit for bit
  on this project's CPU machine, within 1e-5 in the tests) and spares each job the import of
  transformers, which took more of an evaluation job than the evaluation itself; `hf` runs
  transformers' `LlamaForCausalLM` and lm-eval's `HFLM`.
- A job holds itself to the threads its rule declares (`limited_threads`), so Snakemake's core
  accounting stays true while other jobs share the machine.
- `runs_table` joins every run's metrics.json and eval.json with the architecture accounting
  into results/runs.csv, the table the law fitting reads.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from archscale.data.corpus import load_tokens
from archscale.data.mc_task import data_file_of
from archscale.io import read_json, write_json
from archscale.provenance import now, provenance
from archscale.hf_compat import allow_decoupled_head_dim

# The paper's metric per task (Table 2/3 of Bian et al.); corpus_mc is this project's offline task.
TASK_METRICS: dict[str, str] = {
    "arc_easy": "acc_norm", "arc_challenge": "acc_norm", "hellaswag": "acc_norm",
    "openbookqa": "acc_norm", "piqa": "acc_norm", "sciq": "acc_norm",
    "winogrande": "acc", "lambada_openai": "acc", "coqa": "f1", "corpus_mc": "acc_norm",
}
FALLBACK_METRICS = ("acc_norm", "acc", "f1", "exact_match")


class EvalError(ValueError):
    """An evaluation that cannot run as configured; the message says what to change."""


# ---------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def limited_threads(threads: int) -> Iterator[dict[str, int]]:
    """Hold this process to `threads` CPU threads inside the block; yields the counts in force.

    Why: Snakemake places jobs by the `threads:` their rules declare, and a job that runs more
    slows the jobs it shares the cores with (issue 26). Limited: torch's intra-op pool and, where
    torch still allows it (once per process, before any parallel work), its inter-op pool; the
    BLAS and OpenMP pools threadpoolctl finds (numpy's, torch's); Arrow's pool, which reads the
    task data for lm-eval's datasets; the tokenizers' Rust pool (read when it first starts).
    Everything but the inter-op pool is restored on exit.
    """
    import pyarrow
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    if int(threads) < 1:
        raise EvalError(f"evaluation.threads is {threads}; it must be 1 or more")
    threads = int(threads)
    saved = {"torch": torch.get_num_threads(), "arrow": pyarrow.cpu_count(),
             "rayon": os.environ.get("RAYON_NUM_THREADS")}
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # "cannot set ... after parallel work has started"
        torch.set_num_interop_threads(threads)
    pyarrow.set_cpu_count(threads)
    try:
        with threadpool_limits(limits=threads):
            yield {"torch": torch.get_num_threads(),
                   "torch_interop": torch.get_num_interop_threads(), "arrow": pyarrow.cpu_count(),
                   "native_pools": max((p["num_threads"] for p in threadpool_info()), default=0)}
    finally:
        torch.set_num_threads(saved["torch"])
        pyarrow.set_cpu_count(saved["arrow"])
        if saved["rayon"] is None:
            os.environ.pop("RAYON_NUM_THREADS", None)
        else:
            os.environ["RAYON_NUM_THREADS"] = saved["rayon"]


# ---------------------------------------------------------------------------------------------
# Validation loss and bits per byte
# ---------------------------------------------------------------------------------------------

def heldout_windows(n_tokens: int, seq_len: int, val_tokens: int) -> np.ndarray:
    """Start offsets of the fixed evaluation windows (seq_len inputs + 1 target each).

    ceil(val_tokens / seq_len) non-overlapping windows, spread evenly over the split; all of
    them when the split is smaller.
    """
    available = (n_tokens - 1) // seq_len
    if available < 1:
        raise EvalError(f"val.bin holds {n_tokens} tokens, fewer than one window of "
                        f"{seq_len + 1}; raise data.val_fraction")
    wanted = min(available, -(-val_tokens // seq_len))
    picks = np.unique(np.linspace(0, available - 1, wanted).round().astype(np.int64))
    return picks * seq_len


def heldout_loss(logits_of: Callable[[Any], Any], tokens: np.ndarray, seq_len: int,
                 val_tokens: int, batch_size: int, decode=None,
                 device: str = "cpu") -> dict[str, Any]:
    """Mean next-token loss (nats) over the fixed windows, and bits per byte when `decode`
    (token ids -> text) is given. Special tokens count in the loss and as zero bytes.

    `logits_of` maps a [batch, seq] tensor of token ids to [batch, seq, vocab] logits.
    """
    import torch
    import torch.nn.functional as F

    starts = heldout_windows(len(tokens), seq_len, val_tokens)
    total_nats, total_tokens, total_bytes = 0.0, 0, 0
    with torch.inference_mode():
        for i in range(0, len(starts), batch_size):
            block = np.stack([np.asarray(tokens[s:s + seq_len + 1])
                              for s in starts[i:i + batch_size]])
            block = torch.from_numpy(block.astype(np.int64)).to(device)
            logits = logits_of(block[:, :-1])
            total_nats += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                block[:, 1:].reshape(-1), reduction="sum"))
            total_tokens += block[:, 1:].numel()
            if decode is not None:
                total_bytes += sum(len(decode(row).encode("utf-8"))
                                   for row in block[:, 1:].cpu().tolist())
    result = {"val_loss": total_nats / total_tokens, "val_tokens": total_tokens,
              "val_windows": int(len(starts)), "seq_len": seq_len}
    if decode is not None:
        result["val_bytes"] = total_bytes
        result["val_bpb"] = total_nats / math.log(2) / total_bytes if total_bytes else None
    return result


# ---------------------------------------------------------------------------------------------
# lm-eval accuracy
# ---------------------------------------------------------------------------------------------

def task_metric(task: str, available: Iterable[str]) -> str:
    """The metric reported for a task: the paper's choice, else the first of acc_norm, acc, ..."""
    names = {key.split(",")[0] for key in available}
    if task in TASK_METRICS:
        metric = TASK_METRICS[task]
        if metric not in names:
            raise EvalError(f"lm-eval reported no {metric!r} for task {task!r} (got "
                            f"{sorted(names)}); check the task's metric_list")
        return metric
    for metric in FALLBACK_METRICS:
        if metric in names:
            return metric
    raise EvalError(f"task {task!r}: none of {FALLBACK_METRICS} among its metrics "
                    f"{sorted(names)}; add it to archscale.training.evaluate.TASK_METRICS")


HARNESS_MODELS = ("native", "hf")


def check_harness_model(name: str) -> str:
    """`name` when it is one of HARNESS_MODELS; else an EvalError naming the choices."""
    if name not in HARNESS_MODELS:
        raise EvalError(f"evaluation.harness_model is {name!r}; use one of "
                        f"{list(HARNESS_MODELS)}")
    return name


def import_libraries(harness_model: str = "native") -> None:
    """Import what an evaluation job runs (torch, lm-eval's evaluator and tasks, and the model
    code `harness_model` names) at once, so a script can do it with the garbage collector
    paused (scripts/evaluate.py says why). `native` imports no transformers."""
    import lm_eval.evaluator  # noqa: F401
    import lm_eval.tasks  # noqa: F401
    import pyarrow  # noqa: F401
    import threadpoolctl  # noqa: F401
    import torch  # noqa: F401

    if harness_model == "hf":
        import lm_eval.models.huggingface  # noqa: F401
        from transformers import AutoTokenizer, LlamaForCausalLM  # noqa: F401
    else:
        import archscale.training.harness_lm  # noqa: F401


def run_lm_eval(lm: Any, tasks: list[str], manager: Any,
                limit: int | None = None) -> dict[str, Any] | None:
    """lm-eval's evaluator on `tasks`, prepared as `simple_evaluate` prepares them (its seeds,
    zero-shot unless a task's YAML says otherwise), without the report of the environment that
    `simple_evaluate` adds to every result.

    Why: that report (`add_env_info`: torch's collect_env, which runs `pip list` and probes the
    GPUs) took 1.2-1.5 s of each evaluation job, more than the evaluation itself (issue 26), and
    no figure of ours reads it. lm-eval has no switch for it; `evaluate` is its lower-level entry.
    """
    import torch
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import get_task_dict

    random.seed(DEFAULT_RANDOM_SEED)
    np.random.seed(DEFAULT_OTHER_SEED)
    torch.manual_seed(DEFAULT_OTHER_SEED)
    if hasattr(manager, "load"):  # lm-eval 0.4.12 and later: {"tasks": {name: Task}, ...}
        task_dict = manager.load(list(tasks))
        leaves = task_dict["tasks"].values()
    else:  # 0.4.10-0.4.11: get_task_dict's nested {group: {name: Task}, name: Task}
        task_dict = get_task_dict(list(tasks), manager)
        leaves = _leaf_tasks(task_dict)
    for task in leaves:
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
    return evaluate(lm=lm, task_dict=task_dict, limit=limit, bootstrap_iters=1000,
                    log_samples=False)


def _leaf_tasks(task_dict: dict) -> Iterator[Any]:
    """The Task objects of get_task_dict's nested {group: {name: Task}, name: Task} dict."""
    for value in task_dict.values():
        if isinstance(value, dict):
            yield from _leaf_tasks(value)
        else:
            yield value


def lm_eval_accuracy(model_dir: str | os.PathLike, tasks: list[str],
                     task_dirs: list[str | os.PathLike] = (), batch_size: int = 16,
                     limit: int | None = None, device: str = "cpu",
                     dtype: str = "float32", min_context: int = 0,
                     harness_model: str = "native",
                     forward: Any = None) -> dict[str, dict[str, Any]]:
    """Run lm-eval tasks on a checkpoint directory; {task: {metric, value, stderr}}.

    `harness_model`: `native` scores with archscale.training.harness_lm's `CheckpointLM`
    (on `forward`, the checkpoint's LlamaForward when the caller has loaded it already), `hf`
    with lm-eval's `HFLM` (the module docstring says why there are two).

    lm-eval truncates inputs to the model's max_position_embeddings; `min_context` raises that
    limit for longer examples (RoPE has no learned positions), so an evaluation length never has
    to be written into config.json, which every training run reads.

    `task_dirs` are local task folders (lm-eval include_path), e.g. the corpus_mc task; the
    built-in task index (slow to scan) is loaded only when a task is not among them.
    """
    import yaml
    from lm_eval.tasks import TaskManager

    check_harness_model(harness_model)
    local: set[str] = set()
    for folder in task_dirs:
        if not Path(folder).is_dir():
            raise EvalError(f"task folder {folder} does not exist; build it first (snakemake "
                            "results/data/<corpus>/corpus_mc/corpus_mc.yaml)")
        for data_file in data_file_of(folder):
            if not data_file.exists():
                raise EvalError(f"{folder}: its YAML names {data_file}, which does not exist "
                                f"relative to {Path.cwd()}; run lm-eval from the workflow "
                                "directory or rebuild the task (snakemake --forcerun "
                                "corpus_mc_task)")
        for spec in Path(folder).glob("*.yaml"):
            local.add((yaml.safe_load(spec.read_text()) or {}).get("task"))
    manager = TaskManager(include_path=[str(d) for d in task_dirs] or None,
                          include_defaults=any(t not in local for t in tasks))
    config = json.loads((Path(model_dir) / "config.json").read_text())
    max_length = max(int(config.get("max_position_embeddings") or 0), int(min_context)) or None
    if harness_model == "hf":
        from lm_eval.models.huggingface import HFLM

        allow_decoupled_head_dim()  # HFLM loads the config through transformers' validator
        lm = HFLM(pretrained=str(model_dir), device=device, dtype=dtype,
                  batch_size=batch_size, max_length=max_length)
    else:
        from archscale.training.harness_lm import CheckpointLM

        lm = CheckpointLM(model_dir, device=device, batch_size=batch_size,
                          max_length=max_length, dtype=dtype, model=forward)
    out = run_lm_eval(lm, list(tasks), manager, limit=limit)
    if out is None:
        raise EvalError("lm-eval returned no results (a non-zero rank under accelerate?)")
    scores: dict[str, dict[str, Any]] = {}
    for task in tasks:
        if task not in out["results"]:
            raise EvalError(f"lm-eval has no results for task {task!r}; check its name with "
                            "`lm_eval --tasks list`")
        res = out["results"][task]
        metric = task_metric(task, (k for k in res if not k.endswith("_stderr") and "," in k))
        stderr = res.get(f"{metric}_stderr,none")
        scores[task] = {"metric": metric, "value": float(res[f"{metric},none"]),
                        "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                        "n_samples": (out.get("n-samples") or {}).get(task)}
    return scores


def accuracy_summary(scores: dict[str, dict[str, Any]]) -> dict[str, float]:
    """acc_<task> per task and acc_avg, their unweighted mean (as the paper averages)."""
    summary = {f"acc_{task}": s["value"] for task, s in scores.items()}
    if scores:
        summary["acc_avg"] = float(np.mean([s["value"] for s in scores.values()]))
    return summary


# ---------------------------------------------------------------------------------------------
# The collected table
# ---------------------------------------------------------------------------------------------

def runs_table(architectures_csv: "str | os.PathLike | pd.DataFrame",
               runs: list[tuple[str, int, int, str | os.PathLike, str | os.PathLike]],
               tasks: list[str]) -> "pd.DataFrame":
    """One row per (arch, tokens, seed): accounting columns, then the run's results.

    architectures_csv: architectures.csv, or its rows as a table (the closed loop's runs).
    runs: (arch, tokens, seed, metrics.json, eval.json) per run.
    """
    import pandas as pd

    accounting = (architectures_csv if isinstance(architectures_csv, pd.DataFrame)
                  else pd.read_csv(architectures_csv)).set_index("name", drop=False)
    rows = []
    for arch, tokens, seed, metrics_path, eval_path in runs:
        if arch not in accounting.index:
            raise EvalError(f"architecture {arch!r} is missing from {architectures_csv}; "
                            "rebuild it (snakemake results/architectures.csv)")
        metrics, evaluation = read_json(metrics_path), read_json(eval_path)
        row = accounting.loc[arch].to_dict()
        row.update({
            "tokens": int(tokens), "seed": int(seed), "epochs": metrics["epochs"],
            "train_loss": metrics["train_loss"], "val_loss": evaluation["val_loss"],
            "val_bpb": evaluation.get("val_bpb"),
        })
        for task in tasks:
            row[f"acc_{task}"] = evaluation.get(f"acc_{task}")
        row.update({"acc_avg": evaluation.get("acc_avg"), "wall_s": metrics["wall_s"],
                    "tokens_per_s": metrics["tokens_per_s"], "lr": metrics["lr"]["lr"]})
        rows.append(row)
    columns = list(accounting.columns) + ["tokens", "seed", "epochs", "train_loss", "val_loss",
                                          "val_bpb"] + [f"acc_{t}" for t in tasks] + \
        ["acc_avg", "wall_s", "tokens_per_s", "lr"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------------
# One run, end to end
# ---------------------------------------------------------------------------------------------

def task_context_length(settings: dict[str, Any], seq_len: int) -> int:
    """The longest input the study's tasks feed the model: the training length, or a longer
    corpus_mc example (context plus continuation)."""
    mc = settings.get("corpus_mc") or {}
    if "corpus_mc" not in (settings.get("tasks") or []) or not mc:
        return int(seq_len)
    return max(int(seq_len), int(mc["context_tokens"]) + int(mc["continuation_tokens"]))


def _model_and_decoder(model_dir: str | os.PathLike, device: str,
                       harness_model: str) -> tuple[Callable[[Any], Any], Callable]:
    """(token ids -> logits, token ids -> text) for a checkpoint, by `harness_model` (checked
    by the caller); for `native` the first is the checkpoint's LlamaForward itself."""
    if harness_model == "hf":
        from transformers import AutoTokenizer

        from archscale.training.model import load_model

        model = load_model(model_dir, device=device)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return (lambda ids: model(input_ids=ids, use_cache=False).logits,
                lambda ids: tokenizer.decode(ids, skip_special_tokens=True,
                                             clean_up_tokenization_spaces=False))
    from tokenizers import Tokenizer

    from archscale.training.llama_forward import LlamaForward

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    return (LlamaForward.load(model_dir, device=device),
            lambda ids: tokenizer.decode(ids, skip_special_tokens=True))


def evaluate_run(model_dir: str | os.PathLike, val_bin: str | os.PathLike,
                 meta: str | os.PathLike, seq_len: int, settings: dict[str, Any],
                 task_dirs: list[str | os.PathLike], out: str | os.PathLike,
                 label: dict[str, Any] | None = None, threads: int = 1) -> dict[str, Any]:
    """Validation loss/bpb and lm-eval accuracy of one checkpoint, written to `out` (eval.json).

    Evaluates in float32 (on the GPU when there is one), so a figure does not depend on the
    device's mixed-precision choice, on at most `threads` CPU threads (the rule's `threads:`;
    the provenance records the counts in force).
    """
    import torch

    started = now()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    harness_model = check_harness_model(settings.get("harness_model", "native"))
    result: dict[str, Any] = dict(label or {})
    with limited_threads(threads) as in_force:
        logits_of, decode = _model_and_decoder(model_dir, device, harness_model)
        result.update(heldout_loss(
            logits_of, load_tokens(val_bin, meta), seq_len, int(settings["val_tokens"]),
            int(settings["batch_size"]), device=device, decode=decode))
        # the native forward serves lm-eval too; HF's model is freed before HFLM loads its own
        forward = logits_of if harness_model == "native" else None
        del logits_of
        tasks = list(settings.get("tasks") or [])
        if tasks:
            scores = lm_eval_accuracy(model_dir, tasks, task_dirs,
                                      batch_size=int(settings["batch_size"]),
                                      limit=settings.get("limit"), device=device,
                                      min_context=task_context_length(settings, seq_len),
                                      harness_model=harness_model, forward=forward)
            result["tasks"] = scores
            result.update(accuracy_summary(scores))
    result["provenance"] = provenance(
        settings={"evaluation": {"harness_model": harness_model, **settings},
                  "seq_len": seq_len, "threads": in_force},
        inputs=[Path(model_dir) / "model.safetensors", meta], started=started,
        packages=("numpy", "torch", "lm_eval", "datasets") + (
            ("transformers",) if harness_model == "hf" else ("tokenizers", "safetensors")))
    write_json(out, result)
    return result
