"""Stage 1: the Chinchilla law L(N, D), one source of the reference loss L_opt(N, D).

Chinchilla (Hoffmann et al. 2022, Approach 3): L(N, D) = E + A/N^alpha + B/D^beta, fitted in
the log-sum-exp parametrisation

    log L_hat = LSE(a - alpha ln N, b - beta ln D, e),   A = e^a, B = e^b, E = e^e,

by minimising the SUM over points of Huber(delta = 1e-3) of (log L_hat - log L) with L-BFGS
from a grid of starts, keeping the best. The textbook way runs scipy from all 4,500 grid starts
with finite differences (about 11 minutes); here the objective and its analytic gradient are
vectorised numpy, the whole grid is scored in one array operation, and L-BFGS runs only from
the best-scoring starts (50 by default), with tolerances tight enough that the optimum agrees
with the exhaustive loop to 1e-6 relative in its objective (tests/test_fit_chinchilla.py).

Confidence intervals come from a bootstrap over points: each resample is refitted from the
full-data optimum (warm start) in a pool of worker processes; percentile intervals are reported
for the five coefficients and for the compute-optimal allocation at each budget C = 6 N D:

    N_opt(C) = G (C/6)^(beta/(alpha+beta)),  D_opt(C) = (C/6)^(alpha/(alpha+beta)) / G,
    G = (alpha A / (beta B))^(1/(alpha+beta)).

The empirical alternative (what the paper used at small scale), and which points each L_opt
source fits, are in archscale.fit.reference.

chinchilla.json (written by `ChinchillaFit.to_dict`, read back by `load_chinchilla`):

    law, formula          "chinchilla" and the formula as text
    coefficients          {E, A, B, alpha, beta}
    lse_parameters        {a, b, e, alpha, beta} with A = e^a, B = e^b, E = e^e
    objective             {value, definition, huber_delta}
    confidence_intervals  null, or {method, level, n_resamples, n_converged, seed, workers,
                          time_s, coefficients: {name: {low, high, se, n}},
                          compute_optimal: [{n_opt, d_opt, tokens_per_param: {low, high, se,
                          n}}]}; n counts the resamples with a finite value
    compute_optimal       [{compute, n_opt, d_opt, tokens_per_param, ci (when bootstrapped)}]
    convergence           optimizer, options, n_grid_starts, n_starts_run, starts_reaching_best,
                          best_start, success, message, iterations, function_evaluations,
                          gradient_norm, time_s
    warnings              list of sentences (e.g. a coefficient the data cannot identify)
    data                  {n_points, columns: [N, D, loss, predicted, residual_log], points}
    provenance            archscale version, commit, packages, host, settings, caller's keys
"""
from __future__ import annotations

import itertools
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize

from archscale.fit.intervals import percentile_interval
from archscale.fit.io import provenance
from archscale.fit.values import distinct_count

PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
COEF_NAMES = ("E", "A", "B", "alpha", "beta")
GRID_AXES = {"a": np.arange(0.0, 30.0, 5.0), "b": np.arange(0.0, 30.0, 5.0),
             "e": np.arange(-1.0, 1.5, 0.5), "alpha": np.arange(0.0, 2.5, 0.5),
             "beta": np.arange(0.0, 2.5, 0.5)}
# L-BFGS-B's default ftol compares the decrease to max(|f|, 1); the summed Huber objective is
# ~1e-3, so the defaults stop ~1e-6 relative short of the optimum. These do not.
LBFGS_OPTIONS = {"ftol": 1e-15, "gtol": 1e-11, "maxiter": 2000, "maxcor": 20}


#: Chinchilla exponents outside this range are implausible for language models (published
#: fits: 0.28-0.37; Hoffmann et al. 2022, Besiroglu et al. 2024); a fit there has traded E,
#: A and B off against each other rather than measured a power law.
PLAUSIBLE_EXPONENTS = (0.05, 1.0)
#: E below this fraction of the lowest observed loss has collapsed to its lower edge (0).
E_COLLAPSED = 1e-3
#: A bootstrap interval wider than this many decades leaves the coefficient unidentified.
MAX_DECADES = 3.0


class FitError(ValueError):
    """The data cannot support the requested fit; the message says why and what to change."""


