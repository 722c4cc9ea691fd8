"""Proposals: the runs that would settle the most of what is still unsettled, per device-hour.

What is unsettled after a study is the position of the optimum: the bootstrap intervals of x*
and r* (archscale.fit.conditional). Each extra run costs what it costs (the study's own cost
model, archscale.costs.FittedJobCosts), so the question is which run narrows those intervals
most per device-hour. results/proposals.csv answers it for new seeds of trained shapes and for
new shapes anywhere in the design space: a grid over x and r at each trained size (gaps
between trained points included) and at one size above the largest.

Method: locally optimal experimental design. Why this and not refitting on simulated runs:
it needs no simulation, it is deterministic, and it scores thousands of candidates in well
under a second, because a run only adds one row to an information matrix.

- Linearise the fitted law at its coefficients c: each run contributes its row
  j = d(predicted loss)/dc (central differences on the form's own prediction, exact for the
  built-in forms, which are linear in each coefficient alone), weighted by 1/sigma^2 of the
  mean loss it measured. The information matrix is M = sum w j^T j.
- sigma: a trained (shape, budget) with n seeds measured its mean with variance s^2 / n,
  where s is its own seed SD shrunk towards the pooled SD at its budget (PRIOR_DOF degrees of
  freedom of the pooled value: one shape's two seeds give a 1-degree-of-freedom SD, too rough
  to trust alone, yet seeds that disagree do make that mean less certain). A future seed is
  expected to be as noisy as the study's typical seed: the pooled SD at its budget.
  Without any multi-seed shape, the law's residual RMSE stands in for the seed SD.
- The variance of x* (and r*) is g^T M^+ g, with g = d x*/dc by central differences on the
  form's optimum; a candidate adds w j^T j, so its variance after is a Sherman-Morrison update
  (vectorised over all candidates). M is inverted on the subspace the runs identify: the
  multiplicative form's scale (one factor up, the other down) changes no prediction, so M is
  singular along it, and x*, r* do not move along it either.
- The effect of a run is the fraction of the current x* interval width it removes plus the
  fraction of the r* width it removes (a relative measure, so x and r weigh alike);
  the rank is effect per device-hour. The widths reported are the study's bootstrap widths,
  scaled by the linearised ratio sqrt(var_after / var_now).
- The first `top` rows are a greedy batch: each is the best run given the study and every
  batch run above it (so the batch spreads out instead of repeating one point, and a shape can
  be proposed twice: its second row is another seed). The rows after the batch are scored
  given the study and the whole batch.

Where the candidates lie (`proposals.candidates`, CANDIDATE_PLACES): "anywhere" as above, or
"verdict_points": only at the (size, token budget) points where the study compares 3 or more
shapes, the points its U verdicts rest on, at their own tokens per parameter (new seeds and new
shapes there; no other budget and no new size). Why: on the laptop loop study's real losses the
"anywhere" ranking chose the cheapest runs, small sizes at few tokens at the edges of x and r,
where the law form misfits and the seed SD is largest; each refit fitted them worse and the
intervals widened, and no run could move a margin (docs/laptop-loop/README.md).

Limits, said where the proposals are read (docs/science.md): the linearisation is local (a
run far from the current fit may teach more, or less, than its row says); it assumes the law
form is right (a run that would expose a wrong form scores no better than any other); it
ignores what a run would do to L_opt (held at its fitted values, as in the bootstrap); and a
direction of the coefficients the current runs do not identify at all earns no credit.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy.stats import norm

from archscale.architecture import (SHAPE_FIELDS, ArchitectureError, ShapeTargets,
                                    attention_params_per_layer, non_embedding_params,
                                    shape_name, solve_shape, training_flops_per_token)
from archscale.costs import TRAINING_GPU, FittedJobCosts, training_seconds
from archscale.fit.chinchilla import FitError
from archscale.fit.conditional import ConditionalLaw
from archscale.fit.defaults import DEFAULT_R_RANGE
from archscale.fit.forms.base import AXES
from archscale.fit.intervals import percentile_interval
from archscale.fit.io import RunsTableError, read_runs, size_groups
from archscale.fit.seeds import MIN_MARGIN_SHAPES, optimum_margins, seed_sd_at

if TYPE_CHECKING:
    from archscale.config import Study

#: Degrees of freedom the pooled seed SD counts for when a shape's own SD is shrunk towards it.
PRIOR_DOF = 3.0
#: Eigenvalues of the (scaled) information matrix below this share of the largest: directions
#: the runs do not identify (the multiplicative form's scale), left out of the inverse.
IDENTIFIED_RCOND = 1e-9
#: Relative step of the central differences (the built-in forms are linear in each
#: coefficient alone, so the differences are exact whatever the step).
FD_STEP = 1e-3

#: Where a proposal may lie: every trained size and budget and one size above ("anywhere"), or
#: only the points the U verdicts rest on ("verdict_points"; the module docstring says why).
CANDIDATE_PLACES = ("anywhere", "verdict_points")

PROPOSAL_COLUMNS = [
    "rank", "batch", "kind", "name", "n_params_target", "d_over_sqrt_n_target",
    "r_mlp_attn_target", "gqa_group", *SHAPE_FIELDS, "n_params_non_embedding",
    "d_over_sqrt_n", "r_mlp_attn", "tokens", "seed", "seed_sd_assumed", "cost_device_hours",
    "x_interval_width_now", "x_interval_width_after", "r_interval_width_now",
    "r_interval_width_after", "effect", "effect_per_device_hour", "why"]


class ProposalError(ValueError):
    """The study cannot be designed from (no bootstrap, too few runs...); says why."""


@dataclass(frozen=True)
class ProposalSettings:
    """What the proposals read besides the runs, the law, the noise and the costs.

    The fixed defaults stand until the config schema gets a `proposals` section."""

    seq_len: int                               # training sequence length (the FLOPs of a run)
    r_range: tuple[float, float] = DEFAULT_R_RANGE  # runs outside it are not fitted: no credit
    loss_column: str = "val_loss"
    size_tolerance: float = 0.25               # runs within it of one size form one size
    top: int = 20                              # rows of the greedy batch
    grid_points: int = 9                       # values per axis of the x and r grid
    grid_widen: float = 1.5                    # the grid reaches this factor past the design span
    x_span: tuple[float, float] | None = None  # the design space in x (the configured grid's);
    r_span: tuple[float, float] | None = None  # default: the law's fitted span, which moves
    size_step: float | None = None             # the size above the largest: N_max * step
                                               # (default: the ratio of the two largest sizes, or 2)
    ffn_multiple: int = 8                      # the shape solver's MLP width multiple
    shape_tolerance: float = 0.08              # the solver's allowed miss on N
    gqa_groups: tuple[int, ...] | None = None  # default: each size's most common trained group
    head_dims: tuple[int, ...] | None = None   # default: each size's most common head_dim
    first_seed: int = 0                        # the seed of a new shape's first run
    axes: tuple[str, ...] = AXES               # the optima whose intervals count
    kinds: tuple[str, ...] = ("new_seed", "new_shape", "new_size")  # the candidates considered
    candidates: str = "anywhere"               # where they may lie (CANDIDATE_PLACES)

    def __post_init__(self) -> None:
        if self.candidates not in CANDIDATE_PLACES:
            raise ProposalError(f"proposals.candidates is {self.candidates!r}; it must be one "
                                f"of {list(CANDIDATE_PLACES)}")


def proposals_params(study: "Study") -> dict[str, Any]:
    """What changes the proposals (the rule's params): the fit settings they read, the run
    they price (sequence length), the shape solver's multiple, the first seed, the devices
    each job occupies (the cost is device-hours), the design space: the x and r spans of
    the configured architectures, fixed by the config so that the closed loop's refits do not
    move it, and where the candidates may lie (`proposals.candidates`)."""
    config = study.config
    train, fit = config["training"], config["fit"]
    xs = [a.d_over_sqrt_n for a in study.architectures.values()]
    rs = [a.r_mlp_attn for a in study.architectures.values()]
    return {
        "x_span": [round(min(xs), 6), round(max(xs), 6)],
        "r_span": [round(min(rs), 6), round(max(rs), 6)],
        "seq_len": config["data"]["seq_len"],
        "ffn_multiple": config["search"]["ffn_multiple"],
        "first_seed": int(train["seeds"][0]),
        "fit": {k: fit[k] for k in ("loss_column", "r_range", "size_tolerance")},
        "train_devices": train["gpus"] or train["threads"],
        "eval_devices": 1 if train["gpus"] else config["evaluation"]["threads"],
        "candidates": study.settings.proposals.candidates,
    }


# ---------------------------------------------------------------------------------------------
# The cost of one proposed run
# ---------------------------------------------------------------------------------------------

def run_cost_model(runs: pd.DataFrame, seq_len: int, eval_seconds: Iterable[float],
                   train_devices: int, eval_devices: int) -> tuple[FittedJobCosts, list[str]]:
    """The study's cost model for one proposed run (train and evaluate; no throughput
    measurement: the law does not need it), and notes on any fallback.

    Training: FittedJobCosts's line in training FLOPs over runs.csv's wall_s. Evaluation: the
    median of the study's evaluate jobs; without their times, 0 (a note says so). Without
    wall_s in the runs table, training time is FLOPs at the assumed MFU on the TRAINING_GPU
    preset (costs.training_seconds), a stated assumption, not a measurement."""
    notes: list[str] = []
    evals = [float(v) for v in eval_seconds if v == v and v >= 0]
    if not evals:
        notes.append("no evaluate job records its duration: evaluation is priced at 0 s")
        evals = [0.0]
    wall = runs.get("wall_s")
    if wall is None or not np.all(np.isfinite(pd.to_numeric(wall, errors="coerce"))):
        from archscale.devices import get_device

        per_flop = training_seconds(1.0, get_device(TRAINING_GPU))
        notes.append(f"runs.csv has no usable wall_s: training is priced from FLOPs on "
                     f"{TRAINING_GPU} at the assumed MFU, not from measured durations")
        cost = FittedJobCosts(fixed_s=0.0, s_per_flop=per_flop, eval_s=float(np.median(evals)),
                              measure_s=0.0, train_devices=int(train_devices),
                              eval_devices=int(eval_devices), measure_devices=0)
        return cost, notes
    cost = FittedJobCosts.fit(runs, seq_len, eval_seconds=evals, measure_seconds=[0.0],
                              train_devices=train_devices, eval_devices=eval_devices,
                              measure_devices=0)
    return cost, notes


def run_hours(cost: FittedJobCosts, shapes: pd.DataFrame, vocab_size: int, seq_len: int
              ) -> np.ndarray:
    """Device-hours of each row's run (shape columns and tokens), vectorised; public so that
    the loop's simulation prices runs exactly as the proposals do."""
    s = {f: shapes[f].to_numpy(float) for f in SHAPE_FIELDS}
    n = non_embedding_params(*(s[f] for f in SHAPE_FIELDS))
    flops = training_flops_per_token(n, s["d_model"], vocab_size, s["n_layers"], s["n_heads"],
                                     s["head_dim"], seq_len) * shapes["tokens"].to_numpy(float)
    return np.array([cost.hours(f) for f in flops])


