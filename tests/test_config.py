"""config.yaml validation: every bad input fails at load time naming the architecture and field."""
import numpy as np
import pytest

from archscale.config import ConfigError, check_schema, load_study
from archscale.fit.io import size_groups
from conftest import REPO, tiny_config


def test_default_config_loads_and_resolves_targets():
    study = load_study(REPO / "config.yaml")
    assert len(study.architectures) >= 12
    n = np.array([a.n_params_non_embedding for a in study.architectures.values()], float)
    assert len(set(size_groups(n))) >= 4  # progressive extrapolation: 3 to fit, 1 held out
    for name, arch in study.architectures.items():
        spec = study.arch_spec(name)
        target = spec["targets"]["n_params"]
        assert abs(arch.n_params_non_embedding / target - 1) <= spec["targets"]["tolerance"]
        assert arch.vocab_size == study.config["data"]["tokenizer"]["vocab_size"]
        assert arch.max_position_embeddings >= study.config["data"]["seq_len"]


def test_defaults_are_filled():
    cfg = check_schema(tiny_config())
    assert cfg["fit"]["form"] == "multiplicative"
    assert cfg["training"]["lr_rule"]["kind"] == "inverse_width"
    assert cfg["search"]["baseline"]["r_mlp_attn"] == 4.8


def test_paper_configs_load():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_study(path)


def _arch(cfg, name):
    return next(a for a in cfg["architectures"] if a["name"] == name)


def bad(mutate):
    cfg = tiny_config()
    mutate(cfg)
    return cfg


CASES = {
    "heads not divisible": (lambda c: _arch(c, "a1").update(n_heads=3, n_kv_heads=2),
                            ["'a1'", "n_kv_heads"]),
    "duplicate names": (lambda c: _arch(c, "a2").update(name="a1"), ["duplicate", "a1"]),
    "unknown key": (lambda c: _arch(c, "b1").update(hidden=12), ["'b1'", "hidden", "unknown key"]),
    "unknown section key": (lambda c: c["training"].update(learning_rate=1), ["training", "learning_rate"]),
    "negative size": (lambda c: _arch(c, "b2").update(d_model=-64), ["'b2'", "d_model"]),
    "wrong type": (lambda c: _arch(c, "c1").update(ffn_dim="big"), ["'c1'", "ffn_dim", "not of type"]),
    "yaml 1e5 string": (lambda c: c.update(token_budgets=["1e5"]), ["token_budgets", "write 100000"]),
    "missing shape field": (lambda c: _arch(c, "c2").pop("ffn_dim"), ["'c2'", "ffn_dim"]),
    "unreachable target": (lambda c: c["architectures"].append(
        {"name": "t1", "n_layers": 1, "head_dim": 512,
         "targets": {"n_params": 20000, "d_over_sqrt_n": 0.1, "r_mlp_attn": 1.0, "gqa_group": 1}}),
        ["'t1'", "no integer shape meets the targets"]),
    "targets plus explicit": (lambda c: c["architectures"].append(
        {"name": "t2", "n_layers": 2, "head_dim": 32, "d_model": 64,
         "targets": {"n_params": 60000, "d_over_sqrt_n": 0.2, "r_mlp_attn": 2.0, "gqa_group": 1}}),
        ["'t2'", "n_layers and head_dim only"]),
    "missing section": (lambda c: c.pop("data"), ["data", "required"]),
    "unknown engine": (lambda c: c["throughput"].update(engines=["tensorrt"]), ["throughput.engines", "tensorrt"]),
    "unknown gpu": (lambda c: c["throughput"].update(gpu="B300"), ["throughput.gpu", "B300"]),
    "bad r range": (lambda c: c["fit"].update(r_range=[5, 0.5]), ["fit.r_range"]),
    "files without paths": (lambda c: c["data"].update(source={"kind": "files"}), ["data.source.paths"]),
    "bos beyond vocab": (lambda c: c["data"]["tokenizer"].update(eos_token_id=9999), ["eos_token_id", "vocab_size"]),
    "validation loss column": (lambda c: (c["search"].update(validation={"enabled": True}),
                                          c.setdefault("fit", {}).update(loss_column="acc_avg")),
                               ["fit.loss_column", "validation"]),
    "validation radius zero": (lambda c: c["search"].update(
        validation={"enabled": True, "coverage_radius": 0}),
        ["search.validation.coverage_radius"]),
    "unknown baseline": (lambda c: c["search"].update(baseline={"architecture": "zz"}), ["search.baseline.architecture", "zz"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_names_the_field(case):
    mutate, needles = CASES[case]
    with pytest.raises(ConfigError) as err:
        load_study(bad(mutate))
    for needle in needles:
        assert needle in str(err.value), f"{needle!r} not in: {err.value}"


def test_not_a_mapping_and_bad_yaml(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_study(listing)
    path = tmp_path / "broken.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "missing.yaml")


def test_per_architecture_overrides():
    cfg = tiny_config()
    _arch(cfg, "a2")["training"] = {"lr": 0.5}
    study = load_study(cfg)
    assert study.training_settings("a2")["lr"] == 0.5
    assert study.training_settings("a1")["lr"] == cfg["training"]["lr"]
    assert study.token_budgets("a1") == [8192, 16384] and study.token_budgets("a2") == [8192]
    assert len(study.runs()) == 12