# ---------------------------------------------------------------------------------------------
# The law
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta; callable on scalars or numpy arrays."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __call__(self, n: Any, d: Any) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        d = np.asarray(d, dtype=float)
        return self.E + self.A / n ** self.alpha + self.B / d ** self.beta

    @classmethod
    def from_lse(cls, theta: Sequence[float]) -> "ChinchillaLaw":
        a, b, e, alpha, beta = (float(v) for v in theta)
        return cls(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)

    def lse(self) -> np.ndarray:
        """(log A, log B, log E, alpha, beta); a coefficient that underflowed to 0 (a
        collapsed E: exp of a very negative fitted log) gives -inf, not an error."""
        return np.array([math.log(v) if v > 0 else -math.inf for v in (self.A, self.B, self.E)]
                        + [self.alpha, self.beta])

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in COEF_NAMES}

    @classmethod
    def from_dict(cls, values: Mapping[str, float]) -> "ChinchillaLaw":
        missing = [k for k in COEF_NAMES if k not in values]
        if missing:
            raise KeyError(f"Chinchilla coefficients need {COEF_NAMES}; missing {missing}")
        return cls(**{k: float(values[k]) for k in COEF_NAMES})

    def compute_optimal(self, compute: Any) -> dict[str, np.ndarray]:
        """N_opt, D_opt and tokens per parameter minimising L at fixed C = 6 N D.

        NaN when alpha or beta is not positive: loss then does not fall with N (or D) and no
        finite allocation is optimal.
        """
        c = np.asarray(compute, dtype=float) / 6.0
        if not (self.alpha > 0 and self.beta > 0):
            nan = np.full(c.shape, np.nan)
            return {"n_opt": nan, "d_opt": nan, "tokens_per_param": nan}
        s = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / s)
        n_opt = g * c ** (self.beta / s)
        d_opt = c ** (self.alpha / s) / g
        return {"n_opt": n_opt, "d_opt": d_opt, "tokens_per_param": d_opt / n_opt}


#: Epoch AI's published refit of Hoffmann et al.'s data (Besiroglu et al. 2024).
EPOCH_PUBLISHED = ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)


# ---------------------------------------------------------------------------------------------
# Objective
# ---------------------------------------------------------------------------------------------

def _huber(res: np.ndarray, delta: float) -> np.ndarray:
    mag = np.abs(res)
    return np.where(mag <= delta, 0.5 * res * res, delta * (mag - 0.5 * delta))


def huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                    log_l: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Summed Huber loss of the LSE prediction and its analytic gradient in (a, b, e, al, be)."""
    a, b, e, alpha, beta = theta
    u0 = a - alpha * log_n
    u1 = b - beta * log_d
    m = np.maximum(np.maximum(u0, u1), e)
    w0 = np.exp(u0 - m)
    w1 = np.exp(u1 - m)
    w2 = np.exp(e - m)
    s = w0 + w1 + w2
    res = m + np.log(s) - log_l
    dh = np.clip(res, -delta, delta) / s
    g0 = dh * w0
    g1 = dh * w1
    grad = np.array([g0.sum(), g1.sum(), (dh * w2).sum(),
                     -(g0 @ log_n), -(g1 @ log_d)])
    return float(_huber(res, delta).sum()), grad


def huber_objective_batch(thetas: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                          log_l: np.ndarray, delta: float) -> np.ndarray:
    """The objective at many parameter vectors at once (rows of `thetas`)."""
    t = np.asarray(thetas, dtype=float)
    u0 = t[:, 0:1] - t[:, 3:4] * log_n
    u1 = t[:, 1:2] - t[:, 4:5] * log_d
    e = t[:, 2:3]
    m = np.maximum(np.maximum(u0, u1), e)
    pred = m + np.log(np.exp(u0 - m) + np.exp(u1 - m) + np.exp(e - m))
    return _huber(pred - log_l, delta).sum(axis=1)


def default_grid() -> np.ndarray:
    """The 4,500 starts of Hoffmann et al. / Epoch as rows (a, b, e, alpha, beta)."""
    axes = [GRID_AXES[k] for k in PARAM_NAMES]
    return np.array(list(itertools.product(*axes)), dtype=float)


def single_threaded_blas():
    """Limit BLAS to one thread while L-BFGS runs.

    scipy's L-BFGS-B calls BLAS/LAPACK on 5x5 problems; OpenBLAS's thread hand-off there costs
    more than the work (measured: a 0.6 s fit took 2-6 s with 2 threads on a 2-core machine,
    and 17-36 s while another process kept one core busy). Uses threadpoolctl when installed.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn/lm-eval
        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _lbfgs(theta0: np.ndarray, log_n, log_d, log_l, delta: float):
    return minimize(huber_objective, theta0, args=(log_n, log_d, log_l, delta), jac=True,
                    method="L-BFGS-B", options=LBFGS_OPTIONS)


