"""Frontier search: the paper's Eq. 4 over a space of integer LLaMA shapes.

    maximise  I_N(P)                      predicted inference throughput of shape P
    s.t.      L(P | N, D) <= L_t          predicted loss from the conditional law
              N(P) within the budget      non-embedding parameters
              KV cache of the workload fits the device memory

1. `candidate_grid` enumerates every integer shape near a parameter budget (d_model on a grid,
   n_layers and head_dim fixed per size as in the paper, n_heads = GQA group x n_kv_heads,
   ffn_dim a multiple of 64 chosen to fill the budget), vectorised with numpy.
2. `score_candidates` adds the accounting columns, predicted loss and predicted throughput.
3. `solve_eq4` is Eq. 4 at one threshold. With one binary per candidate and exactly one chosen,
   the paper's binary program is an argmax over the candidates that meet L_t, so it is computed
   as one (milliseconds for 10^5 candidates); `solve_eq4_program` states the same program for
   pulp/CBC, the cross-check in the tests. `trace_frontier` gives what sweeping L_t downward
   (the epsilon-constraint method) would visit: the non-dominated set of `pareto_mask`, each
   point with the L_t that selects it.
4. Eq. 4 for the recommendation runs at the baseline's GQA group only: the law has no GQA
   term, so over all groups it would always take the largest allowed. Candidates of other
   groups carry `gqa_status` "untested" (predicted as if GQA did not change the loss).
5. `gqa_local_search` is the paper's Algorithm 1 step by prediction: around the chosen shape it
   tries the other key/value head counts and keeps the fastest that still meets L_t. Its pick
   is flagged untested whenever its group differs from the baseline's; the GQA step by
   measurement (rules/gqa.smk) trains the variants instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import pandas as pd

from archscale.architecture import (SHAPE_FIELDS, attention_params_per_layer, kv_bytes_per_token,
                                    mlp_params_per_layer, shape_name)
from archscale.architecture import _SHAPE_NAME_PREFIXES


class SearchError(ValueError):
    """The search cannot run as configured; the message says what to change."""


class LossPredictor(Protocol):
    def __call__(self, n_params: np.ndarray, tokens: float, x: np.ndarray, r: np.ndarray
                 ) -> np.ndarray: ...


class ThroughputPredictor(Protocol):
    def __call__(self, shapes: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class SizeSpec:
    """One parameter budget of the search, with the depth and head size fixed for it."""

    budget: float
    n_layers: int
    head_dim: int


# ---------------------------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------------------------

#: The most (d_model, n_kv_heads, GQA group) combinations one size's grid may enumerate (about
#: 60 bytes each while it is built, then a scored row per shape kept): the paper's 973M budget
#: enumerates about a million (d_model step 8, groups 1, 2, 4, 8, 16 layers), a 10B budget at
#: 16 layers 11 million (0.8 GB, 40 s). 1e12 at 16 layers would enumerate 1.1 billion (it was
#: killed at 24 GB) and a mistyped 1e30 10^27, so those are refused with the reason instead.
MAX_GRID_POINTS = 20_000_000


def candidate_grid(size: SizeSpec, vocab_size: int, x_range: tuple[float, float],
                   d_step: int, gqa_groups: list[int], ffn_multiple: int, tolerance: float,
                   r_range: tuple[float, float] | None = None,
                   max_kv_heads: int | None = None) -> pd.DataFrame:
    """Every integer shape within `tolerance` of the budget; vectorised.

    For each (d_model, n_kv_heads, group) the attention size is fixed, and ffn_dim is the
    multiple of `ffn_multiple` that brings N closest to the budget.
    """
    budget, L, dh = size.budget, size.n_layers, size.head_dim
    lo = max(d_step, int(math.ceil(x_range[0] * math.sqrt(budget) / d_step)) * d_step)
    hi = int(x_range[1] * math.sqrt(budget))
    n_d = max(0, (hi - lo) // d_step + 1)
    if n_d == 0:
        raise SearchError(f"search.d_model_range {list(x_range)} gives no d_model for budget "
                          f"{budget:,.0f}; widen it or lower search.d_model_step")
    per_layer = budget / L
    # the most key/value heads that still leave room for an MLP at the smallest d
    kv_cap = max_kv_heads or max(1, int(per_layer / (2 * lo * dh * 2)))
    groups = sorted(set(gqa_groups))
    points = n_d * kv_cap * len(groups)  # Python ints: counted before anything is allocated
    if points > MAX_GRID_POINTS:
        raise SearchError(
            f"budget {budget:,.3g} (n_layers {L}, head_dim {dh}) gives a grid of {n_d:,} "
            f"d_model values x {kv_cap:,} key/value head counts x {len(groups)} GQA group(s) = "
            f"{points:,} shapes, more than the {MAX_GRID_POINTS:,} one search holds in memory; "
            "check the budget (a non-embedding parameter count), or coarsen the grid: raise "
            "search.d_model_step (--d-model-step), narrow search.d_model_range, list fewer "
            "search.gqa_groups, or give a size more layers or a larger head_dim")
    d = np.arange(lo, hi + 1, d_step, dtype=np.int64)
    kv = np.arange(1, kv_cap + 1, dtype=np.int64)
    g = np.asarray(groups, dtype=np.int64)
    D, KV, G = (a.ravel() for a in np.meshgrid(d, kv, g, indexing="ij"))
    H = KV * G
    attn = L * attention_params_per_layer(D, H, KV, dh)
    mlp_target = budget - attn
    ok = mlp_target > 0
    D, KV, H, attn, mlp_target = D[ok], KV[ok], H[ok], attn[ok], mlp_target[ok]
    F = np.maximum(1, np.rint(mlp_target / (3 * D * L) / ffn_multiple)).astype(np.int64)
    F *= ffn_multiple
    mlp = L * mlp_params_per_layer(D, F)
    n = attn + mlp
    keep = np.abs(n / budget - 1) <= tolerance
    r = mlp / attn
    if r_range is not None:
        keep &= (r >= r_range[0]) & (r <= r_range[1])
    frame = pd.DataFrame({
        "budget": budget, "d_model": D[keep], "n_layers": L, "n_heads": H[keep],
        "n_kv_heads": KV[keep], "head_dim": dh, "ffn_dim": F[keep], "vocab_size": vocab_size,
    })
    return frame.reset_index(drop=True)


def shape_names(table: pd.DataFrame) -> list[str]:
    """`architecture.shape_name` of every row of a table, built column by column: the search
    names 10^5 candidates, where a row-wise apply takes seconds."""
    columns = [[f"{prefix}{int(v)}" for v in table[field].to_numpy()]
               for prefix, field in zip(_SHAPE_NAME_PREFIXES, SHAPE_FIELDS)]
    return ["-".join(parts) for parts in zip(*columns)]


def add_accounting(frame: pd.DataFrame, dtype_bytes: int = 2) -> pd.DataFrame:
    """The accounting columns of architectures.csv, computed on whole columns."""
    out = frame.copy()
    attn = out.n_layers * attention_params_per_layer(out.d_model, out.n_heads, out.n_kv_heads,
                                                     out.head_dim)
    mlp = out.n_layers * mlp_params_per_layer(out.d_model, out.ffn_dim)
    out["n_params_attention"] = attn
    out["n_params_mlp"] = mlp
    out["n_params_non_embedding"] = attn + mlp
    out["r_mlp_attn"] = mlp / attn
    out["d_over_sqrt_n"] = out.d_model / np.sqrt(attn + mlp)
    out["gqa_group"] = out.n_heads // out.n_kv_heads
    out["kv_bytes_per_token"] = kv_bytes_per_token(out.n_layers, out.n_kv_heads, out.head_dim,
                                                   dtype_bytes)
    return out


def score_candidates(frame: pd.DataFrame, loss: LossPredictor, tokens: float,
                     throughput: ThroughputPredictor, memory_bytes: float | None,
                     workload_tokens_per_seq: int, batch: int, tied: bool,
                     dtype_bytes: int = 2) -> pd.DataFrame:
    """Accounting, predicted loss at `tokens`, predicted throughput, and the memory check."""
    out = add_accounting(frame, dtype_bytes)
    out["predicted_loss"] = loss(out.n_params_non_embedding.to_numpy(float), tokens,
                                 out.d_over_sqrt_n.to_numpy(float), out.r_mlp_attn.to_numpy(float))
    shapes = {c: out[c].to_numpy() for c in list(SHAPE_FIELDS) + ["vocab_size"]}
    out["predicted_tokens_per_s"] = throughput(shapes)
    embed = (1 if tied else 2) * out.vocab_size * out.d_model
    weight_bytes = (out.n_params_non_embedding + embed) * dtype_bytes
    kv_bytes = out.kv_bytes_per_token * workload_tokens_per_seq * batch
    out["memory_bytes_needed"] = weight_bytes + kv_bytes
    out["fits_memory"] = True if memory_bytes is None else out.memory_bytes_needed <= memory_bytes
    return out


# ---------------------------------------------------------------------------------------------
# Eq. 4 and the frontier
# ---------------------------------------------------------------------------------------------

def pareto_mask(loss: np.ndarray, speed: np.ndarray) -> np.ndarray:
    """Non-dominated points: no other point has loss <= and speed >= with one strict.

    Sorted by loss (ascending) then speed (descending), a point is on the frontier exactly when
    it is faster than every point before it. Among exact ties (same loss and speed) the one with
    the lowest index is kept.
    """
    loss, speed = np.asarray(loss, float), np.asarray(speed, float)
    order = np.lexsort((-speed, loss))  # stable: exact ties stay in index order
    fastest_before = np.maximum.accumulate(np.concatenate([[-np.inf], speed[order][:-1]]))
    mask = np.zeros(loss.size, dtype=bool)
    mask[order] = speed[order] > fastest_before
    return mask


def solve_eq4(loss: np.ndarray, speed: np.ndarray, loss_threshold: float,
              feasible: np.ndarray | None = None) -> int | None:
    """Eq. 4 at one threshold: the index of the fastest candidate whose loss is at most L_t,
    or None if there is none.

    Ties in throughput go to the lower loss, then to the lower index. With one binary per
    candidate and a single knapsack-free constraint the binary program is an argmax over the
    filtered set; `solve_eq4_program` states it for CBC, and the tests check the two agree.
    """
    loss, speed = np.asarray(loss, float), np.asarray(speed, float)
    ok = loss <= loss_threshold
    if feasible is not None:
        ok &= np.asarray(feasible, bool)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None
    return int(idx[np.lexsort((loss[idx], -speed[idx]))[0]])


def solve_eq4_program(loss: np.ndarray, speed: np.ndarray, loss_threshold: float,
                      feasible: np.ndarray | None = None) -> int | None:
    """Eq. 4 as the paper writes it, a binary program solved by pulp/CBC: the reference the
    vectorised `solve_eq4` is tested against, and the starting point for a search with coupled
    constraints (several shapes sharing one budget) that no argmax can solve.

    Lexicographic, in two solves: the highest throughput, then the lowest loss among the
    candidates that reach it. (A single solve with a tiny loss term in the objective does not
    break ties: the term falls inside CBC's optimality tolerance.) One CBC solve over 10^5
    candidates takes about 20 s; `solve_eq4` takes milliseconds.
    """
    import warnings

    import pulp

    idx = np.flatnonzero((loss <= loss_threshold) & (True if feasible is None else feasible))
    if idx.size == 0:
        return None
    scale = float(np.max(np.abs(speed[idx]))) or 1.0
    prob = pulp.LpProblem("eq4", pulp.LpMaximize)
    pick = [prob.add_variable(f"p{i}", cat="Binary") for i in range(idx.size)]
    throughput = pulp.lpSum(float(speed[j] / scale) * v for j, v in zip(idx, pick))
    prob += throughput
    prob += pulp.lpSum(pick) == 1, "exactly_one_architecture"
    prob += pulp.lpSum(float(loss[j]) * v for j, v in zip(idx, pick)) <= float(loss_threshold), \
        "loss_at_most_threshold"
    with warnings.catch_warnings():
        # pulp 3.x ships CBC as PULP_CBC_CMD and warns that 4.0 will not; we pin pulp < 4
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(msg=False)
    if pulp.LpStatus[prob.solve(solver)] != "Optimal":
        return None
    best = float(pulp.value(throughput))
    # second solve: the lowest loss among the candidates as fast as the first solve's pick
    prob += throughput >= best - 1e-9, "throughput_at_its_maximum"
    prob.sense = pulp.LpMinimize
    prob.setObjective(pulp.lpSum(float(loss[j]) * v for j, v in zip(idx, pick)))
    if pulp.LpStatus[prob.solve(solver)] != "Optimal":
        return None
    chosen = [j for j, v in zip(idx, pick) if v.value() is not None and v.value() > 0.5]
    return int(chosen[0]) if chosen else None


def trace_frontier(loss: np.ndarray, speed: np.ndarray, feasible: np.ndarray | None = None
                   ) -> list[tuple[int, float]]:
    """The (index, L_t) pairs that sweeping L_t downward through Eq. 4 visits.

    This is the epsilon-constraint method, computed in one pass: the first L_t is the largest
    feasible loss (Eq. 4 then picks the fastest shape), and each next L_t is the largest feasible
    loss strictly below the previous pick's. The picks are exactly the non-dominated set
    (`pareto_mask`) of the feasible candidates, so each is paired with the L_t that selects it.
    Ordered as the sweep visits them: fastest (highest loss) first.
    """
    loss, speed = np.asarray(loss, float), np.asarray(speed, float)
    feasible = np.ones(loss.size, bool) if feasible is None else np.asarray(feasible, bool)
    idx = np.flatnonzero(feasible)
    if idx.size == 0:
        return []
    on_frontier = idx[pareto_mask(loss[idx], speed[idx])]
    picks = on_frontier[np.argsort(-loss[on_frontier], kind="stable")]  # the sweep's order
    distinct = np.unique(loss[idx])
    # each pick's L_t: the largest feasible loss below the previous (slower-loss) pick's loss
    below_previous = np.searchsorted(distinct, loss[picks[:-1]], side="left") - 1
    thresholds = np.concatenate([[distinct[-1]], distinct[below_previous]])
    return [(int(i), float(t)) for i, t in zip(picks, thresholds)]


def gqa_local_search(row: pd.Series, loss: LossPredictor, tokens: float,
                     throughput: ThroughputPredictor, loss_threshold: float,
                     ffn_multiple: int, tolerance: float, memory_bytes: float | None,
                     workload_tokens_per_seq: int, batch: int, tied: bool,
                     dtype_bytes: int = 2, groups: list[int] | None = None) -> pd.Series:
    """Try every n_kv_heads dividing n_heads (ffn_dim refilled to the budget) whose GQA group
    is allowed (`groups`; None: any); keep the fastest variant whose predicted loss still meets
    L_t (the paper's Algorithm 1, GQA step)."""
    h = int(row.n_heads)
    variants = []
    for kv in (k for k in range(1, h + 1)
               if h % k == 0 and (groups is None or h // k in groups or k == row.n_kv_heads)):
        attn = row.n_layers * attention_params_per_layer(row.d_model, h, kv, row.head_dim)
        f = max(1, round((row.budget - attn) / (3 * row.d_model * row.n_layers) / ffn_multiple))
        variants.append({"budget": row.budget, "d_model": row.d_model, "n_layers": row.n_layers,
                         "n_heads": h, "n_kv_heads": kv, "head_dim": row.head_dim,
                         "ffn_dim": f * ffn_multiple, "vocab_size": row.vocab_size})
    scored = score_candidates(pd.DataFrame(variants), loss, tokens, throughput, memory_bytes,
                              workload_tokens_per_seq, batch, tied, dtype_bytes)
    ok = ((scored.predicted_loss <= loss_threshold + 1e-12) & scored.fits_memory
          & (scored.predicted_tokens_per_s > 0)
          & ((scored.n_params_non_embedding / row.budget - 1).abs() <= tolerance))
    if not ok.any():
        return row
    return scored[ok].sort_values("predicted_tokens_per_s", ascending=False).iloc[0]


def nearest_architecture(row: pd.Series, known: pd.DataFrame) -> tuple[str, float]:
    """The configured architecture closest in (log N, log d/sqrt(N), log r, log GQA)."""
    if known.empty:
        return "", float("nan")
    cols = ["n_params_non_embedding", "d_over_sqrt_n", "r_mlp_attn", "gqa_group"]
    a = np.log(known[cols].to_numpy(float))
    b = np.log(np.array([float(row[c]) for c in cols]))
    dist = np.sqrt(((a - b) ** 2).sum(axis=1))
    i = int(np.argmin(dist))
    return str(known.iloc[i]["name"]), float(dist[i])


def frontier_table(scored: pd.DataFrame, loss_thresholds: dict[int, float]) -> pd.DataFrame:
    """The rows Eq. 4 chose, with the L_t each satisfies, sorted by loss."""
    rows = scored.loc[list(loss_thresholds)].copy()
    rows["loss_threshold"] = [loss_thresholds[i] for i in rows.index]
    return rows.sort_values("predicted_loss")


@dataclass(frozen=True)
class SearchProblem:
    """One search over parameter budgets: the candidate space, the two predictors, the
    workload's memory limit and how to pick each size's baseline."""

    sizes: list[SizeSpec]
    vocab_size: int
    tokens: float                     # training tokens D the loss is predicted at
    loss: LossPredictor
    throughput: ThroughputPredictor
    settings: Mapping[str, Any]       # the config's search section (grid, GQA groups, tolerance)
    r_range: tuple[float, float]      # candidates' r_mlp/attn limits (the fit's range)
    memory_bytes: float | None        # device memory the weights and KV cache must fit in
    workload_tokens_per_seq: int      # input + output tokens of one sequence
    batch: int
    tied: bool                        # tied embeddings (the weight bytes count them once)
    baseline_for: Callable[[SizeSpec, pd.DataFrame], pd.Series]
    known: pd.DataFrame               # configured architectures, for the nearest-trained column
    dtype_bytes: int = 2
    baseline_gqa_group: int | None = None  # added to the grid's groups: Eq. 4 runs at it


def run_search(problem: SearchProblem) -> dict[str, Any]:
    """Score, trace the frontier and pick the two families for every size.

    Returns {"candidates": DataFrame, "pareto": DataFrame, "recommendations": list[dict]}.
    """
    all_scored, all_frontier, recs = [], [], []
    for size in problem.sizes:
        scored, frontier, rec = _search_size(problem, size)
        all_scored.append(scored)
        all_frontier.append(frontier)
        recs.append(rec)
    candidates = pd.concat(all_scored, ignore_index=True)
    pareto = pd.concat(all_frontier, ignore_index=True)
    nearest = pareto.apply(lambda r: nearest_architecture(r, problem.known), axis=1)
    pareto["nearest_trained"] = [n for n, _ in nearest]
    pareto["nearest_distance"] = [d for _, d in nearest]
    return {"candidates": candidates, "pareto": pareto, "recommendations": recs}


def _search_size(problem: SearchProblem, size: SizeSpec
                 ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """One size: its scored candidates, its frontier and its recommendation."""
    settings = problem.settings
    memory = dict(memory_bytes=problem.memory_bytes,
                  workload_tokens_per_seq=problem.workload_tokens_per_seq, batch=problem.batch,
                  tied=problem.tied, dtype_bytes=problem.dtype_bytes)
    groups = sorted(set(settings["gqa_groups"]) | ({problem.baseline_gqa_group}
                                                   if problem.baseline_gqa_group else set()))
    grid = candidate_grid(size, problem.vocab_size, tuple(settings["d_model_range"]),
                          settings["d_model_step"], groups,
                          settings["ffn_multiple"], settings["n_params_tolerance"],
                          tuple(problem.r_range))
    if grid.empty:
        raise SearchError(
            f"no candidate shape for budget {size.budget:,.0f} (n_layers {size.n_layers}, "
            f"head_dim {size.head_dim}); widen search.d_model_range or "
            f"search.n_params_tolerance, or allow more gqa_groups")
    scored = score_candidates(grid, problem.loss, problem.tokens, problem.throughput, **memory)
    scored.insert(0, "name", shape_names(scored))
    feasible = (scored.fits_memory & (scored.predicted_tokens_per_s > 0)).to_numpy(bool)
    if not feasible.any():
        raise SearchError(
            f"no candidate for budget {size.budget:,.0f} fits the device memory with the "
            f"workload (batch {problem.batch} x {problem.workload_tokens_per_seq} tokens); lower "
            "throughput.batch_size or the lengths, or pick a larger throughput.gpu")
    lossv = scored.predicted_loss.to_numpy(float)
    speed = scored.predicted_tokens_per_s.to_numpy(float)
    frontier = frontier_table(scored, dict(trace_frontier(lossv, speed, feasible)))
    scored["on_frontier"] = scored.index.isin(frontier.index)
    baseline = problem.baseline_for(size, scored)
    base_group = int(baseline.gqa_group)
    scored["gqa_status"] = np.where(scored.gqa_group == base_group, "baseline group",
                                    "untested")
    frontier["gqa_status"] = scored.loc[frontier.index, "gqa_status"]
    l_t = float(baseline.predicted_loss)
    rec: dict[str, Any] = {"budget": size.budget, "tokens": problem.tokens,
                           "baseline": _describe(baseline), "loss_threshold": l_t,
                           "baseline_gqa_group": base_group,
                           "most_accurate": _describe(frontier.iloc[0])}
    at_base_group = feasible & (scored.gqa_group == base_group).to_numpy(bool)
    surefire_i = solve_eq4(lossv, speed, l_t, at_base_group)
    if surefire_i is not None:
        fast = scored.loc[surefire_i]
        fast_gqa = gqa_local_search(fast, problem.loss, problem.tokens, problem.throughput, l_t,
                                    ffn_multiple=settings["ffn_multiple"],
                                    tolerance=settings["n_params_tolerance"],
                                    groups=list(settings["gqa_groups"]), **memory)
        rec["fastest_at_baseline_loss"] = _describe(fast)
        rec["fastest_at_baseline_loss_after_gqa_search"] = _describe(fast_gqa)
        rec["speedup_vs_baseline"] = float(fast.predicted_tokens_per_s
                                           / baseline.predicted_tokens_per_s)
        rec["speedup_after_gqa_search"] = float(fast_gqa.predicted_tokens_per_s
                                                / baseline.predicted_tokens_per_s)
    for key in ("baseline", "most_accurate", "fastest_at_baseline_loss",
                "fastest_at_baseline_loss_after_gqa_search"):
        if key in rec:
            rec[key]["gqa_status"] = ("baseline group" if rec[key]["gqa_group"] == base_group
                                      else "untested")
    return scored, frontier, rec


def _describe(row: pd.Series) -> dict[str, Any]:
    keys = list(SHAPE_FIELDS) + ["n_params_non_embedding", "r_mlp_attn", "d_over_sqrt_n", "gqa_group",
                            "predicted_loss", "predicted_tokens_per_s"]
    out = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in keys if k in row}
    out["name"] = shape_name(row)
    return out
