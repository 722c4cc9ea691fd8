"""The closed loop's round policy (archscale.search.design_loop, issue 28 item 2): a round
trains the top proposals that fit in what is left of the budget, and the loop stops at the
budget, at the targets, after its rounds, or when nothing is left to propose."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from archscale.search.design_loop import (BUDGET_SPENT, NOTHING_LEFT, ROUNDS_DONE,
                                          TARGETS_MET, DesignLoopError, LoopSettings,
                                          decide_round, pick_runs)
from archscale.search.proposals import PROPOSAL_COLUMNS, no_proposals

WIDE = {"x": 0.1, "r": 2.0}


def proposals(costs: list[float], shuffle: bool = False) -> pd.DataFrame:
    """A proposals table (the real columns) whose row k has rank k + 1 and the given cost."""
    rows = [{c: None for c in PROPOSAL_COLUMNS} for _ in costs]
    for k, (row, cost) in enumerate(zip(rows, costs)):
        row.update(rank=k + 1, kind="new_shape", name=f"s{k + 1}", cost_device_hours=cost,
                   batch=True, why="test")
    table = pd.DataFrame(rows, columns=PROPOSAL_COLUMNS)
    return table.iloc[::-1] if shuffle else table


def settings(**kw) -> LoopSettings:
    return LoopSettings(**{"rounds": 5, "budget_hours": 1.0, "runs_per_round": 3, **kw})


def test_a_round_takes_the_top_proposals_that_fit_in_what_is_left():
    table = proposals([0.3, 0.2, 0.5, 0.1, 0.1, 0.2], shuffle=True)
    # 0.45 h left: rank 1 (0.3) fits, rank 2 (0.2) and 3 (0.5) would overrun, rank 4 (0.1) fits
    decision = decide_round(table, 0.55, settings(), WIDE, 1)
    assert not decision.stop and decision.reason == "train"
    assert decision.picked["rank"].tolist() == [1, 4]
    assert decision.picked_hours == pytest.approx(0.4)
    assert decision.spent_after_hours == pytest.approx(0.95)
    # plenty left: the top runs_per_round in rank order, whatever the table's order
    assert pick_runs(table, 10.0, 3)["rank"].tolist() == [1, 2, 3]
    # exactly what is left is allowed
    assert pick_runs(table, 0.5, 3)["rank"].tolist() == [1, 2]


def test_the_loop_stops_at_the_budget_and_never_overruns_it():
    table = proposals([0.13, 0.07, 0.11, 0.05, 0.2])
    loop = settings(rounds=100, budget_hours=0.5, runs_per_round=2)
    spent, reasons = 0.0, []
    for round_number in range(1, 101):
        decision = decide_round(table, spent, loop, WIDE, round_number)
        reasons.append(decision.reason)
        if decision.stop:
            break
        spent = decision.spent_after_hours
    assert reasons[-1] == BUDGET_SPENT and reasons[:-1] == ["train"] * (len(reasons) - 1)
    assert spent <= 0.5 + 1e-12
    assert 0.5 - spent < 0.05  # stopped only when not even the cheapest run fits
    assert "cheapest proposal costs 0.05" in decision.detail
    # nothing at all left: stopped before reading the proposals
    assert decide_round(table, 0.5, loop, WIDE, 3).reason == BUDGET_SPENT


def test_the_loop_stops_at_its_targets_and_only_at_all_of_them():
    table = proposals([0.1, 0.1])
    loop = settings(target_widths={"x": 0.02, "r": 0.3}, target_verdicts={"u_r": "supported"})
    narrow = {"x": 0.019, "r": 0.29}
    met = decide_round(table, 0.0, loop, narrow, 2, {"u_r": "supported"})
    assert met.stop and met.reason == TARGETS_MET and met.picked.empty
    for widths, verdicts in ((narrow, {"u_r": "not identified"}),
                             ({"x": 0.019, "r": 0.31}, {"u_r": "supported"}),
                             ({"x": math.nan, "r": 0.29}, {"u_r": "supported"}),
                             ({"r": 0.29}, {"u_r": "supported"})):
        decision = decide_round(table, 0.0, loop, widths, 2, verdicts)
        assert not decision.stop, (widths, verdicts)
    # without targets the loop spends its budget, however narrow the intervals
    assert not decide_round(table, 0.0, settings(), {"x": 0.0, "r": 0.0}, 1).stop


def test_the_loop_stops_after_its_rounds_and_when_nothing_is_proposed():
    table = proposals([0.1])
    assert decide_round(table, 0.0, settings(rounds=2), WIDE, 3).reason == ROUNDS_DONE
    assert not decide_round(table, 0.0, settings(rounds=2), WIDE, 2).stop
    none = no_proposals("only 4 fitted (shape, budget) point(s)")
    decision = decide_round(none, 0.0, settings(), WIDE, 1)
    assert decision.reason == NOTHING_LEFT and "only 4 fitted" in decision.detail
    unpriced = proposals([math.nan, 0.0])
    assert decide_round(unpriced, 0.0, settings(), WIDE, 1).reason == NOTHING_LEFT


def test_a_decision_writes_as_json_and_csv(tmp_path):
    decision = decide_round(proposals([0.2, 0.3]), 0.1, settings(), {"x": 0.05, "r": math.inf},
                            1)
    doc = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert doc["picked_ranks"] == [1, 2] and doc["picked_names"] == ["s1", "s2"]
    assert doc["spent_after_hours"] == pytest.approx(0.6) and doc["widths"]["r"] is None
    decision.picked.to_csv(tmp_path / "picked.csv", index=False)
    assert list(pd.read_csv(tmp_path / "picked.csv").columns) == PROPOSAL_COLUMNS


def test_settings_come_from_a_config_section():
    loop = LoopSettings.from_config({"enabled": True, "rounds": 3, "budget_hours": 2.5,
                                     "target_widths": {"r": 0.4},
                                     "target_verdicts": {"u_r": "supported"}})
    assert (loop.rounds, loop.budget_hours, loop.runs_per_round) == (3, 2.5, 5)
    assert loop.target_widths == {"r": 0.4} and loop.enabled and loop.has_targets


@pytest.mark.parametrize("section, message", [
    ({"rounds": 0, "budget_hours": 1}, r"loop\.rounds must be a whole number >= 1, got 0"),
    ({"rounds": True, "budget_hours": 1}, r"loop\.rounds must be a whole number"),
    ({"rounds": 2.5, "budget_hours": 1}, r"loop\.rounds must be a whole number"),
    ({"rounds": 2, "budget_hours": -1}, r"loop\.budget_hours must be a number > 0, got -1: "
                                        r"set the device-hours"),
    ({"rounds": 2, "budget_hours": 0}, r"loop\.budget_hours must be a number > 0"),
    ({"rounds": 2, "budget_hours": math.inf}, r"loop\.budget_hours must be a number > 0"),
    ({"rounds": 2, "budget_hours": "1h"}, r"loop\.budget_hours must be a number > 0"),
    ({"rounds": 2, "budget_hours": 1, "runs_per_round": 0}, r"loop\.runs_per_round"),
    ({"rounds": 2}, r"loop\.budget_hours is missing"),
    ({"rounds": 2, "budget": 1}, r"unknown key\(s\) \['budget'\]"),
    ({"rounds": 2, "budget_hours": 1, "target_widths": {"z": 0.1}},
     r"loop\.target_widths\.z: unknown optimum; use \['x', 'r'\]"),
    ({"rounds": 2, "budget_hours": 1, "target_widths": {"x": -0.1}},
     r"loop\.target_widths\.x must be a number > 0"),
    ({"rounds": 2, "budget_hours": 1, "target_widths": [0.1]}, r"loop\.target_widths must be"),
    ({"rounds": 2, "budget_hours": 1, "target_verdicts": {"u_r": "proven"}},
     r"loop\.target_verdicts\.u_r: 'proven' is not a verdict"),
    ({"rounds": 2, "budget_hours": 1, "enabled": "yes"}, r"loop\.enabled must be true or false"),
])
def test_bad_settings_are_refused_naming_the_key_and_the_fix(section, message):
    with pytest.raises(DesignLoopError, match=message):
        LoopSettings.from_config(section)


def test_bad_round_inputs_are_refused():
    with pytest.raises(DesignLoopError, match="round_number must be a whole number >= 1"):
        decide_round(proposals([0.1]), 0.0, settings(), WIDE, 0)
    with pytest.raises(DesignLoopError, match="spent_hours must be a number >= 0"):
        decide_round(proposals([0.1]), -0.1, settings(), WIDE, 1)
    with pytest.raises(DesignLoopError, match=r"lacks \['cost_device_hours'\]"):
        decide_round(pd.DataFrame({"rank": [1], "kind": ["new_seed"], "name": ["a"]}), 0.0,
                     settings(), WIDE, 1)
