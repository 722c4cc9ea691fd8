"""The search's three files, written by one function for the Snakemake rule and the CLI alike.

`write_search_outputs` writes candidates.csv, pareto.csv and recommendations.json. The
recommendations document has the same keys whoever writes it:

    what             one sentence on what the recommendations are
    recommendations  one entry per parameter budget (archscale.search.frontier's picks)
    law              {form, x_star, r_star, x_fitted, r_fitted, fit_quality, note}: the law the
                     picks came from, the spans it was fitted on (null for a law that stores
                     none), and its held-out extrapolation (results/fits/quality.csv as records;
                     null when no quality table was given)
    provenance       settings, input hashes, packages, start time
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from archscale.io import write_csv, write_json
from archscale.provenance import provenance
from archscale.search.study import pareto_columns

WHAT = ("per parameter budget: the baseline, the most accurate frontier architecture "
        "(Panda-like) and the fastest one at no more than the baseline's predicted loss "
        "(Surefire-like), before and after the GQA local search")
QUALITY_NOTE = ("how well the law extrapolated to a held-out larger size "
                "(results/fits/quality.csv); check it before trusting a recommendation")
NO_QUALITY_NOTE = ("no fit-quality table was given (the command line's --quality, the "
                   "workflow's results/fits/quality.csv): the law's extrapolation is unchecked "
                   "here")


def _span(value: Sequence[float] | None) -> list[float] | None:
    return None if value is None else [float(v) for v in value]


def recommendations_document(result: Mapping[str, Any], law: Any,
                             quality: pd.DataFrame | None, settings: Mapping[str, Any],
                             inputs: Sequence[str | Path], started: str) -> dict[str, Any]:
    """recommendations.json (format in the module docstring)."""
    return {
        "what": WHAT,
        "recommendations": result["recommendations"],
        "law": {"form": law.form, "x_star": law.x_star, "r_star": law.r_star,
                "x_fitted": _span(law.x_fitted), "r_fitted": _span(law.r_fitted),
                "fit_quality": None if quality is None else quality.to_dict(orient="records"),
                "note": QUALITY_NOTE if quality is not None else NO_QUALITY_NOTE},
        "provenance": provenance(settings=dict(settings), inputs=[str(p) for p in inputs],
                                 started=started, packages=("numpy", "pandas", "scipy", "pulp")),
    }


def _whole_budgets(table: pd.DataFrame) -> pd.DataFrame:
    """`budget` is a parameter count (the size's target N): written as a whole number."""
    if "budget" not in table or table.empty:
        return table
    return table.assign(budget=table["budget"].round().astype("int64"))


def write_search_outputs(result: Mapping[str, Any], law: Any, paths: Mapping[str, str | Path],
                         *, quality: pd.DataFrame | None, settings: Mapping[str, Any],
                         inputs: Sequence[str | Path], started: str) -> dict[str, Any]:
    """Write paths["candidates"], paths["pareto"] and paths["recommendations"]; returns the
    recommendations document."""
    write_csv(paths["candidates"], _whole_budgets(result["candidates"]))
    write_csv(paths["pareto"], _whole_budgets(pareto_columns(result["pareto"])))
    recommendations = [{**rec, "budget": int(round(rec["budget"]))}
                       for rec in result["recommendations"]]
    doc = recommendations_document({**result, "recommendations": recommendations}, law,
                                   quality, settings, inputs, started)
    write_json(paths["recommendations"], doc)
    return doc
