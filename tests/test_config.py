"""config.yaml validation: every bad input fails at load time naming the architecture and field."""
import numpy as np
import pytest

import yaml

from archscale.config import ConfigError, canonical, check_schema, load_study, merge_config
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


def test_a_shape_off_its_x_or_r_target_is_named_visibly(caplog):
    """issue 29: n64-r16's nearest integer shape has r 11.25, which its name does not say."""
    from archscale.workflow.snakemake import warn_target_misses

    study = load_study(REPO / "config.yaml")
    misses = {line.split(":")[0]: line for line in study.target_misses()}
    assert "r 11.2 for 16 (-30%)" in misses["n64-r16"]
    assert "n64-x07" not in misses  # x 0.0709 and r 3.0: within 8 % of both targets
    main = type("Workflow", (), {"is_main_process": True})()
    with caplog.at_level("WARNING", logger="archscale"):
        assert warn_target_misses(main, study) == list(misses.values())
    assert "n64-r16: x 0.166 for 0.2 (-17%), r 11.2 for 16 (-30%)" in caplog.text
    job = type("Workflow", (), {"is_main_process": False})()  # a job's own parse: silent
    assert warn_target_misses(job, study) == []
    explicit = load_study(tiny_config())  # shapes given explicitly promise no targets
    assert explicit.target_misses() == []


def test_defaults_are_filled():
    cfg = check_schema(tiny_config())
    assert cfg["fit"]["form"] == "multiplicative"
    assert cfg["training"]["lr_rule"]["kind"] == "inverse_width"
    assert cfg["search"]["baseline"]["r_mlp_attn"] == 4.8


def test_paper_configs_load():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_study(path)


def test_laptop_science_grid_brackets_the_base_shape_at_every_grid_size():
    """The laptop science study's margin check (`optimum_margins`) needs, at each grid size, a
    neighbour of the base shape on each side in x and in r that its series rule accepts (the other
    axis within SERIES_TOLERANCE), all inside fit.r_range. A shape the solver moves off its series
    would silently leave a side unbracketed, as r 11 at 128k once did."""
    import pandas as pd

    from archscale.fit.seeds import optimum_margins

    study = load_study(REPO / "configs" / "laptop-science.yaml")
    grid_budget = max(study.config["token_budgets"])
    rows = []
    for name, arch in study.architectures.items():
        if grid_budget in study.token_budgets(name):
            x, r = arch.d_over_sqrt_n, arch.r_mlp_attn
            # any loss that makes the base shape the best one of its size
            loss = 3.0 + abs(np.log(x / 0.2)) + abs(np.log(r / 3.0))
            rows.append({"name": name, "N": arch.n_params_non_embedding, "D": grid_budget,
                         "x": x, "r": r, "loss": loss})
    table = pd.DataFrame(rows)
    low, high = study.config["fit"]["r_range"]
    assert table["r"].between(low, high).all(), table[~table["r"].between(low, high)]
    margins = optimum_margins(table, seed_sd=0.01)
    grid_sizes = [m for m in margins if m["n_shapes"] >= 5]
    assert len(grid_sizes) == 4
    for m in grid_sizes:
        assert m["best"]["name"].endswith("-base")
        assert m["x"]["bracketed"] and m["r"]["bracketed"], m


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
    # issue 15: per-architecture overrides, duplicates, dot names, budgets under 4 steps
    "override wrong type": (lambda c: _arch(c, "a2").update(training={"lr": "fast"}),
                            ["architectures[1] (architecture 'a2').training.lr", "'fast'"]),
    "override misspelt": (lambda c: _arch(c, "a2").update(training={"lrr": 0.1}),
                          ["(architecture 'a2').training", "'lrr' was unexpected", "unknown key"]),
    "override breaks a rule": (lambda c: _arch(c, "a3").update(training={"seeds": []}),
                               ["(architecture 'a3').training.seeds"]),
    "duplicate seeds": (lambda c: c["training"].update(seeds=[1, 0, 1]),
                        ["training.seeds", "non-unique", "remove the repeat"]),
    "duplicate budgets": (lambda c: c.update(token_budgets=[8192, 8192]),
                          ["token_budgets", "non-unique"]),
    "duplicate arch budgets": (lambda c: _arch(c, "b1").update(token_budgets=[16384, 16384]),
                               ["(architecture 'b1').token_budgets", "non-unique"]),
    "dot name": (lambda c: _arch(c, "a1").update(name="."), ["(architecture '.').name",
                                                              "not starting with '.'"]),
    "path name": (lambda c: _arch(c, "a1").update(name="../x"), ["'../x'", "name"]),
    # issue 31: data.name is checked like architecture names; evaluation tasks like seeds
    "dot data name": (lambda c: c["data"].update(name="."),
                      ["data.name", "'.'", "not a folder name", "not starting with '.'"]),
    "dot-dot data name": (lambda c: c["data"].update(name=".."), ["data.name", "'..'"]),
    "data name with a separator": (lambda c: c["data"].update(name="a/b"), ["data.name", "a/b"]),
    "repeated evaluation tasks": (lambda c: c["evaluation"].update(tasks=["corpus_mc",
                                                                          "corpus_mc"]),
                                  ["evaluation.tasks", "'corpus_mc'", "remove the repeat"]),
    "budget under one batch": (lambda c: c.update(token_budgets=[500]),
                               ["token_budgets", "500 tokens", "0.49 optimizer steps",
                                "at least 4096 tokens"]),
    "override batch too big for budget": (
        lambda c: _arch(c, "a2").update(training={"global_batch_tokens": 4096}),
        ["'a2'", "8192 tokens", "at least 16384"]),
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


