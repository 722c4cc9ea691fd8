"""The fit stages as file-in, file-out functions: what the Snakemake scripts and
`archscale fit` both run, so the workflow and the command line do exactly the same thing.

Each takes the config's `fit` section as a dict; missing keys get the schema's defaults.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from archscale.fit.chinchilla import fit_chinchilla
from archscale.fit.conditional import fit_conditional
from archscale.fit.defaults import FIT_DEFAULTS
from archscale.fit.io import canonical_order, read_runs
from archscale.fit.quality import progressive_extrapolation
from archscale.fit.reference import chinchilla_points, reference_chinchilla
from archscale.io import write_csv, write_json
from archscale.provenance import now
from archscale.provenance import provenance as project_provenance


def fit_settings(fit: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config's fit section with defaults filled in; unknown keys are an error."""
    settings = dict(FIT_DEFAULTS)
    unknown = sorted(set(fit or {}) - set(FIT_DEFAULTS))
    if unknown:
        raise ValueError(f"fit settings: unknown key(s) {unknown}; known: {sorted(FIT_DEFAULTS)}")
    settings.update(fit or {})
    return settings


def _complete_provenance(doc: dict[str, Any], started: str, inputs: list) -> None:
    """Add the start time and the input files' hashes to a fit document's provenance."""

    doc.setdefault("provenance", {})
    doc["provenance"]["started"] = started
    doc["provenance"]["inputs"] = project_provenance(inputs=[str(p) for p in inputs])["inputs"]


