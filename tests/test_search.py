"""Frontier search: candidate space, Eq. 4 with pulp, the frontier equals the Pareto filter."""
import numpy as np
import pandas as pd
import pytest

from archscale.search.frontier import (SizeSpec, candidate_grid, gqa_local_search, pareto_mask,
                                       score_candidates, solve_eq4, solve_eq4_program,
                                       trace_frontier)

PAPER = dict(a=(2.697, 0.0974, 0.0078), b=(0.3870, 0.0063, 0.0065))


def paper_loss(n, tokens, x, r):
    a0, a1, a2 = PAPER["a"]
    b0, b1, b2 = PAPER["b"]
    l_opt = 1.8172 + 482.01 / n ** 0.3478 + 2085.43 / tokens ** 0.3658
    return (a0 + a1 * np.log(x) + a2 / x) * (b0 + b1 * np.log(r) + b2 / r) * l_opt


def toy_throughput(shapes):
    """Faster with fewer KV heads and a smaller attention: a stand-in for the roofline."""
    kv = shapes["n_layers"] * shapes["n_kv_heads"] * shapes["head_dim"]
    return 1e6 / (kv + 0.001 * shapes["d_model"] * shapes["ffn_dim"])


def test_candidate_grid_respects_constraints():
    size = SizeSpec(budget=973e6, n_layers=16, head_dim=64)
    grid = candidate_grid(size, 128256, (0.04, 0.12), 64, [1, 2, 4, 8], 64, 0.02, (0.5, 5))
    assert len(grid) > 1000
    assert (grid.ffn_dim % 64 == 0).all() and (grid.n_heads % grid.n_kv_heads == 0).all()
    scored = score_candidates(grid, paper_loss, 20e9, toy_throughput, None, 5120, 128, True)
    assert ((scored.n_params_non_embedding / 973e6 - 1).abs() <= 0.02).all()
    assert scored.r_mlp_attn.between(0.5, 5).all()
    assert set(scored.gqa_group) == {1, 2, 4, 8}


def test_pareto_mask_by_hand():
    loss = np.array([1.0, 1.0, 2.0, 0.5, 2.0, 3.0])
    speed = np.array([5.0, 4.0, 6.0, 1.0, 6.0, 5.0])
    # 1 is dominated by 0, 4 ties with 2, 5 is dominated by 2
    assert pareto_mask(loss, speed).tolist() == [True, False, True, True, False, False]


def test_eq4_picks_fastest_under_threshold():
    loss = np.array([3.0, 2.5, 2.0, 1.5])
    speed = np.array([10.0, 9.0, 12.0, 1.0])
    assert solve_eq4(loss, speed, 2.6) == 2
    assert solve_eq4(loss, speed, 1.9) == 3
    assert solve_eq4(loss, speed, 1.0) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_traced_frontier_equals_non_dominated_set(seed):
    rng = np.random.default_rng(seed)
    loss = np.round(rng.uniform(2, 3, 300), 3)
    speed = np.round(rng.uniform(1, 100, 300), 1)
    traced = {i for i, _ in trace_frontier(loss, speed)}
    expected = set(np.flatnonzero(pareto_mask(loss, speed)))
    # equal up to exact ties: compare the (loss, speed) points, not indices
    assert {(loss[i], speed[i]) for i in traced} == {(loss[i], speed[i]) for i in expected}


