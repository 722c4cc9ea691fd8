"""Law forms are one module each: a new one registers itself and every user of forms sees it.

The test writes a form with its own formula and coefficient count into a fresh module, imports
it, and checks that the CLI offers it, the config accepts it, the fit recovers its known
coefficients, and conditional.json and the figures work with it; then that it leaves no trace.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archscale.config import ConfigError, load_study, read_config_file, schema
from archscale.schema import schema_path
from archscale.fit import ChinchillaLaw, fit_conditional, forms, law_from_dict

REPO = Path(__file__).resolve().parents[1]
TRUE_CHIN = ChinchillaLaw(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37)

# L = (c0 + cx1 ln x + cx2 (ln x)^2 + cr1 ln r + cr2 (ln r)^2) * L_opt: five coefficients, not
# the built-ins' six, and an optimum at exp(-c1 / (2 c2)) rather than a2/a1.
FORM_MODULE = '''
"""A log-quadratic form, registered on import (written by tests/test_law_forms.py)."""
import numpy as np

from archscale.fit.forms import register
from archscale.fit.forms.base import LawForm, Optimum, Reported, Split


def _columns(x, r, l_opt):
    lx, lr = np.log(x), np.log(r)
    return np.column_stack([np.ones_like(lx), lx, lx ** 2, lr, lr ** 2]) * l_opt[:, None]


class LogQuadratic(LawForm):
    name = "logquad"
    formula = "L = (c0 + cx1 ln x + cx2 ln^2 x + cr1 ln r + cr2 ln^2 r) * L_opt(N, D)"
    coefficient_names = ("c0", "cx1", "cx2", "cr1", "cr2")
    n_free = 5

    def predict(self, c, x, r, l_opt):
        lx, lr = np.log(np.asarray(x, float)), np.log(np.asarray(r, float))
        return (c["c0"] + c["cx1"] * lx + c["cx2"] * lx ** 2 + c["cr1"] * lr
                + c["cr2"] * lr ** 2) * np.asarray(l_opt, float)

    def model(self, p, x, r, l_opt):
        return _columns(x, r, l_opt) @ p

    def jacobian(self, p, x, r, l_opt):
        return _columns(x, r, l_opt)

    def initial(self, x, r, loss, l_opt):
        return np.linalg.lstsq(_columns(x, r, l_opt), loss, rcond=None)[0]

    def report(self, p, r_fitted):
        return Reported(dict(zip(self.coefficient_names, map(float, p))), "none needed", True)

    def optimum(self, c):
        out = {}
        for axis in ("x", "r"):
            c1, c2 = c[f"c{axis}1"], c[f"c{axis}2"]
            out[axis] = Optimum(float(np.exp(-c1 / (2 * c2))), bool(c2 > 0),
                                f"c{axis}2 = {c2:.4g} must be positive")
        return out

    def split(self, c, x, r, loss, l_opt):
        qx = lambda v: c["c0"] + c["cx1"] * np.log(v) + c["cx2"] * np.log(v) ** 2
        qr = lambda v: c["cr1"] * np.log(v) + c["cr2"] * np.log(v) ** 2
        return {"x": Split(loss / l_opt - qr(r), qx, "L / L_opt - r part"),
                "r": Split(loss / l_opt - qx(x), qr, "L / L_opt - x part")}


FORM = register(LogQuadratic())
'''
TRUTH = {"c0": 1.2, "cx1": 0.2, "cx2": 0.04, "cr1": -0.01, "cr2": 0.02}


@pytest.fixture
def logquad(tmp_path, monkeypatch):
    """The new form, from its own module; unregistered and forgotten afterwards."""
    (tmp_path / "logquad_form.py").write_text(textwrap.dedent(FORM_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("logquad_form")
    yield module.FORM
    forms.unregister("logquad")
    sys.modules.pop("logquad_form", None)


def _fit_parser() -> argparse.ArgumentParser:
    from archscale.cli.fit import register

    parser = argparse.ArgumentParser(prog="archscale")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def _runs(noise: float = 0.001, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(n * rng.uniform(0.97, 1.03), d, x, r) for n in (1e8, 2e8, 4e8) for d in (2e9, 8e9)
            for x in (0.04, 0.06, 0.08, 0.11, 0.15) for r in (0.6, 1.0, 2.0, 4.0)]
    runs = pd.DataFrame(rows, columns=["N", "D", "x", "r"])
    law = forms.get("logquad")
    runs["loss"] = law.predict(TRUTH, runs["x"], runs["r"], TRUE_CHIN(runs["N"], runs["D"]))
    runs["loss"] += rng.normal(0, noise, len(runs))
    return runs


def _study_config(form: str) -> dict:
    config = read_config_file(REPO / "config.yaml")
    config.setdefault("fit", {})["form"] = form
    return config


def test_builtin_forms_are_registered_and_fill_the_schema_enum():
    assert {"multiplicative", "additive"} <= set(forms.names())
    assert schema()["properties"]["fit"]["properties"]["form"]["enum"] == list(forms.names())
    with pytest.raises(ValueError, match=r"unknown law form 'nonesuch'; registered forms: "
                                         r"\[.*'additive'.*'multiplicative'"):
        forms.get("nonesuch")


def test_a_new_form_module_reaches_the_cli_choices(logquad, tmp_path):
    runs = tmp_path / "runs.csv"
    runs.write_text("N,D,loss,x,r\n1,1,1,1,1\n")
    parser = _fit_parser()
    for command in ("conditional", "quality"):
        args = parser.parse_args(["fit", command, "--runs", str(runs), "--out",
                                  str(tmp_path / "o"), "--form", "logquad"])
        assert args.form == "logquad"
    with pytest.raises(SystemExit):
        parser.parse_args(["fit", "conditional", "--runs", str(runs), "--out",
                           str(tmp_path / "o"), "--form", "nonesuch"])


def test_a_new_form_passes_the_config_check_and_snakemakes_validation(logquad):
    from snakemake.utils import validate

    config = _study_config("logquad")
    assert load_study(config).config["fit"]["form"] == "logquad"
    validate(dict(config), str(schema_path()))  # the workflow's second check agrees
    with pytest.raises(ConfigError, match=r"fit\.form: 'nonesuch' is not one of .*'logquad'"):
        load_study(_study_config("nonesuch"))


def test_the_fit_recovers_a_new_forms_coefficients(logquad, tmp_path):
    fit = fit_conditional(_runs(), form="logquad", l_opt="chinchilla", chinchilla=TRUE_CHIN,
                          bootstrap=10)
    got = fit.law.coefficients()
    assert list(got) == list(TRUTH)
    for k, v in TRUTH.items():
        assert got[k] == pytest.approx(v, abs=3e-3), k
    assert fit.law.x_star == pytest.approx(np.exp(-0.2 / 0.08), rel=0.1)
    assert fit.law.r_star == pytest.approx(np.exp(0.01 / 0.04), rel=0.1)
    assert fit.fit_info["n_coefficients"] == 5
    assert set(fit.intervals["coefficients"]) == set(TRUTH)

    doc = json.loads(json.dumps(fit.to_dict()))
    assert doc["form"] == "logquad" and doc["formula"] == logquad.formula
    again = law_from_dict(doc)
    x, r, n, d = np.array([0.05, 0.1]), np.array([0.8, 3.0]), np.array([1e8, 3e8]), 4e9
    assert np.allclose(again.predict_at(x, r, n, d), fit.law.predict_at(x, r, n, d), rtol=1e-12)

    from archscale.fit.plots import plot_u_curves

    plot_u_curves(fit, tmp_path / "u.png")
    assert (tmp_path / "u.png").read_bytes()[:4] == b"\x89PNG"


def test_registering_leaks_into_no_other_test():
    """Runs after the tests above in file order: their form is gone everywhere."""
    assert "logquad" not in forms.names()
    assert "logquad" not in schema()["properties"]["fit"]["properties"]["form"]["enum"]
    with pytest.raises(ConfigError, match="fit.form"):
        load_study(_study_config("logquad"))


def test_the_registry_refuses_clashes_and_non_forms(logquad):
    clone = type(logquad)()
    with pytest.raises(ValueError, match="'logquad' is already registered"):
        forms.register(clone)
    assert forms.register(logquad) is logquad  # registering the same object again is harmless
    with pytest.raises(TypeError, match="takes a LawForm instance"):
        forms.register("logquad")
    with pytest.raises(KeyError, match="no law form named 'nonesuch'"):
        forms.unregister("nonesuch")
