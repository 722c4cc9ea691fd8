"""An offline multiple-choice task built from the held-out corpus, run through lm-eval.

The paper's benchmarks (ARC, HellaSwag, ...) need the hub and models far larger than the
default study's; this task needs neither. Each example is a context of `context_tokens` from
val.bin and `n_choices` candidate continuations of `continuation_tokens`: the true one, and
distractors cut from other documents of the held-out split. A model that has learned the
corpus picks the true continuation more often than chance (1 / n_choices).

It is a plain lm-eval task directory (YAML + JSONL, `dataset_path: json`), so it runs through
the same lm-eval evaluator as the cluster tasks, with HF_HUB_OFFLINE=1 and
HF_DATASETS_OFFLINE=1, and a person can rerun it with
`lm_eval --include_path results/data/<corpus>/corpus_mc --tasks corpus_mc ...` from the
workflow directory (the JSONL path in the YAML is relative to it, like every Snakemake path).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from archscale.data.corpus import load_tokens
from archscale.io import write_text

TASK_NAME = "corpus_mc"


class TaskBuildError(ValueError):
    """The held-out split cannot supply the requested examples; says what to change."""


def _clean_spans(tokens: np.ndarray, eos_id: int, length: int) -> np.ndarray:
    """Starts of non-overlapping `length`-token spans that hold no EOS (stay in one document)."""
    n_spans = len(tokens) // length
    if n_spans == 0:
        return np.empty(0, dtype=np.int64)
    grid = np.asarray(tokens[:n_spans * length]).reshape(n_spans, length)
    ok = ~(grid == eos_id).any(axis=1)
    return np.nonzero(ok)[0].astype(np.int64) * length


def _document_ids(tokens: np.ndarray, eos_id: int, positions: np.ndarray) -> np.ndarray:
    """Which document (count of EOS before it) each position belongs to."""
    eos_positions = np.nonzero(np.asarray(tokens) == eos_id)[0]
    return np.searchsorted(eos_positions, positions, side="right")


def build_examples(tokens: np.ndarray, decode, eos_id: int, n_examples: int, n_choices: int,
                   context_tokens: int, continuation_tokens: int, seed: int
                   ) -> list[dict[str, Any]]:
    """Examples {context, choices, label}: deterministic for a given split and seed.

    Contexts come from distinct non-overlapping spans; distractors are continuation-length
    spans from other documents, rejected when their text is blank or repeats another choice.
    """
    length = context_tokens + continuation_tokens
    spans = _clean_spans(tokens, eos_id, length)
    cont_spans = _clean_spans(tokens, eos_id, continuation_tokens)
    if len(spans) < n_examples:
        raise TaskBuildError(
            f"val.bin offers {len(spans)} EOS-free spans of {length} tokens, fewer than "
            f"evaluation.corpus_mc.n_examples ({n_examples}); lower n_examples or "
            "context_tokens + continuation_tokens, or raise data.val_fraction")
    if len(cont_spans) < 4 * n_choices:
        raise TaskBuildError(f"val.bin is too small to draw {n_choices - 1} distractors per "
                             "example; raise data.val_fraction or lower n_choices")
    rng = np.random.default_rng(seed)
    span_docs = _document_ids(tokens, eos_id, spans)
    cont_docs = _document_ids(tokens, eos_id, cont_spans)
    examples: list[dict[str, Any]] = []
    for start in rng.permutation(spans):
        if len(examples) == n_examples:
            break
        ids = np.asarray(tokens[start:start + length]).tolist()
        context, truth = decode(ids[:context_tokens]), decode(ids[context_tokens:])
        if not context.strip() or not truth.strip():
            continue
        doc = span_docs[np.searchsorted(spans, start)]
        choices = [truth]
        for _ in range(50 * n_choices):
            if len(choices) == n_choices:
                break
            k = int(rng.integers(len(cont_spans)))
            if cont_docs[k] == doc:
                continue
            cand = decode(np.asarray(tokens[cont_spans[k]:cont_spans[k] + continuation_tokens])
                          .tolist())
            if cand.strip() and cand not in choices:
                choices.append(cand)
        if len(choices) < n_choices:
            continue
        label = int(rng.integers(n_choices))
        choices[0], choices[label] = choices[label], choices[0]
        examples.append({"id": len(examples), "context": context, "choices": choices,
                         "label": label, "position": int(start)})
    if len(examples) < n_examples:
        raise TaskBuildError(f"only {len(examples)} usable examples (non-blank, with distinct "
                             f"distractors) of {n_examples} requested; lower "
                             "evaluation.corpus_mc.n_examples or raise data.val_fraction")
    return examples


def task_yaml(data_file: str) -> dict[str, Any]:
    """The lm-eval task definition; the continuation follows the context with no delimiter."""
    return {
        "task": TASK_NAME,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": data_file}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "target_delimiter": "",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def build_task(val_bin: str | os.PathLike, meta: str | os.PathLike,
               tokenizer_dir: str | os.PathLike, yaml_out: str | os.PathLike,
               data_out: str | os.PathLike, settings: dict[str, Any]) -> dict[str, Any]:
    """Write the task's JSONL and YAML; returns a summary (counts, chance level).

    `data_out` is written into the YAML as given: pass it relative to the directory lm-eval
    will run from (the workflow directory), or absolute.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise TaskBuildError(f"the tokenizer in {tokenizer_dir} has no EOS token; the task "
                             "needs it to keep spans inside one document")
    tokens = load_tokens(val_bin, meta)
    examples = build_examples(
        tokens, lambda ids: tokenizer.decode(ids, clean_up_tokenization_spaces=False), eos_id,
        n_examples=int(settings["n_examples"]), n_choices=int(settings["n_choices"]),
        context_tokens=int(settings["context_tokens"]),
        continuation_tokens=int(settings["continuation_tokens"]),
        seed=int(settings["seed"]))
    write_text(data_out, "".join(json.dumps(e) + "\n" for e in examples))
    write_text(yaml_out, yaml.safe_dump(task_yaml(str(data_out)), sort_keys=False))
    return {"task": TASK_NAME, "examples": len(examples),
            "n_choices": int(settings["n_choices"]),
            "chance_accuracy": 1.0 / int(settings["n_choices"]),
            "val_tokens": int(len(tokens)), "settings": dict(settings)}


def data_file_of(task_dir: str | os.PathLike) -> list[Path]:
    """The data files a local task YAML names (to check they exist before lm-eval starts)."""
    files: list[Path] = []
    for path in sorted(Path(task_dir).glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        data_files = (spec.get("dataset_kwargs") or {}).get("data_files") or {}
        if isinstance(data_files, str):
            data_files = {"": data_files}
        files.extend(Path(f) for f in (data_files.values() if isinstance(data_files, dict)
                                       else data_files))
    return files