def _tied_candidates(seed: int, n: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Losses and speeds on coarse grids, so exact ties in loss, in speed and in both occur."""
    rng = np.random.default_rng(seed)
    loss = np.round(rng.uniform(2, 3, n), 1)
    speed = np.round(rng.uniform(1, 10, n))
    loss[:10], speed[:10] = loss[10:20], speed[10:20]       # exact duplicates of other rows
    feasible = rng.uniform(size=n) > 0.1
    return loss, speed, feasible


def _cbc_sweep(loss, speed, feasible) -> list[tuple[int, float]]:
    """The epsilon-constraint sweep with one CBC program per L_t, as the search used to run."""
    points, threshold = [], float(np.max(loss[feasible]))
    while (chosen := solve_eq4_program(loss, speed, threshold, feasible)) is not None:
        points.append((chosen, threshold))
        below = loss[feasible][loss[feasible] < loss[chosen]]
        if below.size == 0:
            break
        threshold = float(np.max(below))
    return points


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_eq4_equals_the_cbc_program_at_every_threshold(seed):
    loss, speed, feasible = _tied_candidates(seed)
    assert len(set(zip(loss, speed))) < loss.size and len(set(speed)) < loss.size  # ties exist
    for threshold in [*np.unique(loss), 1.0]:
        fast = solve_eq4(loss, speed, threshold, feasible)
        cbc = solve_eq4_program(loss, speed, threshold, feasible)
        if cbc is None:
            assert fast is None
            continue
        # same (loss, speed): among exact duplicates either index is the same architecture
        assert (loss[fast], speed[fast]) == (loss[cbc], speed[cbc]), threshold
        assert fast == min(i for i in np.flatnonzero(feasible)
                           if (loss[i], speed[i]) == (loss[cbc], speed[cbc]))


@pytest.mark.parametrize("seed", [0, 1])
def test_traced_frontier_equals_the_cbc_sweep(seed):
    loss, speed, feasible = _tied_candidates(seed)
    fast = trace_frontier(loss, speed, feasible)
    cbc = _cbc_sweep(loss, speed, feasible)
    assert [t for _, t in fast] == [t for _, t in cbc]
    assert [(loss[i], speed[i]) for i, _ in fast] == [(loss[i], speed[i]) for i, _ in cbc]
    assert all(feasible[i] for i, _ in fast)


def test_eq4_breaks_speed_ties_toward_lower_loss():
    loss = np.array([2.5, 2.0, 2.0, 2.2])
    speed = np.array([7.0, 7.0, 7.0, 3.0])
    assert solve_eq4(loss, speed, 3.0) == 1            # equal speed: lower loss, then lower index
    assert solve_eq4_program(loss, speed, 3.0) in (1, 2)
    assert trace_frontier(loss, speed) == [(1, 2.5)]


def test_gqa_local_search_keeps_loss_and_speeds_up():
    size = SizeSpec(budget=973e6, n_layers=16, head_dim=64)
    row = score_candidates(pd.DataFrame([{"budget": 973e6, "d_model": 2048, "n_layers": 16,
                                          "n_heads": 32, "n_kv_heads": 32, "head_dim": 64,
                                          "ffn_dim": 6144, "vocab_size": 128256}]),
                           paper_loss, 20e9, toy_throughput, None, 5120, 128, True).iloc[0]
    best = gqa_local_search(row, paper_loss, 20e9, toy_throughput, row.predicted_loss + 0.01,
                            64, 0.05, None, 5120, 128, True)
    assert best.predicted_tokens_per_s > row.predicted_tokens_per_s
    assert best.predicted_loss <= row.predicted_loss + 0.01
    assert size.n_layers == best.n_layers and 32 % best.n_kv_heads == 0


def test_shape_names_by_column_equal_shape_name_by_row():
    from archscale.architecture import shape_name
    from archscale.search.frontier import shape_names

    grid = candidate_grid(SizeSpec(973e6, 16, 64), 128256, (0.05, 0.1), 64, [1, 4], 64, 0.05)
    assert shape_names(grid) == [shape_name(row) for _, row in grid.iterrows()]
    assert shape_names(grid.iloc[:0]) == []


def test_a_speedup_within_the_throughput_error_is_flagged():
    """recommendations.json says when the predicted speed-up is smaller than the throughput
    model's mean leave-one-out error (then the model cannot tell the shapes apart)."""
    from archscale.search.study import speed_warnings

    rec = {"speedup_vs_baseline": 1.02, "engine": "torch"}
    error = {"mean_abs_relative_error": 0.11, "n_measurements": 13}
    (warning,) = speed_warnings(rec, error)
    assert "1.020x" in warning and "11 %" in warning and "13 measurements" in warning
    assert speed_warnings({**rec, "speedup_vs_baseline": 1.25}, error) == []
    assert speed_warnings({**rec, "speedup_vs_baseline": 0.8}, error) == []
    assert speed_warnings(rec, None) == []  # no leave-one-out (one measurement): no claim
