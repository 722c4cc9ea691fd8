"""Law fitting: the reference loss L_opt(N, D) and the architecture-conditional correction.

- chinchilla:  Approach 3 Chinchilla fit (fast, exact), bootstrap intervals, compute-optimal
               allocation.
- reference:   the reference loss L_opt by source: empirical (best variant per size and
               budget), a Chinchilla fit on every run, or on the best shapes.
- forms/:      the registry of conditional-law forms, one module per form.
- conditional: the conditional law in any registered form, its optimum x*, r*, the
               conditional.json format, `load_conditional` and `paper_law` for the search.
- quality:     progressive extrapolation over sizes (MSE, Spearman), without leakage.
- defaults (the schema's fit settings), values (when two values are one), intervals
  (percentile intervals), seeds, plots, io, stages (file-in, file-out), cli: `archscale fit`.

The names below load on first use, so importing one light submodule (archscale.fit.forms, for
the CLI's --form choices) does not import scipy, pandas or matplotlib.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "chinchilla": ("EPOCH_PUBLISHED", "ChinchillaFit", "ChinchillaLaw", "FitError",
                   "fit_chinchilla", "load_chinchilla"),
    "reference": ("EmpiricalLopt", "empirical_l_opt_per_run", "empirical_points"),
    "conditional": ("PAPER_COEFFICIENTS", "PAPER_R_RANGE", "ConditionalFit", "ConditionalLaw",
                    "fit_conditional", "law_from_dict", "load_conditional", "paper_law",
                    "predict_loss"),
    "io": ("RunsTableError", "read_runs", "size_groups"),
    "quality": ("progressive_extrapolation",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