def chinchilla_stage(runs: str | Path, out: str | Path, fit: Mapping[str, Any] | None = None,
                     plot: str | Path | None = None, workers: int = 2,
                     extra_provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fit the Chinchilla law to a runs table and write chinchilla.json (and a plot)."""
    started = now()
    s = fit_settings(fit)
    table = read_runs(runs, s["loss_column"], require=("N", "D", "loss"))
    points, fitted_on = chinchilla_points(table, s["l_opt"], s["size_tolerance"])
    points = canonical_order(points)  # the bootstrap's intervals then ignore listing order
    result = fit_chinchilla(points["N"], points["D"], points["loss"],
                            huber_delta=s["huber_delta"], bootstrap=s["bootstrap"],
                            compute_budgets=s["compute_budgets"], seed=s["seed"],
                            n_starts=s["n_starts"], workers=workers)
    doc = result.to_dict(extra_provenance, settings={"fit": s, "runs": str(runs)})
    doc["fitted_on"] = {"l_opt_source": s["l_opt"], "points": fitted_on,
                        "runs": [n if isinstance(n, str) else None for n in points["name"]]}
    _complete_provenance(doc, started, [runs])
    write_json(out, doc)
    if plot:
        from archscale.fit.plots import plot_chinchilla

        plot_chinchilla(result, plot)
    return doc


def conditional_stage(runs: str | Path, out: str | Path, fit: Mapping[str, Any] | None = None,
                      chinchilla: str | Path | None = None,
                      plots: Mapping[str, str | Path] | None = None,
                      extra_provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fit the conditional law and write conditional.json (and plots).

    The Chinchilla law is read from `chinchilla` (a chinchilla.json) when given, else fitted on
    the runs (archscale.fit.reference.reference_chinchilla says when and how it serves L_opt).
    plots: optional paths under the keys 'u_curves' and 'predicted'.
    """
    started = now()
    s = fit_settings(fit)
    table = read_runs(runs, s["loss_column"], require=("N", "D", "loss", "x", "r"))
    law, notes = reference_chinchilla(table, s, chinchilla)
    result = fit_conditional(table, form=s["form"], l_opt=s["l_opt"], chinchilla=law,
                             r_range=s["r_range"], bootstrap=s["bootstrap"], seed=s["seed"],
                             size_tol=s["size_tolerance"])
    result.warnings.extend(notes)
    settings = {"fit": s, "runs": str(runs), "chinchilla": str(chinchilla) if chinchilla else
                "fitted on the runs"}
    doc = result.to_dict(extra_provenance, settings=settings)
    _complete_provenance(doc, started, [runs] + ([chinchilla] if chinchilla else []))
    write_json(out, doc)
    if plots:
        from archscale.fit.plots import plot_predicted_vs_observed, plot_u_curves

        if plots.get("u_curves"):
            plot_u_curves(result, plots["u_curves"])
        if plots.get("predicted"):
            plot_predicted_vs_observed(result, plots["predicted"])
    return doc


def quality_stage(runs: str | Path, out: str | Path, fit: Mapping[str, Any] | None = None):
    """Progressive extrapolation over sizes, written as quality.csv; returns the table."""

    s = fit_settings(fit)
    table = read_runs(runs, s["loss_column"], require=("N", "D", "loss", "x", "r"))
    quality = progressive_extrapolation(table, form=s["form"], r_range=s["r_range"],
                                        huber_delta=s["huber_delta"],
                                        size_tol=s["size_tolerance"],
                                        min_train_sizes=s["min_train_sizes"],
                                        n_starts=s["n_starts"])
    write_csv(out, quality)
    return quality


def forms_stage(runs: str | Path, out: str | Path, fit: Mapping[str, Any] | None = None,
                extra_provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fit every registered law form and compare them by held-out error (forms.json)."""
    from archscale.fit.compare import compare_forms
    from archscale.fit.io import provenance

    started = now()
    s = fit_settings(fit)
    table = read_runs(runs, s["loss_column"], require=("N", "D", "loss", "x", "r"))
    doc = compare_forms(table, configured=s["form"], r_range=s["r_range"],
                        bootstrap=s["bootstrap"], seed=s["seed"],
                        size_tol=s["size_tolerance"], huber_delta=s["huber_delta"],
                        n_starts=s["n_starts"], min_train_sizes=s["min_train_sizes"])
    doc["provenance"] = provenance(extra_provenance, {"fit": s, "runs": str(runs)})
    _complete_provenance(doc, started, [runs])
    write_json(out, doc)
    return doc


def verdicts_stage(forms: str | Path, out: str | Path | None = None,
                   check_runs: str | Path | None = None,
                   recommendations: str | Path | None = None,
                   throughput: str | Path | None = None,
                   extra_provenance: Mapping[str, Any] | None = None,
                   lr_transfer: str | Path | None = None) -> dict[str, Any]:
    """One verdict per finding (verdicts.json) from the fit outputs; `check_runs` is the
    optimum check's runs.csv when the study ran it (its absence caps x* and r* at "not
    identified"), `recommendations` and `throughput` the search's and measurement's outputs,
    `lr_transfer` the learning-rate check's transfer.csv when the study ran it."""
    import pandas as pd

    from archscale.fit.verdicts import verdicts
    from archscale.io import read_json

    started = now()
    doc = verdicts(read_json(forms), check_runs=pd.read_csv(check_runs) if check_runs else None,
                   check_enabled=check_runs is not None,
                   recommendations=read_json(recommendations) if recommendations else None,
                   throughput=pd.read_csv(throughput) if throughput else None,
                   lr_transfer=pd.read_csv(lr_transfer) if lr_transfer else None)
    inputs = [p for p in (forms, check_runs, recommendations, throughput, lr_transfer) if p]
    from archscale.fit.verdicts import CHECK_SE, MIN_CHECK_SEEDS

    settings = {"optimum_check": check_runs is not None, "check_se": CHECK_SE,
                "min_check_seeds": MIN_CHECK_SEEDS,
                "inputs": {"forms": str(forms), "check_runs": str(check_runs or ""),
                           "recommendations": str(recommendations or ""),
                           "throughput": str(throughput or ""),
                           "lr_transfer": str(lr_transfer or "")}}
    doc["provenance"] = project_provenance(settings=settings, inputs=[])
    doc["provenance"].update(dict(extra_provenance or {}))
    _complete_provenance(doc, started, inputs)
    if out:
        write_json(out, doc)
    return doc