# ---------------------------------------------------------------------------------------------
# The linearised law
# ---------------------------------------------------------------------------------------------

@dataclass
class _Linear:
    """The law linearised at its coefficients, in scaled coordinates theta_k = c_k / scale_k."""

    law: ConditionalLaw
    names: tuple[str, ...] = field(init=False)
    scale: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.names = tuple(self.law.law_form.coefficient_names)
        values = np.array([self.law.coefs[k] for k in self.names], float)
        self.scale = np.where(np.abs(values) > 1e-12, np.abs(values), 1.0)

    def _shifted(self, k: int, sign: float) -> dict[str, float]:
        c = dict(self.law.coefs)
        c[self.names[k]] = c[self.names[k]] + sign * FD_STEP * self.scale[k]
        return c

    def rows(self, x: np.ndarray, r: np.ndarray, l_opt: np.ndarray, n: np.ndarray
             ) -> np.ndarray:
        """d(predicted loss)/d theta, one row per point."""
        form = self.law.law_form
        kw = form.n_keyword(n) if form.depends_on_n else {}
        cols = []
        for k in range(len(self.names)):
            up = form.predict(form.coefficients(self._shifted(k, 1.0)), x, r, l_opt, **kw)
            down = form.predict(form.coefficients(self._shifted(k, -1.0)), x, r, l_opt, **kw)
            cols.append((np.asarray(up, float) - np.asarray(down, float)) / (2 * FD_STEP))
        return np.column_stack(cols)

    def gradient(self, axis: str) -> np.ndarray:
        """d(axis*)/d theta at the law's reference size."""
        form = self.law.law_form
        kw = form.n_keyword(self.law.n_reference) if form.depends_on_n else {}
        out = np.zeros(len(self.names))
        for k in range(len(self.names)):
            up = form.optimum(form.coefficients(self._shifted(k, 1.0)), **kw)[axis].star
            down = form.optimum(form.coefficients(self._shifted(k, -1.0)), **kw)[axis].star
            out[k] = (up - down) / (2 * FD_STEP)
        return out


