"""The closed loop against a uniform extension of the starting grid, in simulation (issue 28).

The question: given a study's starting grid and some more device-hours, do the loop's
proposals (archscale.search.proposals, one round at a time through
archscale.search.design_loop) narrow the x* and r* intervals more than spending the same
hours on more of the same grid? Nothing is trained: losses are drawn from a known law with the
study's measured seed noise, and runs are priced by the study's fitted job costs.

One repeat:
1. The starting grid's seeds get losses: the known law plus Normal seed noise (and, optionally,
   a persistent per-shape deviation, the part of a real loss the law's form does not capture).
2. **loop**: fit the conditional law (the study's own method: Levenberg-Marquardt with L_opt
   held at its known value, percentile bootstrap over runs and seeds), propose, let
   `decide_round` pick what fits, draw those runs' losses, refit; until the loop stops.
3. **uniform**: from the same starting losses, add one seed each of new shapes on an evenly
   spaced grid in (ln x, ln r) over each starting size's own span, spread by a farthest-point
   order and taken round-robin over the sizes, until the loop's spent device-hours are used up.
4. Both final fits are read the same way: the x* and r* interval widths, whether each interval
   holds the true optimum, and the U-shape verdicts of the study's rule
   (archscale.fit.verdicts.u_shape on the fit's margins).

Both designs of one repeat start from the same noise draw, so their difference is the design's,
not the luck of the start. Everything is seeded by (seed, repeat): a repeat is reproducible on
its own, whichever repeats run beside it.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from archscale.architecture import (SHAPE_FIELDS, Architecture, ArchitectureError,
                                    ShapeTargets, shape_name, solve_shape)
from archscale.costs import FittedJobCosts
from archscale.fit import ChinchillaLaw
from archscale.fit.conditional import ConditionalLaw, fit_conditional
from archscale.fit.forms.base import AXES
from archscale.fit.io import read_runs, size_groups
from archscale.fit.verdicts import SUPPORTED, u_shape
from archscale.search.design_loop import LoopSettings, RoundDecision, decide_round
from archscale.search.proposals import (ProposalError, ProposalSettings, propose_runs,
                                        run_cost_model, run_hours)

DESIGNS = ("loop", "uniform")
#: The runs table columns a simulated run carries (what propose_runs and read_runs read).
RUN_COLUMNS = ["name", *SHAPE_FIELDS, "vocab_size", "n_params_non_embedding", "d_over_sqrt_n",
               "r_mlp_attn", "tokens", "seed", "val_loss", "cost_device_hours", "design",
               "round"]


@dataclass(frozen=True)
class SimulationSetup:
    """What a repeat needs: the known law, the starting grid (one row per seed, without
    losses), the noise, the costs and the settings of the loop, the proposals and the fit."""

    truth: ConditionalLaw
    start: pd.DataFrame
    seed_sd: float
    cost: FittedJobCosts
    loop: LoopSettings
    proposals: ProposalSettings
    bootstrap: int = 200
    shape_sd: float = 0.0                  # persistent per-shape deviation from the law
    uniform_levels: int = 5                # grid values per axis of the uniform extension
    r_range: tuple[float, float] = (0.1, 30.0)
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------
# The known law and the starting grid, from a committed study
# ---------------------------------------------------------------------------------------------

def reference_chinchilla(points: Sequence[Sequence[float]]) -> ChinchillaLaw:
    """L_opt(N, D) = A / N^alpha + B / D^beta, least squares on a study's empirical L_opt
    points ([N, D, loss] rows). E is held at 0: on such a narrow range the fit drives it there
    anyway (conditional.json's own Chinchilla is degenerate), and a smooth L_opt is all the
    known law needs, including one size above the grid."""
    n, d, loss = np.asarray(points, float).T

    def residual(p: np.ndarray) -> np.ndarray:
        return np.exp(p[0]) * n ** -p[1] + np.exp(p[2]) * d ** -p[3] - loss

    res = least_squares(residual, [1.6, 0.06, 6.0, 0.45], bounds=([-20, 0, -20, 0],
                                                                   [40, 2, 40, 2]))
    return ChinchillaLaw(E=0.0, A=float(np.exp(res.x[0])), alpha=float(res.x[1]),
                         B=float(np.exp(res.x[2])), beta=float(res.x[3]))


def known_law(conditional: Mapping[str, Any]) -> ConditionalLaw:
    """The study's fitted conditional law (its form and coefficients) on the smooth L_opt of
    `reference_chinchilla`: the truth every simulated loss is drawn from."""
    chin = reference_chinchilla(conditional["l_opt"]["empirical"]["points"])
    return ConditionalLaw(conditional["form"], dict(conditional["coefficients"]),
                          chinchilla=chin)


def misfit_sd(conditional: Mapping[str, Any], seeds_per_point: int = 2) -> float:
    """The part of the study's residual scatter its seed noise does not explain: the law's
    residual RMSE (over means of about `seeds_per_point` seeds) less the seed variance of such
    a mean. A real loss misses the fitted form by this much whatever its seeds; drawn once per
    shape it tests whether the loop, which assumes the form is right, mistakes it for noise
    that more seeds would average away."""
    rmse = float(conditional["fit"]["rmse"])
    sd = float(conditional["seed_noise"]["pooled_sd"])
    return math.sqrt(max(rmse ** 2 - sd ** 2 / seeds_per_point, 0.0))


def starting_grid(runs: pd.DataFrame, sizes: Iterable[float], tokens: float,
                  size_tolerance: float = 0.25) -> pd.DataFrame:
    """The study's runs at `tokens` whose N lies within the tolerance of one of `sizes`, one
    row per seed, losses dropped: the shapes and seeds both designs start from."""
    n = runs["n_params_non_embedding"].to_numpy(float)
    near = np.zeros(len(runs), bool)
    for size in sizes:
        near |= np.abs(np.log(n / float(size))) <= math.log(1 + size_tolerance)
    picked = runs[near & np.isclose(runs["tokens"].to_numpy(float), tokens)]
    if picked.empty:
        raise ValueError(f"no run at {tokens:g} tokens near the sizes {list(sizes)}")
    cols = [c for c in RUN_COLUMNS if c in picked.columns and c != "val_loss"]
    return picked[cols].reset_index(drop=True).assign(design="start", round=0)


def laptop_setup(conditional: Mapping[str, Any], runs: pd.DataFrame, loop: LoopSettings,
                 seq_len: int, eval_seconds: float, sizes: Iterable[float], tokens: float,
                 train_devices: int = 1, eval_devices: int = 1, bootstrap: int = 200,
                 shape_sd: float = 0.0) -> SimulationSetup:
    """The setup from a committed study: its law as the truth, its pooled seed SD at `tokens`,
    its cost model (runs.csv's wall_s; evaluation at `eval_seconds` a job) and its runs at
    `sizes` and `tokens` as the starting grid."""
    from archscale.fit.seeds import seed_sd_at

    sd = seed_sd_at(dict(conditional["seed_noise"]), float(tokens))
    if not sd:
        raise ValueError(f"the study measured no seed SD at {tokens:g} tokens")
    cost, notes = run_cost_model(runs, seq_len, [eval_seconds], train_devices, eval_devices)
    r_range = tuple(float(v) for v in conditional["fit"]["r_range"])
    proposals = ProposalSettings(seq_len=seq_len, r_range=r_range)
    start = starting_grid(runs, sizes, tokens)
    vocab = int(start["vocab_size"].iloc[0])
    start["cost_device_hours"] = run_hours(cost, start, vocab, seq_len)
    return SimulationSetup(truth=known_law(conditional), start=start, seed_sd=float(sd),
                           cost=cost, loop=loop, proposals=proposals, bootstrap=bootstrap,
                           shape_sd=shape_sd, r_range=r_range, notes=tuple(notes))


# ---------------------------------------------------------------------------------------------
# Drawing losses
# ---------------------------------------------------------------------------------------------

def _shape_offset(setup: SimulationSetup, name: str, seed: int, repeat: int) -> float:
    """A shape's persistent deviation from the law: the same for every seed of it and for
    both designs of a repeat (seeded by the shape's name), 0 without `shape_sd`."""
    if setup.shape_sd <= 0:
        return 0.0
    rng = np.random.default_rng([seed, repeat, zlib.crc32(name.encode())])
    return float(rng.normal(0.0, setup.shape_sd))


def observe(rows: pd.DataFrame, setup: SimulationSetup, rng: np.random.Generator,
            seed: int, repeat: int) -> pd.DataFrame:
    """The rows with a drawn val_loss: the known law at each row's own accounting, plus
    Normal seed noise, plus the shape's persistent offset."""
    mean = setup.truth.predict_at(rows["d_over_sqrt_n"].to_numpy(float),
                                  rows["r_mlp_attn"].to_numpy(float),
                                  rows["n_params_non_embedding"].to_numpy(float),
                                  rows["tokens"].to_numpy(float))
    offsets = np.array([_shape_offset(setup, str(name), seed, repeat) for name in rows["name"]])
    noise = rng.normal(0.0, setup.seed_sd, len(rows))
    return rows.assign(val_loss=np.asarray(mean, float) + offsets + noise)


# ---------------------------------------------------------------------------------------------
# Fitting a design and reading it
# ---------------------------------------------------------------------------------------------

def refit(runs: pd.DataFrame, setup: SimulationSetup, seed: int
          ) -> tuple[ConditionalLaw, dict[str, Any]]:
    """The study's fit of the runs (L_opt held at its known value, `setup.bootstrap` draws)
    and what a design is judged by: interval widths, whether they hold the truth, verdicts."""
    fit = fit_conditional(read_runs(runs, require=("N", "D", "loss", "x", "r")),
                          form=setup.truth.form, l_opt="chinchilla",
                          chinchilla=setup.truth.chinchilla, r_range=setup.r_range,
                          bootstrap=setup.bootstrap, seed=seed)
    law = fit.law
    law.refits = fit.samples.coefficients if fit.samples is not None else None
    truth = setup.truth.optimum()
    out: dict[str, Any] = {"n_runs": len(runs), "seed_noise": fit.seed_noise}
    for a in AXES:
        ci = fit.intervals["optimum"][f"{a}_star"]
        low, high = float(ci["low"]), float(ci["high"])
        out[f"{a}_star"] = float(law.optimum()[a].star)
        out[f"{a}_low"], out[f"{a}_high"] = low, high
        out[f"{a}_width"] = high - low if math.isfinite(high - low) else math.inf
        out[f"{a}_contains_truth"] = bool(low <= truth[a].star <= high)
        margins = {"optimum_margins": fit.margins, "margin_threshold": fit.margin_threshold}
        out[f"u_{a}"] = u_shape(margins, a)["verdict"]
    return law, out


def widths_of(outcome: Mapping[str, Any]) -> dict[str, float]:
    return {a: float(outcome[f"{a}_width"]) for a in AXES}


def verdicts_of(outcome: Mapping[str, Any]) -> dict[str, str]:
    return {f"u_{a}": str(outcome[f"u_{a}"]) for a in AXES}


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def _as_runs(picked: pd.DataFrame, vocab: int, design: str, round_number: int) -> pd.DataFrame:
    """Proposals rows as runs-table rows (shape columns, accounting, tokens, seed)."""
    rows = picked[["name", *SHAPE_FIELDS, "n_params_non_embedding",
                                      "d_over_sqrt_n", "r_mlp_attn", "tokens", "seed",
                                      "cost_device_hours"]]
    return rows.assign(vocab_size=vocab, design=design, round=round_number).reset_index(
        drop=True)


_NO_PROPOSALS = pd.DataFrame(columns=["rank", "kind", "name", "cost_device_hours"])


def _propose(runs: pd.DataFrame, law: ConditionalLaw, outcome: Mapping[str, Any],
             setup: SimulationSetup) -> pd.DataFrame:
    """The proposals after a fit; an empty table when the study cannot be designed from."""
    try:
        return propose_runs(runs, law, outcome["seed_noise"], setup.cost, setup.proposals)
    except ProposalError:
        return _NO_PROPOSALS


def run_loop(start: pd.DataFrame, setup: SimulationSetup, seed: int, repeat: int
             ) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, Any]]:
    """The closed loop from the starting runs: the runs it ends with, one record per round
    (its decision and the fit after it), and the final fit's outcome."""
    rng = np.random.default_rng([seed, repeat, 1])
    runs, spent, history = start, 0.0, []
    vocab = int(start["vocab_size"].iloc[0])
    law, outcome = refit(runs, setup, seed=repeat)
    for round_number in range(1, setup.loop.rounds + 2):
        more = round_number <= setup.loop.rounds and spent < setup.loop.budget_hours
        proposals = _propose(runs, law, outcome, setup) if more else _NO_PROPOSALS
        decision = decide_round(proposals, spent, setup.loop, widths_of(outcome), round_number,
                                verdicts_of(outcome))
        history.append(_round_record(decision, outcome))
        if decision.stop:
            break
        new = observe(_as_runs(decision.picked, vocab, "loop", round_number), setup, rng,
                      seed, repeat)
        runs = pd.concat([runs, new], ignore_index=True)
        spent = decision.spent_after_hours
        law, outcome = refit(runs, setup, seed=repeat)
    return runs, history, {**outcome, "hours": spent}


def _round_record(decision: RoundDecision, outcome: Mapping[str, Any]) -> dict[str, Any]:
    """One round's row: the decision and the widths of the fit it was made on."""
    kinds = decision.picked["kind"].value_counts().to_dict() if len(decision.picked) else {}
    before = {f"{k}_before": outcome[k] for a in AXES
              for k in (f"{a}_width", f"{a}_contains_truth", f"u_{a}")}
    return {"round": decision.round_number, "stop": decision.stop, "reason": decision.reason,
            "n_runs_before": outcome["n_runs"], **before, "n_picked": len(decision.picked),
            "picked_hours": decision.picked_hours,
            "spent_after_hours": decision.spent_after_hours,
            "picked_kinds": ";".join(f"{k}:{v}" for k, v in sorted(kinds.items()))}


# ---------------------------------------------------------------------------------------------
# The uniform extension
# ---------------------------------------------------------------------------------------------

def _solve(n: float, x: float, r: float, n_layers: int) -> dict[str, int] | None:
    """The integer shape nearest (x, r) at N with head_dim 16 or 8 (8 reaches the wide and
    MLP-heavy corners, as the study's own far neighbours did); None when neither solves."""
    best, miss = None, math.inf
    for head_dim in (16, 8):
        try:
            shape = solve_shape(ShapeTargets(n_params=n, d_over_sqrt_n=x, r_mlp_attn=r,
                                             gqa_group=1, n_layers=n_layers, head_dim=head_dim,
                                             ffn_multiple=8, tolerance=0.08))
        except ArchitectureError:
            continue
        acc = Architecture(name="c", **shape, vocab_size=512).accounting()
        off = abs(math.log(acc["d_over_sqrt_n"] / x)) + abs(math.log(acc["r_mlp_attn"] / r))
        if off < miss:
            best, miss = shape, off
    return best


def uniform_candidates(start: pd.DataFrame, setup: SimulationSetup) -> pd.DataFrame:
    """New shapes on a `uniform_levels` x `uniform_levels` grid in (ln x, ln r) over each
    starting size's trained span, in the order the extension takes them: round-robin over
    the sizes, each size's next shape the one farthest from every shape it already has."""
    vocab = int(start["vocab_size"].iloc[0])
    labels = size_groups(start["n_params_non_embedding"].to_numpy(float), 0.25)
    per_size = []
    for label in sorted(set(labels)):
        group = start[labels == label]
        per_size.append(_farthest_first(_size_grid(group, setup.uniform_levels, vocab), group))
    order = [c for rank in range(max(map(len, per_size))) for c in
             (frame.iloc[rank:rank + 1] for frame in per_size) if len(c)]
    out = pd.concat(order, ignore_index=True)
    out["cost_device_hours"] = run_hours(setup.cost, out, vocab, setup.proposals.seq_len)
    return out


def _size_grid(group: pd.DataFrame, levels: int, vocab: int) -> pd.DataFrame:
    """One size's grid shapes, solved, the trained ones and repeats left out."""
    n = float(np.exp(np.log(group["n_params_non_embedding"]).mean()))
    layers = int(group["n_layers"].mode().iloc[0])
    trained = {tuple(int(v) for v in row) for row in group[list(SHAPE_FIELDS)].to_numpy()}
    xs = np.geomspace(group["d_over_sqrt_n"].min(), group["d_over_sqrt_n"].max(), levels)
    rs = np.geomspace(group["r_mlp_attn"].min(), group["r_mlp_attn"].max(), levels)
    rows = []
    for x in xs:
        for r in rs:
            shape = _solve(n, float(x), float(r), layers)
            if shape is None or tuple(shape[f] for f in SHAPE_FIELDS) in trained:
                continue
            trained.add(tuple(shape[f] for f in SHAPE_FIELDS))
            acc = Architecture(name="c", **shape, vocab_size=vocab).accounting()
            rows.append({"name": shape_name(shape), **shape, "vocab_size": vocab,
                         **{k: acc[k] for k in ("n_params_non_embedding", "d_over_sqrt_n",
                                                "r_mlp_attn")},
                         "tokens": float(group["tokens"].iloc[0]), "seed": 0})
    return pd.DataFrame(rows)


def _farthest_first(grid: pd.DataFrame, trained: pd.DataFrame) -> pd.DataFrame:
    """The grid in farthest-point order in (ln x, ln r) scaled to the size's span: each
    next shape is the one farthest from the trained shapes and those taken before it."""
    if grid.empty:
        return grid

    def coords(frame: pd.DataFrame) -> np.ndarray:
        return np.log(frame[["d_over_sqrt_n", "r_mlp_attn"]].to_numpy(float))

    span = np.ptp(coords(trained), axis=0)
    span[span <= 0] = 1.0
    have, todo, order = coords(trained) / span, coords(grid) / span, []
    left = list(range(len(grid)))
    while left:
        dist = np.min(np.linalg.norm(todo[left][:, None, :] - have[None], axis=2), axis=1)
        pick = left.pop(int(np.argmax(dist)))
        order.append(pick)
        have = np.vstack([have, todo[pick]])
    return grid.iloc[order].reset_index(drop=True)


def uniform_extension(candidates: pd.DataFrame, hours: float) -> pd.DataFrame:
    """The candidates in order, each taken when it fits in what is left of `hours`: the same
    device-hours as the loop spent, to within the cheapest run."""
    taken, left = [], float(hours)
    for index, cost in candidates["cost_device_hours"].items():
        if cost <= left * (1 + 1e-9):
            taken.append(index)
            left -= float(cost)
    return candidates.loc[taken].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Repeats
# ---------------------------------------------------------------------------------------------

def run_repeat(setup: SimulationSetup, seed: int, repeat: int,
               candidates: pd.DataFrame | None = None
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One repeat: both designs from one starting draw; a row per design, a row per round."""
    start = observe(setup.start, setup, np.random.default_rng([seed, repeat, 0]), seed, repeat)
    loop_runs, history, loop = run_loop(start, setup, seed, repeat)
    if candidates is None:
        candidates = uniform_candidates(setup.start, setup)
    extra = uniform_extension(candidates, loop["hours"]).assign(design="uniform", round=1)
    extra = observe(extra, setup, np.random.default_rng([seed, repeat, 2]), seed, repeat)
    _, uniform = refit(pd.concat([start, extra], ignore_index=True), setup, seed=repeat)
    uniform["hours"] = float(extra["cost_device_hours"].sum())
    rows = []
    for design, outcome, runs in (("loop", loop, loop_runs), ("uniform", uniform, extra)):
        added = runs[runs["design"] == design]
        rows.append(_repeat_row(repeat, design, outcome, added, setup, history))
    rounds = [{"repeat": repeat, **rec} for rec in history]
    return rows, rounds


def _repeat_row(repeat: int, design: str, outcome: Mapping[str, Any], added: pd.DataFrame,
                setup: SimulationSetup, history: list[dict[str, Any]]) -> dict[str, Any]:
    """One design's result in one repeat."""
    truth = setup.truth.optimum()
    new_seeds = added.duplicated("name") | added["name"].isin(setup.start["name"])
    row = {"repeat": repeat, "design": design, "runs_added": len(added),
           "new_seed_runs": int(new_seeds.sum()), "hours_added": float(outcome["hours"]),
           "rounds": (sum(1 for h in history if not h["stop"]) if design == "loop" else 1),
           "stop_reason": history[-1]["reason"] if design == "loop" else "",
           "n_runs": outcome["n_runs"]}
    for a in AXES:
        row.update({f"{a}_true": truth[a].star, f"{a}_star": outcome[f"{a}_star"],
                    f"{a}_low": outcome[f"{a}_low"], f"{a}_high": outcome[f"{a}_high"],
                    f"{a}_width": outcome[f"{a}_width"],
                    f"{a}_contains_truth": outcome[f"{a}_contains_truth"],
                    f"u_{a}": outcome[f"u_{a}"]})
    return row


def simulate(setup: SimulationSetup, repeats: int, seed: int = 0,
             progress: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`repeats` repeats: a row per (repeat, design), a row per (repeat, loop round)."""
    candidates = uniform_candidates(setup.start, setup)
    rows, rounds = [], []
    for repeat in range(repeats):
        r_rows, r_rounds = run_repeat(setup, seed, repeat, candidates)
        rows += r_rows
        rounds += r_rounds
        if progress is not None:
            progress(repeat, r_rows)
    return pd.DataFrame(rows), pd.DataFrame(rounds)


def _judged(group: pd.DataFrame, suffix: str = "") -> dict[str, Any]:
    """The median and quartiles of each interval width, how often the interval holds the true
    optimum, how often each U verdict is the right one ('supported': the known law has a
    minimum inside the grid on both axes)."""
    entry: dict[str, Any] = {}
    for a in AXES:
        w = group[f"{a}_width{suffix}"].to_numpy(float)
        entry[f"{a}_width"] = {q: _finite(np.quantile(w, p)) for q, p in
                               (("q25", 0.25), ("median", 0.5), ("q75", 0.75))}
        entry[f"{a}_width"]["n_infinite"] = int(np.sum(~np.isfinite(w)))
        entry[f"{a}_contains_truth"] = float(group[f"{a}_contains_truth{suffix}"].mean())
        entry[f"u_{a}_supported"] = float((group[f"u_{a}{suffix}"] == SUPPORTED).mean())
    return entry


def summarise(table: pd.DataFrame, rounds: pd.DataFrame | None = None) -> dict[str, Any]:
    """Per design (`_judged`), with the runs and hours added; per repeat, how often the loop's
    interval is the narrower; given the loop's `rounds`, the starting grid judged the same way
    (`start`) and the loop's median widths round by round."""
    out: dict[str, Any] = {"repeats": int(table["repeat"].nunique()), "designs": {}}
    if rounds is not None and len(rounds):
        first = rounds[rounds["round"] == 1]
        out["designs"]["start"] = {"runs_added_median": 0.0, "hours_added_median": 0.0,
                                   "new_seed_share": 0.0, **_judged(first, "_before")}
        out["loop_rounds"] = [
            {"round": int(k), "repeats": int(len(g)),
             **{f"{a}_width_median": _finite(float(np.median(g[f"{a}_width_before"])))
                for a in AXES}}
            for k, g in rounds.groupby("round")]
    for design, group in table.groupby("design", sort=False):
        added = max(group["runs_added"].sum(), 1)
        out["designs"][design] = {"runs_added_median": float(group["runs_added"].median()),
                                  "hours_added_median": float(group["hours_added"].median()),
                                  "new_seed_share": float(group["new_seed_runs"].sum() / added),
                                  **_judged(group)}
    paired = table.pivot(index="repeat", columns="design")
    out["loop_narrower_share"] = {
        a: float((paired[(f"{a}_width", "loop")] < paired[(f"{a}_width", "uniform")]).mean())
        for a in AXES}
    return out


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