# ---------------------------------------------------------------------------------------------
# Bootstrap (module-level so worker processes can import it)
# ---------------------------------------------------------------------------------------------

def _bootstrap_chunk(args: tuple) -> tuple[np.ndarray, np.ndarray]:
    log_n, log_d, log_l, delta, theta0, index_sets = args
    thetas = np.full((len(index_sets), 5), np.nan)
    ok = np.zeros(len(index_sets), dtype=bool)
    with single_threaded_blas():
        for k, idx in enumerate(index_sets):
            res = _lbfgs(theta0, log_n[idx], log_d[idx], log_l[idx], delta)
            if np.all(np.isfinite(res.x)):
                thetas[k] = res.x
                ok[k] = bool(res.success)
    return thetas, ok


def _run_bootstrap(log_n, log_d, log_l, delta, theta0, n_resamples, seed, workers):
    rng = np.random.default_rng(seed)
    n = len(log_n)
    index_sets = [rng.integers(0, n, size=n) for _ in range(n_resamples)]
    workers = max(1, min(int(workers), n_resamples))
    chunks = [index_sets[i::workers] for i in range(workers)]
    payload = [(log_n, log_d, log_l, delta, theta0, chunk) for chunk in chunks]
    if workers == 1:
        results = [_bootstrap_chunk(payload[0])]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_bootstrap_chunk, payload))
    # undo the round-robin split so resample k keeps its index
    thetas = np.full((n_resamples, 5), np.nan)
    ok = np.zeros(n_resamples, dtype=bool)
    for i, (t, o) in enumerate(results):
        thetas[i::workers] = t
        ok[i::workers] = o
    return thetas, ok


# ---------------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------------