class _Design:
    """The information of a set of runs about the coefficients, on the identified subspace,
    and the variance of each optimum under it."""

    def __init__(self, rows: np.ndarray, weights: np.ndarray, gradients: Mapping[str, np.ndarray]):
        info = (rows * weights[:, None]).T @ rows
        values, vectors = np.linalg.eigh(info)
        keep = values > IDENTIFIED_RCOND * max(values.max(), 1e-300)
        self.basis = vectors[:, keep]
        self.cov = np.diag(1.0 / values[keep])  # the inverse on the identified subspace
        self.g = {a: self.basis.T @ v for a, v in gradients.items()}

    def variance(self) -> dict[str, float]:
        return {a: float(g @ self.cov @ g) for a, g in self.g.items()}

    def variance_after(self, rows: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Each candidate's variance of each optimum once its run is added (Sherman-Morrison)."""
        j = rows @ self.basis                # (K, k)
        cj = j @ self.cov                    # (K, k): C j for each candidate
        quad = np.einsum("ij,ij->i", cj, j)  # j^T C j
        out = {}
        for a, g in self.g.items():
            gcj = cj @ g
            out[a] = g @ self.cov @ g - weights * gcj ** 2 / (1.0 + weights * quad)
        return out

    def add(self, row: np.ndarray, weight: float) -> None:
        j = self.basis.T @ row
        cj = self.cov @ j
        self.cov = self.cov - weight * np.outer(cj, cj) / (1.0 + weight * (j @ cj))


# ---------------------------------------------------------------------------------------------
# The runs, their noise, the candidates
# ---------------------------------------------------------------------------------------------

def _observed(runs: pd.DataFrame, settings: ProposalSettings) -> pd.DataFrame:
    """One row per trained (shape, budget) the fit uses: N, D, x, r, seeds, own SD, shape."""
    missing = [f for f in (*SHAPE_FIELDS, "name", "vocab_size") if f not in runs.columns]
    if missing:
        raise ProposalError(f"the runs table lacks the shape column(s) {missing}: proposals "
                            "need runs.csv as the workflow writes it")
    try:
        table = read_runs(runs, settings.loss_column, require=("N", "D", "loss", "x", "r"))
    except RunsTableError as exc:
        raise ProposalError(str(exc)) from None
    lo, hi = settings.r_range
    table = table[(table["r"] >= lo) & (table["r"] <= hi)].reset_index(drop=True)
    shapes = runs.drop_duplicates("name").set_index("name")
    for f in SHAPE_FIELDS:
        table[f] = [int(shapes.loc[name, f]) for name in table["name"]]
    return table


def _seed_sd(noise: Mapping[str, Any] | None, d: float, fallback: float) -> float:
    sd = seed_sd_at(dict(noise or {}), d) if noise else None
    return float(sd) if sd else fallback


def _size_plan(observed: pd.DataFrame, settings: ProposalSettings) -> list[dict[str, Any]]:
    """Each trained size (its geometric-mean N, the layers, head_dim and GQA group most of its
    shapes have, its budgets) and one size above the largest at the same tokens per parameter."""
    labels = size_groups(observed["N"].to_numpy(float), settings.size_tolerance)
    sizes = []
    for label in sorted(set(labels)):
        group = observed[labels == label]
        common = lambda col: Counter(group[col]).most_common(1)[0][0]  # noqa: E731
        gqa = Counter((group["n_heads"] // group["n_kv_heads"]).astype(int)).most_common(1)[0][0]
        sizes.append({"N": float(np.exp(np.log(group["N"]).mean())),
                      "n_layers": int(common("n_layers")), "head_dim": int(common("head_dim")),
                      "gqa_group": int(gqa), "budgets": sorted(float(d) for d in set(group["D"])),
                      "above": False})
    top = sizes[-1]
    step = settings.size_step or (top["N"] / sizes[-2]["N"] if len(sizes) > 1 else 2.0)
    step = max(float(step), 1.25)
    sizes.append({**top, "N": top["N"] * step, "above": True,
                  "budgets": [max(top["budgets"]) * step]})
    return sizes


def _grid(low: float, high: float, points: int, widen: float,
          bounds: tuple[float, float] = (0.0, math.inf)) -> np.ndarray:
    lo, hi = max(low / widen, bounds[0]), min(high * widen, bounds[1])
    return np.geomspace(lo, hi, points)


def _new_shapes(observed: pd.DataFrame, law: ConditionalLaw, settings: ProposalSettings
                ) -> pd.DataFrame:
    """Solved integer shapes on the x-r grid at each size, at each of its budgets; a shape the
    study trained at that budget is left to its new-seed candidate.

    The grid spans the design space (settings.x_span, r_span: the configured grid's) widened
    once by grid_widen, and a solved shape whose x or r lands outside that is dropped. Without
    a fixed span the grid follows the law's fitted span, and a loop that trains the grid's
    edge widens the next round's grid again: the laptop loop study's first run walked x from
    0.07 down to 0.015 (d_model 2 at 16k) in four rounds (docs/laptop-loop-design.md)."""
    x_span = settings.x_span or law.x_fitted or (observed["x"].min(), observed["x"].max())
    r_span = settings.r_span or law.r_fitted or (observed["r"].min(), observed["r"].max())
    xs = _grid(*x_span, settings.grid_points, settings.grid_widen)
    rs = _grid(*r_span, settings.grid_points, settings.grid_widen, settings.r_range)
    trained = {(tuple(int(row[f]) for f in SHAPE_FIELDS), float(row["D"]))
               for _, row in observed.iterrows()}
    seen: set[tuple[tuple[int, ...], float]] = set()
    rows = []
    for size in _size_plan(observed, settings):
        for gqa in settings.gqa_groups or (size["gqa_group"],):
            for head_dim in settings.head_dims or (size["head_dim"],):
                for x in xs:
                    for r in rs:
                        targets = ShapeTargets(n_params=size["N"], d_over_sqrt_n=float(x),
                                               r_mlp_attn=float(r), gqa_group=int(gqa),
                                               n_layers=size["n_layers"], head_dim=int(head_dim),
                                               ffn_multiple=settings.ffn_multiple,
                                               tolerance=settings.shape_tolerance)
                        try:
                            shape = solve_shape(targets, "proposal")
                        except ArchitectureError:
                            continue
                        key = tuple(shape[f] for f in SHAPE_FIELDS)
                        for d in size["budgets"]:
                            if (key, d) in trained or (key, d) in seen:
                                continue
                            seen.add((key, d))
                            rows.append({**shape, "tokens": d, "n_params_target": size["N"],
                                         "d_over_sqrt_n_target": float(x),
                                         "r_mlp_attn_target": float(r),
                                         "kind": "new_size" if size["above"] else "new_shape",
                                         "name": shape_name(shape),
                                         "seed": settings.first_seed, "n_seeds": 0,
                                         "own_sd": math.nan})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = _with_accounting(frame)
    lo, hi = settings.r_range
    keep = (frame["r_mlp_attn"] >= lo) & (frame["r_mlp_attn"] <= hi)
    if settings.x_span is not None:
        keep &= frame["d_over_sqrt_n"].between(xs[0], xs[-1])
    if settings.r_span is not None:
        keep &= frame["r_mlp_attn"].between(rs[0], rs[-1])
    return frame[keep].reset_index(drop=True)


def _with_accounting(frame: pd.DataFrame) -> pd.DataFrame:
    """N, x, r and the GQA group of each row's integer shape."""
    s = {f: frame[f].to_numpy(float) for f in SHAPE_FIELDS}
    n = non_embedding_params(*(s[f] for f in SHAPE_FIELDS))
    attn = s["n_layers"] * attention_params_per_layer(s["d_model"], s["n_heads"],
                                                      s["n_kv_heads"], s["head_dim"])
    return frame.assign(n_params_non_embedding=n, d_over_sqrt_n=s["d_model"] / np.sqrt(n),
                        r_mlp_attn=(n - attn) / attn,
                        gqa_group=(s["n_heads"] // s["n_kv_heads"]).astype(int))


def _new_seeds(observed: pd.DataFrame) -> pd.DataFrame:
    """Another seed of every trained (shape, budget): the same row of the design again."""
    rows = []
    for _, run in observed.iterrows():
        seeds = run.get("seeds") if "seeds" in observed.columns else ()
        seed = (max(seeds) + 1) if seeds else int(run["n_seeds"])
        rows.append({**{f: int(run[f]) for f in SHAPE_FIELDS}, "tokens": float(run["D"]),
                     "n_params_target": float(run["N"]), "d_over_sqrt_n_target": float(run["x"]),
                     "r_mlp_attn_target": float(run["r"]), "kind": "new_seed",
                     "name": str(run["name"]), "seed": int(seed),
                     "n_seeds": int(run["n_seeds"]), "own_sd": float(run["loss_sd"])})
    return _with_accounting(pd.DataFrame(rows))


# ---------------------------------------------------------------------------------------------
# The proposals
# ---------------------------------------------------------------------------------------------

def _bootstrap_widths(law: ConditionalLaw) -> dict[str, float]:
    """The study's current interval width of each optimum, from the bootstrap's refits (over
    the refits where that optimum is a minimum, as conditional.json reports it)."""
    form, kw = law.law_form, {}
    if form.depends_on_n:
        kw = form.n_keyword(law.n_reference)
    stars = {a: [] for a in AXES}
    for row in law.refits:
        opt = form.optimum(form.coefficients(dict(zip(form.coefficient_names, row))), **kw)
        for a in AXES:
            if opt[a].is_minimum and np.isfinite(opt[a].star) and opt[a].star > 0:
                stars[a].append(opt[a].star)
    out = {}
    for a in AXES:
        ci = percentile_interval(stars[a], law.refit_level)
        out[a] = ci["high"] - ci["low"]
    return out


def optimum_interval(doc: Mapping[str, Any], axis: str) -> tuple[float, float, float]:
    """(estimate, low, high) of x* or r* in a conditional.json; NaN where it has none (a
    bootstrap that found too few minima gives no interval)."""
    star = (doc.get("optimum") or {}).get(f"{axis}_star")
    ci = ((doc.get("confidence_intervals") or {}).get("optimum") or {}).get(f"{axis}_star") or {}
    number = lambda v: float(v) if isinstance(v, (int, float)) else math.nan  # noqa: E731
    return number(star), number(ci.get("low")), number(ci.get("high"))


def interval_widths(doc: Mapping[str, Any]) -> dict[str, float] | None:
    """The x* and r* interval widths a conditional.json reports (its bootstrap), or None
    without a bootstrap; an axis without an interval has no width."""
    widths = {}
    for a in AXES:
        _, low, high = optimum_interval(doc, a)
        if not (math.isnan(low) or math.isnan(high)):
            widths[a] = high - low
    return widths if widths else None


def _l_opt(law: ConditionalLaw, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """L_opt at each row's (N, D); NaN where the law cannot give it (outside empirical points
    without a Chinchilla law to extrapolate)."""
    try:
        return np.asarray(law.l_opt(n, d), float)
    except FitError:
        out = np.full(len(n), np.nan)
        for i in range(len(n)):
            try:
                out[i] = float(law.l_opt(n[i:i + 1], d[i:i + 1])[0])
            except FitError:
                pass
        return out


def propose_runs(runs: pd.DataFrame, law: ConditionalLaw,
                 seed_noise: Mapping[str, Any] | None, cost: FittedJobCosts,
                 settings: ProposalSettings, candidates: pd.DataFrame | None = None,
                 interval_widths: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The candidate runs ranked by expected narrowing of the x* and r* intervals per
    device-hour (PROPOSAL_COLUMNS; the method is the module docstring's).

    runs: runs.csv as the workflow writes it (one row per seed, shape columns, wall_s);
    law: the fitted law with its bootstrap refits (`load_conditional`); seed_noise:
    conditional.json's `seed_noise` block; cost: `run_cost_model`'s. `candidates` replaces the
    generated ones (rows with the shape columns, tokens, kind, name, seed and optional
    *_target columns), for callers that bring their own. `interval_widths` ({'x': ..,
    'r': ..}, e.g. `interval_widths(conditional.json)`) stand for the bootstrap's widths when
    the law carries no refits (files written before refits were stored). Raises
    ProposalError, saying why, when there is nothing to design from."""
    if interval_widths is None:
        if law.refits is None or len(law.refits) < 2:
            raise ProposalError("the conditional law has no bootstrap, so its x* and r* "
                                "intervals are unknown and nothing says what is unsettled; fit "
                                "it with fit.bootstrap > 0")
        interval_widths = _bootstrap_widths(law)
    observed = _observed(runs, settings)
    form = law.law_form
    if len(observed) <= form.n_free:
        raise ProposalError(f"only {len(observed)} fitted (shape, budget) point(s) for the "
                            f"{form.name} form's {form.n_free} free coefficients: train more "
                            "shapes before asking which to add")
    vocab = int(pd.to_numeric(runs["vocab_size"]).iloc[0])
    widths_now = {a: float(interval_widths.get(a, math.nan)) for a in AXES}
    axes = tuple(a for a in settings.axes if a in AXES)
    if not axes:
        raise ProposalError(f"settings.axes {settings.axes} names no optimum of {AXES}")

    linear = _Linear(law)
    design, rmse = _study_design(observed, law, linear, seed_noise, axes)
    var_now = design.variance()
    if not all(v > 0 and np.isfinite(v) for v in var_now.values()):
        raise ProposalError("the runs leave the optimum's variance undefined at the fitted "
                            "coefficients; check the fit's warnings")

    pool, l_opt = _candidate_pool(candidates, observed, law, settings)
    rows = linear.rows(pool["d_over_sqrt_n"].to_numpy(float), pool["r_mlp_attn"].to_numpy(float),
                       l_opt, pool["n_params_non_embedding"].to_numpy(float))
    sd = np.array([_seed_sd(seed_noise, d, rmse) for d in pool["tokens"]])
    weights = 1.0 / sd ** 2
    hours = run_hours(cost, pool, vocab, settings.seq_len)
    if not np.all(hours > 0):
        raise ProposalError("the cost model prices some run at 0 device-hours; check wall_s "
                            "in runs.csv")
    pool = pool.assign(seed_sd_assumed=sd, cost_device_hours=hours)

    z = float(norm.ppf(0.5 + law.refit_level / 2))
    width_now = {a: (widths_now[a] if np.isfinite(widths_now[a]) and widths_now[a] > 0
                     else 2 * z * math.sqrt(var_now[a])) for a in AXES}
    var_ref = {a: var_now.get(a, math.nan) for a in AXES}
    picked: list[dict[str, Any]] = []
    extra_seeds: Counter = Counter()
    for _ in range(min(settings.top, len(pool))):
        effect, after = _effect(design, rows, weights, axes, var_ref)
        best = int(np.argmax(effect / hours))
        record = _record(pool.iloc[best], extra_seeds[best], True, float(effect[best]),
                         {a: float(after[a][best]) for a in axes}, var_ref, width_now, observed)
        picked.append(record)
        extra_seeds[best] += 1
        design.add(rows[best], float(weights[best]))
    effect, after = _effect(design, rows, weights, axes, var_ref)
    rest = [_record(pool.iloc[i], extra_seeds[i], False, float(effect[i]),
                    {a: float(after[a][i]) for a in axes}, var_ref, width_now, observed)
            for i in range(len(pool))]
    rest.sort(key=lambda rec: -rec["effect_per_device_hour"])
    table = pd.DataFrame(picked + rest)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table[PROPOSAL_COLUMNS]


def _study_design(observed: pd.DataFrame, law: ConditionalLaw, linear: "_Linear",
                  seed_noise: Mapping[str, Any] | None, axes: tuple[str, ...]
                  ) -> tuple["_Design", float]:
    """The trained points' information (each weighted by its seeds over its shrunk seed
    variance) and the law's residual RMSE, which stands in for the seed SD where none is
    measured."""
    n_obs, d_obs = observed["N"].to_numpy(float), observed["D"].to_numpy(float)
    lo_obs = _l_opt(law, n_obs, d_obs)
    if not np.all(np.isfinite(lo_obs)):
        raise ProposalError("the law gives no L_opt at some trained (N, D); refit it")
    rows_obs = linear.rows(observed["x"].to_numpy(float), observed["r"].to_numpy(float),
                           lo_obs, n_obs)
    resid = law.predict(observed["x"], observed["r"], lo_obs, n=n_obs) - observed["loss"]
    rmse = float(np.sqrt(np.mean(np.asarray(resid, float) ** 2)))
    prior = np.array([_seed_sd(seed_noise, d, rmse) for d in d_obs])
    n_seeds = observed["n_seeds"].to_numpy(float)
    own = observed["loss_sd"].to_numpy(float)
    var_obs = ((n_seeds - 1) * own ** 2 + PRIOR_DOF * prior ** 2) / (n_seeds - 1 + PRIOR_DOF)
    return _Design(rows_obs, n_seeds / var_obs, {a: linear.gradient(a) for a in axes}), rmse


def _effect(design: "_Design", rows: np.ndarray, weights: np.ndarray, axes: tuple[str, ...],
            var_ref: Mapping[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each candidate's effect given the design so far (the fraction of each axis's reference
    SD it removes, summed over the axes) and the variances it would leave."""
    before = design.variance()
    after = design.variance_after(rows, weights)
    effect = sum((np.sqrt(before[a]) - np.sqrt(np.maximum(after[a], 0))) / math.sqrt(var_ref[a])
                 for a in axes)
    return effect, after


def _candidate_pool(candidates: pd.DataFrame | None, observed: pd.DataFrame,
                    law: ConditionalLaw, settings: ProposalSettings
                    ) -> tuple[pd.DataFrame, np.ndarray]:
    """The candidate runs (generated of settings.kinds unless given) that the law can place,
    with their L_opt; raises ProposalError when none is left."""
    if candidates is None:
        parts = [_new_seeds(observed)] if "new_seed" in settings.kinds else []
        if {"new_shape", "new_size"} & set(settings.kinds):
            parts.append(_new_shapes(observed, law, settings))
        candidates = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if not candidates.empty:
            candidates = candidates[candidates["kind"].isin(settings.kinds)]
    if candidates.empty:
        raise ProposalError(f"no candidate runs of the kinds {list(settings.kinds)}")
    pool = _complete(candidates, observed)
    if settings.candidates == "verdict_points":
        pool = pool[_at_verdict_points(pool, observed, settings)].reset_index(drop=True)
        if pool.empty:
            raise ProposalError("proposals.candidates is verdict_points and no candidate lies "
                                "at one; set proposals.candidates: anywhere")
    l_opt = _l_opt(law, pool["n_params_non_embedding"].to_numpy(float),
                   pool["tokens"].to_numpy(float))
    pool = pool[np.isfinite(l_opt)].reset_index(drop=True)
    if pool.empty:
        raise ProposalError("no candidate run could be placed (every solved shape fell "
                            "outside the fit's r range or the law's L_opt)")
    return pool, l_opt[np.isfinite(l_opt)]


def verdict_points(observed: pd.DataFrame, size_tolerance: float = 0.25
                   ) -> list[tuple[float, float]]:
    """(N, D) of every (size, token budget) with MIN_MARGIN_SHAPES or more trained shapes:
    the points forms.json's margins, and so the U verdicts, are computed at; taken from the
    margins' own grouping (archscale.fit.seeds.optimum_margins), so the two cannot differ."""
    return [(entry["N"], entry["D"])
            for entry in optimum_margins(observed, None, size_tolerance)]


def _at_verdict_points(pool: pd.DataFrame, observed: pd.DataFrame,
                       settings: ProposalSettings) -> np.ndarray:
    """Which candidates lie at a verdict point: its token budget, and N within the size
    tolerance of its size. Raises ProposalError when the study has no verdict point."""
    points = verdict_points(observed, settings.size_tolerance)
    if not points:
        raise ProposalError(f"proposals.candidates is verdict_points, but no (size, token "
                            f"budget) of the study has {MIN_MARGIN_SHAPES} or more trained "
                            "shapes, so no verdict rests on any point; train a size's grid "
                            "(a base shape and its neighbours), or set proposals.candidates: "
                            "anywhere")
    n = pool["n_params_non_embedding"].to_numpy(float)
    d = pool["tokens"].to_numpy(float)
    near = math.log1p(settings.size_tolerance)
    keep = np.zeros(len(pool), bool)
    for n_point, d_point in points:
        keep |= (d == d_point) & (np.abs(np.log(n / n_point)) <= near)
    return keep


def _complete(pool: pd.DataFrame, observed: pd.DataFrame) -> pd.DataFrame:
    """Candidates given by a caller: fill accounting, targets and bookkeeping columns."""
    pool = _with_accounting(pool.reset_index(drop=True))
    defaults = {"n_params_target": pool["n_params_non_embedding"],
                "d_over_sqrt_n_target": pool["d_over_sqrt_n"],
                "r_mlp_attn_target": pool["r_mlp_attn"], "kind": "new_shape",
                "seed": 0, "n_seeds": 0, "own_sd": math.nan}
    for col, value in defaults.items():
        if col not in pool.columns:
            pool[col] = value
    if "name" not in pool.columns:
        pool["name"] = [shape_name(row) for _, row in pool.iterrows()]
    return pool


def _record(c: pd.Series, repeats: int, batch: bool, effect: float, var_after: Mapping[str, float],
            var_ref: Mapping[str, float], width_now: Mapping[str, float],
            observed: pd.DataFrame) -> dict[str, Any]:
    """One output row: the candidate, its cost, the widths before and after, and why."""
    out = {k: c[k] for k in ("kind", "name", "n_params_target", "d_over_sqrt_n_target",
                             "r_mlp_attn_target", "gqa_group", *SHAPE_FIELDS,
                             "n_params_non_embedding", "d_over_sqrt_n", "r_mlp_attn",
                             "seed_sd_assumed", "cost_device_hours")}
    if repeats:  # the candidate was picked before: this row is another seed of it
        out["kind"] = "new_seed"
    out.update(batch=batch, tokens=int(c["tokens"]), seed=int(c["seed"]) + repeats,
               effect=effect, effect_per_device_hour=effect / float(c["cost_device_hours"]))
    cuts = {}
    for a in AXES:
        out[f"{a}_interval_width_now"] = width_now[a]
        if a in var_after and var_ref[a] > 0:
            ratio = math.sqrt(max(var_after[a], 0.0) / var_ref[a])
            out[f"{a}_interval_width_after"] = width_now[a] * ratio
            cuts[a] = 1 - ratio
        else:
            out[f"{a}_interval_width_after"] = width_now[a]
    out["why"] = _why(c, repeats, cuts, observed)
    return out


def _why(c: pd.Series, repeats: int, cuts: Mapping[str, float], observed: pd.DataFrame) -> str:
    """One line: what the run is, where it sits against the trained points, what it narrows."""
    narrows = ", ".join(f"{a}* interval {-100 * v:+.1f} %" for a, v in cuts.items())
    narrows = f"{narrows} (with the batch above)" if narrows else "narrows nothing counted"
    x, r, d = float(c["d_over_sqrt_n"]), float(c["r_mlp_attn"]), float(c["tokens"])
    if c["kind"] == "new_seed" or repeats:
        seeds = int(c["n_seeds"]) + repeats
        noisy = ""
        own, sd = float(c["own_sd"]), float(c["seed_sd_assumed"])
        if seeds >= 2 and own == own and own > 1.5 * sd:
            noisy = f"; its seeds disagree (SD {own:.3g} against {sd:.3g} pooled)"
        whose = "" if c["kind"] == "new_seed" else "the shape proposed above, "
        return (f"another seed of {whose}{c['name']} at D {d:.3g} (x {x:.3g}, r {r:.3g}), "
                f"{seeds} seed(s) so far{noisy}: {narrows}")
    labels = size_groups(np.append(observed["N"].to_numpy(float),
                                   float(c["n_params_non_embedding"])), 0.25)
    same = observed[labels[:-1] == labels[-1]]
    if same.empty:
        where = f"a size above every trained one (N {float(c['n_params_non_embedding']):.3g})"
    else:
        where = ", ".join(_side(v, same[a].to_numpy(float), a) for a, v in (("x", x), ("r", r)))
        where = f"{where} at N {float(c['n_params_non_embedding']):.3g}"
    return f"new shape at x {x:.3g}, r {r:.3g}, D {d:.3g}: {where}: {narrows}"


def _side(value: float, trained: np.ndarray, axis: str) -> str:
    if value < trained.min() / 1.02:
        return f"{axis} below every trained {axis} ({trained.min():.3g})"
    if value > trained.max() * 1.02:
        return f"{axis} above every trained {axis} ({trained.max():.3g})"
    return f"{axis} between trained points"


def no_proposals(reason: str) -> pd.DataFrame:
    """The file's content when nothing can be proposed: one row of kind 'none' saying why."""
    row = {c: None for c in PROPOSAL_COLUMNS}
    row.update(kind="none", why=reason, batch=False)
    return pd.DataFrame([row], columns=PROPOSAL_COLUMNS)


def summary_lines(table: pd.DataFrame, k: int = 5) -> list[str]:
    """The top rows in words, for the rule's log."""
    if table.empty or table["kind"].iloc[0] == "none":
        return [f"no proposals: {table['why'].iloc[0] if len(table) else 'empty'}"]
    return [f"#{int(row['rank'])} {row['kind']} {row['name']} D {int(row['tokens'])} seed "
            f"{int(row['seed'])}: {row['cost_device_hours']:.3g} device-h, effect "
            f"{row['effect']:.3g}; {row['why']}" for _, row in table.head(k).iterrows()]



def write_proposals(runs_path: str | Path, conditional_path: str | Path,
                    eval_records: Iterable[Mapping[str, Any]], params: Mapping[str, Any],
                    out: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """The rule's work, file in and file out: read runs.csv and conditional.json, price runs
    with the study's cost model, rank the candidates and write the CSV; returns the table and
    lines for the log. A study that cannot be designed from writes `no_proposals`' one row
    saying why, so rule `all` still finishes and the reason is in the file."""
    from archscale.costs import CostError, duration_s
    from archscale.fit.conditional import law_from_dict
    from archscale.io import read_json, write_csv

    notes: list[str] = []
    try:
        runs = pd.read_csv(runs_path)
        doc = read_json(conditional_path)
        law = law_from_dict(doc)
        fit = params.get("fit", {})
        settings = ProposalSettings(
            seq_len=int(params["seq_len"]),
            r_range=tuple(fit.get("r_range") or (doc.get("fit") or {}).get("r_range")
                          or DEFAULT_R_RANGE),
            loss_column=fit.get("loss_column", "val_loss"),
            size_tolerance=float(fit.get("size_tolerance", 0.25)),
            ffn_multiple=int(params.get("ffn_multiple", 8)),
            first_seed=int(params.get("first_seed", 0)),
            x_span=tuple(params["x_span"]) if params.get("x_span") else None,
            r_span=tuple(params["r_span"]) if params.get("r_span") else None,
            candidates=str(params.get("candidates", "anywhere")))
        cost, notes = run_cost_model(runs, settings.seq_len,
                                     [duration_s(r) for r in eval_records],
                                     int(params.get("train_devices", 1)),
                                     int(params.get("eval_devices", 1)))
        widths = None if law.refits is not None else interval_widths(doc)
        table = propose_runs(runs, law, doc.get("seed_noise"), cost, settings,
                             interval_widths=widths)
    except (ProposalError, CostError, ValueError, KeyError) as exc:
        table = no_proposals(str(exc).strip("'\""))
    write_csv(out, table)
    return table, notes + summary_lines(table)
