"""Determinism (issue 8, part 4): the same config and seed on the same machine give identical
tokenization bytes and identical CPU training losses and weights (training.threads fixed).

A second, independent run of the tiny study's config, in a fresh folder, builds the data stage
and one training run (a1 at 16384 tokens, seed 0); everything it shares with the session's
tiny study must be identical to it, byte for byte where the file holds no timestamp.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_snakemake, tiny_config, write_workflow

pytestmark = pytest.mark.workflow

RUN = "results/runs/a1/16384/seed0"
DATA = "results/data/tiny"
BYTE_IDENTICAL = [f"{DATA}/tokenizer/tokenizer.json", f"{DATA}/tokenizer/tokenizer_config.json",
                  f"{DATA}/shards/0.train.bin", f"{DATA}/shards/0.val.bin",
                  f"{DATA}/shards/1.train.bin", f"{DATA}/shards/1.val.bin",
                  f"{DATA}/train.bin", f"{DATA}/val.bin", f"{RUN}/model/config.json",
                  f"{RUN}/model/tokenizer.json"]


@pytest.fixture(scope="module")
def second_run(tmp_path_factory) -> Path:
    workdir = write_workflow(tmp_path_factory.mktemp("determinism") / "study", tiny_config())
    run_snakemake(workdir, "--cores", "2", f"{RUN}/metrics.json", check=True, timeout=900)
    return workdir


def test_training_threads_are_fixed_by_the_config():
    assert tiny_config()["training"]["threads"] == 1


@pytest.mark.parametrize("path", BYTE_IDENTICAL)
def test_tokenization_and_model_config_are_byte_identical(second_run, tiny_study_done, path):
    a, b = (tiny_study_done / path).read_bytes(), (second_run / path).read_bytes()
    assert len(a) > 0 and a == b, f"{path} differs between two runs of the same config"


def test_token_counts_and_corpus_hash_agree(second_run, tiny_study_done):
    meta = [json.loads((d / DATA / "meta.json").read_text()) for d in (tiny_study_done,
                                                                      second_run)]
    for key in ("train_tokens", "val_tokens", "corpus_sha256", "tokenizer_sha256", "dtype"):
        assert meta[0][key] == meta[1][key], key


def _losses(workdir: Path) -> list[tuple[str, str, str]]:
    with open(workdir / RUN / "train_log.csv") as handle:
        return [(r["step"], r["tokens"], r["loss"]) for r in csv.DictReader(handle)]


def test_training_losses_are_identical(second_run, tiny_study_done):
    first, second = _losses(tiny_study_done), _losses(second_run)
    assert len(first) >= 4
    assert first == second, "train_log.csv losses differ between two identical runs"
    metrics = [json.loads((d / RUN / "metrics.json").read_text()) for d in (tiny_study_done,
                                                                           second_run)]
    for key in ("train_loss", "final_step_loss", "steps", "tokens_seen"):
        assert metrics[0][key] == metrics[1][key], key


def test_trained_weights_are_identical(second_run, tiny_study_done):
    from safetensors.numpy import load_file

    first = load_file(str(tiny_study_done / RUN / "model/model.safetensors"))
    second = load_file(str(second_run / RUN / "model/model.safetensors"))
    assert first.keys() == second.keys()
    for name in first:
        assert np.array_equal(first[name], second[name]), f"weight {name} differs"
