"""Law fitting: the reference loss L_opt(N, D) and the architecture-conditional correction.

- chinchilla:  Approach 3 Chinchilla fit (fast, exact), bootstrap intervals, compute-optimal
               allocation, and the empirical L_opt (best variant per size and budget).
- conditional: the multiplicative / additive conditional law, its optimum x*, r*, the
               conditional.json format, `load_conditional` and `paper_law` for the search.
- quality:     progressive extrapolation over sizes (MSE, Spearman), without leakage.
- plots:       report figures.  io: reading runs tables, writing JSON.  cli: `archscale fit`.
"""
from archscale.fit.chinchilla import (EPOCH_PUBLISHED, ChinchillaFit, ChinchillaLaw, EmpiricalLopt,
                                      FitError, empirical_l_opt_per_run, empirical_points,
                                      fit_chinchilla, load_chinchilla)
from archscale.fit.conditional import (PAPER_COEFFICIENTS, ConditionalFit, ConditionalLaw,
                                       fit_conditional, law_from_dict, load_conditional, paper_law,
                                       predict_loss)
from archscale.fit.io import RunsTableError, read_runs, size_groups
from archscale.fit.quality import progressive_extrapolation

__all__ = [
    "EPOCH_PUBLISHED", "ChinchillaFit", "ChinchillaLaw", "EmpiricalLopt", "FitError",
    "empirical_l_opt_per_run", "empirical_points", "fit_chinchilla", "load_chinchilla",
    "PAPER_COEFFICIENTS", "ConditionalFit", "ConditionalLaw", "fit_conditional",
    "law_from_dict", "load_conditional", "paper_law", "predict_loss",
    "RunsTableError", "read_runs", "size_groups", "progressive_extrapolation",
]