def test_errors_name_the_file_the_config_came_from(tmp_path):
    cfg = bad(lambda c: c["training"].update(lr="fast"))
    with pytest.raises(ConfigError, match=r"^paper\.yaml is invalid"):
        load_study(cfg, source="paper.yaml")
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(bad(lambda c: _arch(c, "a1").update(n_heads=3,
                                                                        n_kv_heads=2))))
    with pytest.raises(ConfigError, match=f"^{path}: architecture 'a1'"):
        load_study(path)


def test_canonical_config_is_the_same_whatever_the_key_order_or_number_spelling():
    cfg = tiny_config()
    shuffled = yaml.safe_load(yaml.safe_dump(cfg, sort_keys=True))
    shuffled["training"]["global_batch_tokens"] = 1024.0
    shuffled["architectures"] = [dict(reversed(list(a.items())))
                                 for a in shuffled["architectures"]]
    first, second = load_study(cfg), load_study(shuffled)
    assert repr(first.config) == repr(second.config)
    assert repr(first.training_settings("a2")) == repr(second.training_settings("a2"))
    assert canonical({"b": 1.0, "a": [2.5, {"d": True, "c": 3.0}]}) == {
        "a": [2.5, {"c": 3, "d": True}], "b": 1}
    assert list(canonical({"b": 1, "a": 2})) == ["a", "b"]
    assert canonical(1e300) == 1e300 and canonical(True) is True


def test_merge_config_merges_mappings_and_replaces_lists():
    base = {"training": {"lr": 0.01, "seeds": [0, 1]}, "token_budgets": [1, 2]}
    merged = merge_config(base, {"training": {"seeds": [3]}, "token_budgets": [5]})
    assert merged == {"training": {"lr": 0.01, "seeds": [3]}, "token_budgets": [5]}
    assert base["training"]["seeds"] == [0, 1]  # the base is not modified


def _targeted(n_params, x=0.08):
    """The tiny study with one more architecture sized by targets."""
    cfg = tiny_config()
    cfg["architectures"].append({"name": "big", "n_layers": 2, "head_dim": 32, "targets": {
        "n_params": n_params, "d_over_sqrt_n": x, "r_mlp_attn": 1.0, "gqa_group": 1}})
    return cfg


@pytest.mark.parametrize("cfg,needles", [
    # issue 31: n_params 1e12 asked for 24 TB a job; 1e15 made each dry run take 65 s
    (_targeted(1.0e12), ["(architecture 'big').targets.n_params", "1000000000000.0",
                         "maximum of 100000000000.0", "24 bytes a parameter"]),
    (_targeted(1.0e15), ["(architecture 'big').targets.n_params", "maximum of 100000000000.0"]),
    (_targeted(1.0e11, x=0.1), ["architecture 'big'", "d_over_sqrt_n 0.1",
                                "d_model = 31,623, above the bound 16384"]),
    (bad(lambda c: c["architectures"].append(
        {"name": "wide", "d_model": 16384, "n_layers": 200, "n_heads": 128, "n_kv_heads": 8,
         "head_dim": 128, "ffn_dim": 53248})),
     ["architecture 'wide'", "N = 6.38e+11 non-embedding parameters", "above the bound 1e+11"]),
], ids=["n_params 1e12", "n_params 1e15", "d_model from targets", "explicit shape"])
def test_targets_beyond_the_bounds_are_refused_at_once(cfg, needles):
    import time

    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_study(cfg)
    assert time.perf_counter() - started < 2
    for needle in needles:
        assert needle in str(err.value), f"{needle!r} not in: {err.value}"


def test_a_study_at_the_bounds_plans_in_seconds():
    import time

    started = time.perf_counter()
    study = load_study(_targeted(1.0e11, x=16384 / 1.0e11 ** 0.5))
    assert time.perf_counter() - started < 5
    assert study.architectures["big"].d_model <= 16384 * 1.15


def test_a_yte_template_is_refused_by_the_loader_both_tools_use(tmp_path):
    """`archscale plan` and the Snakefile read config files with read_config_file."""
    path = tmp_path / "templated.yaml"
    path.write_text(yaml.safe_dump({"__use_yte__": True, **tiny_config(),
                                    "study": "?'computed'"}))
    with pytest.raises(ConfigError, match="__use_yte__ turns on YTE templating, which runs"):
        load_study(path)