@dataclass
class ChinchillaFit:
    """The result of `fit_chinchilla`: the law, how it was reached, its uncertainty, its data."""

    law: ChinchillaLaw
    objective: float
    huber_delta: float
    convergence: dict[str, Any]
    n: np.ndarray
    d: np.ndarray
    loss: np.ndarray
    compute_budgets: list[float] = field(default_factory=list)
    intervals: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def compute_optimal_table(self) -> list[dict[str, Any]]:
        rows = []
        for k, c in enumerate(self.compute_budgets):
            opt = self.law.compute_optimal(c)
            row = {"compute": float(c), **{key: float(v) for key, v in opt.items()}}
            if self.intervals is not None:
                row["ci"] = self.intervals["compute_optimal"][k]
            rows.append(row)
        return rows

    def to_dict(self, extra_provenance: Mapping[str, Any] | None = None,
                settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The chinchilla.json document (fields in the module docstring)."""
        pred = self.law(self.n, self.d)
        return {
            "law": "chinchilla",
            "formula": "L(N, D) = E + A / N**alpha + B / D**beta",
            "coefficients": self.law.as_dict(),
            "lse_parameters": {k: v if math.isfinite(v) else None  # JSON has no -inf
                               for k, v in zip(PARAM_NAMES, self.law.lse().tolist())},
            "objective": {"value": self.objective,
                          "definition": "sum over points of Huber(delta) of "
                                        "ln L_predicted - ln L_observed",
                          "huber_delta": self.huber_delta},
            "confidence_intervals": self.intervals,
            "compute_optimal": self.compute_optimal_table(),
            "convergence": self.convergence,
            "warnings": list(self.warnings),
            "data": {"n_points": int(len(self.n)),
                     "columns": ["N", "D", "loss", "predicted", "residual_log"],
                     "points": [[float(a), float(b), float(c), float(p), float(np.log(p / c))]
                                for a, b, c, p in zip(self.n, self.d, self.loss, pred)]},
            "provenance": provenance(extra_provenance, settings),
        }


def _fit_warnings(law: ChinchillaLaw, n: np.ndarray, d: np.ndarray) -> list[str]:
    """Sentences for the output: coefficients the data cannot pin down or that make no sense."""
    out = []
    for name, value, var in (("alpha", law.alpha, "N"), ("beta", law.beta, "D")):
        if value <= 0:
            out.append(f"{name} = {value:.4g} is not positive: in these runs loss does not fall "
                       f"with {var} (under-trained or noisy runs?), so the law must not be "
                       f"extrapolated in {var} and the compute-optimal allocation is undefined")
    for name, values, coef in (("N", n, "A and alpha"), ("D", d, "B and beta")):
        distinct = distinct_count(values)
        if distinct < 3:
            out.append(f"only {distinct} distinct {name} value(s): {coef} are not identified, "
                       f"so the law is trustworthy only at the fitted {name} values; train "
                       f"at least 3 {'sizes' if name == 'N' else 'token budgets'} to fit them")
    return out


def degeneracy(law: ChinchillaLaw, loss: Any,
               intervals: Mapping[str, Any] | None = None) -> list[str]:
    """Why a fitted Chinchilla law cannot be trusted as a law (empty when nothing is wrong):
    E collapsed to 0, an exponent outside PLAUSIBLE_EXPONENTS, or (given the bootstrap's
    coefficient intervals, chinchilla.json's confidence_intervals.coefficients) an interval
    spanning more than MAX_DECADES decades."""
    out = []
    floor = float(np.min(np.asarray(loss, dtype=float)))
    if law.E < E_COLLAPSED * floor:
        out.append(f"E = {law.E:.3g} has collapsed to 0 (under {E_COLLAPSED:g} of the lowest "
                   f"loss {floor:.3g}): the irreducible loss is not identified, and A, B and "
                   "the exponents trade off against each other")
    lo, hi = PLAUSIBLE_EXPONENTS
    for name in ("alpha", "beta"):
        value = getattr(law, name)
        if not lo <= value <= hi:
            out.append(f"{name} = {value:.3g} lies outside the plausible {lo}-{hi}")
    for name, ci in (intervals or {}).items():
        if name in ("E", "A", "B") and ci.get("low", 0) > 0 and math.isfinite(ci.get("high",
                                                                                      math.nan)):
            decades = math.log10(ci["high"] / ci["low"])
            if decades > MAX_DECADES:
                out.append(f"{name}'s bootstrap interval {ci['low']:.3g}-{ci['high']:.3g} spans "
                           f"{decades:.1f} decades")
    return out


def fit_chinchilla(n: Any, d: Any, loss: Any, *, huber_delta: float = 1e-3,
                   n_starts: int = 50, grid: np.ndarray | None = None, bootstrap: int = 0,
                   compute_budgets: Sequence[float] = (), level: float = 0.95, seed: int = 0,
                   workers: int = 2) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta by Approach 3 (see the module docstring).

    n, d, loss: non-embedding parameters, training tokens and loss, one entry per run.
    n_starts: L-BFGS runs from the best-scoring grid starts (the exhaustive loop runs all).
    bootstrap: number of resamples for the confidence intervals (0 skips them); they run in
    `workers` processes, each refit warm-started from the full-data optimum.
    """
    n, d, loss = (np.asarray(v, dtype=float).ravel() for v in (n, d, loss))
    if not (len(n) == len(d) == len(loss)):
        raise FitError(f"N, D and loss have different lengths ({len(n)}, {len(d)}, {len(loss)})")
    bad = ~(np.isfinite(n) & np.isfinite(d) & np.isfinite(loss) & (n > 0) & (d > 0)
            & (loss > 0))
    if bad.any():
        raise FitError(f"{int(bad.sum())} point(s) have a missing or non-positive N, D or loss "
                       f"(first at index {int(np.argmax(bad))}); drop them before fitting")
    if len(n) < 5:
        raise FitError(f"the Chinchilla law has 5 coefficients but only {len(n)} point(s) were "
                       "given; train more sizes or token budgets (at least 5 runs)")
    if not huber_delta > 0:
        raise FitError(f"huber_delta must be positive, got {huber_delta}")
    start = time.perf_counter()
    log_n, log_d, log_l = np.log(n), np.log(d), np.log(loss)
    starts = default_grid() if grid is None else np.asarray(grid, dtype=float)
    scores = huber_objective_batch(starts, log_n, log_d, log_l, huber_delta)
    order = np.argsort(scores, kind="stable")[:max(1, int(n_starts))]
    best = None
    finals = []
    with single_threaded_blas():
        for i in order:
            res = _lbfgs(starts[i], log_n, log_d, log_l, huber_delta)
            if not np.isfinite(res.fun):
                continue
            finals.append(float(res.fun))
            if best is None or res.fun < best[0].fun:
                best = (res, i)
    if best is None:
        raise FitError("L-BFGS failed from every start (non-finite objective); check the data")
    res, start_index = best
    finals_arr = np.array(finals)
    law = ChinchillaLaw.from_lse(res.x)
    warnings = _fit_warnings(law, n, d)
    if not res.success:
        warnings.append(f"L-BFGS did not report convergence at the best start: {res.message}")
    convergence = {
        "optimizer": "scipy L-BFGS-B, analytic gradient",
        "options": dict(LBFGS_OPTIONS),
        "n_grid_starts": int(len(starts)),
        "n_starts_run": int(len(order)),
        "starts_reaching_best": int(np.sum(finals_arr <= res.fun * (1 + 1e-6))),
        "best_start": dict(zip(PARAM_NAMES, starts[start_index].tolist())),
        "success": bool(res.success),
        "message": str(res.message),
        "iterations": int(res.nit),
        "function_evaluations": int(res.nfev),
        "gradient_norm": float(np.linalg.norm(res.jac)),
        "time_s": round(time.perf_counter() - start, 4),
    }
    fit = ChinchillaFit(law=law, objective=float(res.fun), huber_delta=float(huber_delta),
                        convergence=convergence, n=n, d=d, loss=loss,
                        compute_budgets=[float(c) for c in compute_budgets], warnings=warnings)
    if bootstrap > 0:
        t0 = time.perf_counter()
        thetas, ok = _run_bootstrap(log_n, log_d, log_l, float(huber_delta), res.x,
                                    int(bootstrap), seed, workers)
        fit.intervals = _bootstrap_intervals(thetas, ok, fit.compute_budgets, level)
        fit.intervals.update({"seed": int(seed), "workers": int(workers),
                              "time_s": round(time.perf_counter() - t0, 3)})
        n_bad = int((~ok).sum())
        if n_bad:
            fit.warnings.append(f"{n_bad} of {bootstrap} bootstrap refits did not converge; "
                                "they are excluded from the intervals")
    bad = degeneracy(law, loss, (fit.intervals or {}).get("coefficients"))
    if bad:
        fit.warnings.append("degenerate fit, not a law to extrapolate: " + "; ".join(bad))
    return fit


def _bootstrap_intervals(thetas: np.ndarray, ok: np.ndarray, budgets: Sequence[float],
                         level: float) -> dict[str, Any]:
    good = thetas[ok]
    coefs = np.column_stack([np.exp(good[:, 2]), np.exp(good[:, 0]), np.exp(good[:, 1]),
                             good[:, 3], good[:, 4]]) if len(good) else np.empty((0, 5))
    out: dict[str, Any] = {
        "method": "percentile bootstrap over points, each refit warm-started from the "
                  "full-data optimum",
        "level": level, "n_resamples": int(len(thetas)), "n_converged": int(ok.sum()),
        "coefficients": {k: percentile_interval(coefs[:, j], level, count=True)
                         for j, k in enumerate(COEF_NAMES)},
        "compute_optimal": [],
    }
    for c in budgets:
        samples = {"n_opt": [], "d_opt": [], "tokens_per_param": []}
        for row in coefs:
            with np.errstate(all="ignore"):
                opt = ChinchillaLaw(*row).compute_optimal(c)
            for key in samples:
                samples[key].append(float(opt[key]))
        out["compute_optimal"].append(
            {key: percentile_interval(np.array(v, dtype=float), level, count=True)
             for key, v in samples.items()})
    return out


def load_chinchilla(path: str | Path) -> ChinchillaLaw:
    """The law stored in a chinchilla.json written by `ChinchillaFit.to_dict`."""
    doc = json.loads(Path(path).read_text())
    if doc.get("law") != "chinchilla" or "coefficients" not in doc:
        raise ValueError(f"{path} is not a chinchilla.json (no 'law': 'chinchilla' and "
                         "'coefficients'); write it with `archscale fit chinchilla`")
    return ChinchillaLaw.from_dict(doc["coefficients"])
