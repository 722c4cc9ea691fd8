"""The closed loop's round policy: which proposed runs a round trains, or why the loop stops.

The loop (issue 28) alternates: train a batch, refit, re-check the verdicts, propose again
(archscale.search.proposals). This module is the one decision between a round's proposals and
the next round's training, kept free of Snakemake so that it can be tested on plain tables and
run in simulation (archscale.search.design_simulation). Its inputs are what one round's files
hold (the proposals table, the device-hours spent so far, the current interval widths and
verdicts) and its output is a `RoundDecision`, which writes as one JSON document plus the
picked rows as a CSV; round k reads round k-1's.

The rule, in the order it is checked:
1. **targets met**: every target set (an interval width of x* or r*, a finding's verdict) is
   reached. With no target set, the loop spends its budget.
2. **rounds done**: the round asked for is past `rounds`.
3. **budget spent**: nothing is left of `budget_hours`, or no proposed run fits in what is left.
4. **nothing left to propose**: the proposals table has no priced run (e.g. its one row of kind
   'none' saying why the study could not be designed from).
Otherwise the round trains the proposals in rank order, skipping any that would overrun the
budget, up to `runs_per_round`. Rank order is the proposals' greedy batch: each row is the best
run given the rows above it, so taking the top rows keeps the batch spread out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import pandas as pd

from archscale.fit.forms.base import AXES
from archscale.fit.verdicts import CONTRADICTED, NOT_IDENTIFIED, SUPPORTED

TARGETS_MET = "targets met"
BUDGET_SPENT = "budget spent"
ROUNDS_DONE = "rounds done"
NOTHING_LEFT = "nothing left to propose"
STOP_REASONS = (TARGETS_MET, BUDGET_SPENT, ROUNDS_DONE, NOTHING_LEFT)

VERDICTS = (SUPPORTED, NOT_IDENTIFIED, CONTRADICTED)
#: The proposals columns a decision reads (archscale.search.proposals.PROPOSAL_COLUMNS).
NEEDED_COLUMNS = ("rank", "kind", "name", "cost_device_hours")
LOOP_KEYS = ("enabled", "rounds", "budget_hours", "runs_per_round", "target_widths",
             "target_verdicts")


class DesignLoopError(ValueError):
    """A loop setting or input that cannot be used; the message names the key and the fix."""


def _whole(section: str, key: str, value: Any, why: str) -> int:
    """A whole number >= 1 (booleans refused: `rounds: true` is a typo, not 1 round)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DesignLoopError(f"{section}.{key} must be a whole number >= 1, got {value!r}: "
                              f"set {why}")
    return value


def _positive(section: str, key: str, value: Any, why: str) -> float:
    """A finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise DesignLoopError(f"{section}.{key} must be a number > 0, got {value!r}: set {why}")
    return float(value)


@dataclass(frozen=True)
class LoopSettings:
    """The loop's config section: how many rounds, how many device-hours, how many runs a
    round, and the targets that end it early. Checked on construction, so a bad value fails
    before any run is trained, not rounds later."""

    rounds: int
    budget_hours: float
    runs_per_round: int = 5
    #: interval width of x* and/or r* ({'x': 0.05}); the loop stops once each is at or below
    target_widths: Mapping[str, float] = field(default_factory=dict)
    #: finding -> verdict ({'u_r': 'supported'}); the loop stops once each is reached
    target_verdicts: Mapping[str, str] = field(default_factory=dict)
    #: whether the workflow runs the loop at all; the round policy does not read it
    enabled: bool = False
    section: str = "loop"  # the config key errors name

    def __post_init__(self) -> None:
        s = self.section
        _whole(s, "rounds", self.rounds, "how many rounds of proposals the loop may train")
        _positive(s, "budget_hours", self.budget_hours,
                  "the device-hours the loop may spend beyond the starting grid")
        _whole(s, "runs_per_round", self.runs_per_round, "how many runs one round trains")
        self._check_targets()
        if not isinstance(self.enabled, bool):
            raise DesignLoopError(f"{s}.enabled must be true or false, got {self.enabled!r}")

    def _check_targets(self) -> None:
        s = self.section
        if not isinstance(self.target_widths, Mapping):
            raise DesignLoopError(f"{s}.target_widths must be a mapping like {{x: 0.05, r: 0.5}}"
                                  f", got {self.target_widths!r}")
        for axis, width in self.target_widths.items():
            if axis not in AXES:
                raise DesignLoopError(f"{s}.target_widths.{axis}: unknown optimum; use "
                                      f"{list(AXES)} (the x* and r* interval widths)")
            _positive(s, f"target_widths.{axis}", width, f"the {axis}* interval width to reach")
        if not isinstance(self.target_verdicts, Mapping):
            raise DesignLoopError(f"{s}.target_verdicts must be a mapping like "
                                  f"{{u_r: supported}}, got {self.target_verdicts!r}")
        for finding, verdict in self.target_verdicts.items():
            if verdict not in VERDICTS:
                raise DesignLoopError(f"{s}.target_verdicts.{finding}: {verdict!r} is not a "
                                      f"verdict; use one of {list(VERDICTS)}")

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any], section: str = "loop") -> "LoopSettings":
        """The settings from a config section (a plain mapping); unknown keys are refused by
        name, since a misspelt target would otherwise be silently never met."""
        if not isinstance(mapping, Mapping):
            raise DesignLoopError(f"{section} must be a mapping of {list(LOOP_KEYS)}, "
                                  f"got {mapping!r}")
        unknown = sorted(set(mapping) - set(LOOP_KEYS))
        if unknown:
            raise DesignLoopError(f"{section}: unknown key(s) {unknown}; the loop reads "
                                  f"{list(LOOP_KEYS)}")
        for key in ("rounds", "budget_hours"):
            if key not in mapping:
                raise DesignLoopError(f"{section}.{key} is missing: the loop needs both rounds "
                                      "and budget_hours")
        return cls(rounds=mapping["rounds"], budget_hours=mapping["budget_hours"],
                   runs_per_round=mapping.get("runs_per_round", 5),
                   target_widths=_copied(mapping.get("target_widths")),
                   target_verdicts=_copied(mapping.get("target_verdicts")),
                   enabled=mapping.get("enabled", False), section=section)

    @property
    def has_targets(self) -> bool:
        return bool(self.target_widths or self.target_verdicts)


def _copied(value: Any) -> Any:
    """A config mapping copied (None: empty); anything else passed on for the check to name."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class RoundDecision:
    """What one round does: the runs it trains (`picked`, rows of the proposals table) or why
    the loop stops, with the budget before and after."""

    round_number: int
    stop: bool
    reason: str                 # a STOP_REASONS entry when stopping, else "train"
    detail: str                 # one line in words, for the log and the report
    picked: pd.DataFrame        # the proposals rows to train (empty when stopping)
    spent_before_hours: float
    picked_hours: float
    budget_hours: float
    widths: Mapping[str, float]
    targets_met: bool

    @property
    def spent_after_hours(self) -> float:
        return self.spent_before_hours + self.picked_hours

    def to_dict(self) -> dict[str, Any]:
        """The decision as JSON-ready values (the picked rows by rank and name; the rows
        themselves go to a CSV)."""
        return {"round": self.round_number, "stop": self.stop, "reason": self.reason,
                "detail": self.detail, "n_picked": len(self.picked),
                "picked_ranks": [int(v) for v in self.picked.get("rank", [])],
                "picked_names": [str(v) for v in self.picked.get("name", [])],
                "spent_before_hours": self.spent_before_hours,
                "picked_hours": self.picked_hours, "spent_after_hours": self.spent_after_hours,
                "budget_hours": self.budget_hours,
                "widths": {a: _json_number(w) for a, w in self.widths.items()},
                "targets_met": self.targets_met}


def _json_number(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def targets_met(settings: LoopSettings, widths: Mapping[str, float],
                verdicts: Mapping[str, str] | None = None) -> bool:
    """Every target set is reached (a width not known counts as not reached); False when no
    target is set, so that such a loop spends its budget."""
    if not settings.has_targets:
        return False
    for axis, target in settings.target_widths.items():
        width = widths.get(axis)
        if width is None or not math.isfinite(width) or width > target:
            return False
    verdicts = verdicts or {}
    return all(verdicts.get(f) == v for f, v in settings.target_verdicts.items())


def priced_proposals(proposals: pd.DataFrame) -> pd.DataFrame:
    """The proposals a round can train: rows with a finite positive cost, in rank order.
    A table without the columns a decision reads is refused by name (a wrong file)."""
    missing = [c for c in NEEDED_COLUMNS if c not in proposals.columns]
    if missing:
        raise DesignLoopError(f"the proposals table lacks {missing}: pass results/proposals.csv "
                              "as archscale.search.proposals writes it")
    cost = pd.to_numeric(proposals["cost_device_hours"], errors="coerce")
    usable = proposals[(proposals["kind"] != "none") & cost.gt(0) & cost.lt(math.inf)]
    return usable.sort_values("rank", kind="stable")


def pick_runs(proposals: pd.DataFrame, remaining_hours: float, limit: int) -> pd.DataFrame:
    """The top `limit` priced proposals in rank order whose summed cost fits in
    `remaining_hours`; a run that would overrun is skipped, and a cheaper one below it may
    still fit (the last hours are not left idle for want of the best run)."""
    taken, left = [], remaining_hours
    for index, cost in priced_proposals(proposals)["cost_device_hours"].items():
        if len(taken) == limit:
            break
        if float(cost) <= left * (1 + 1e-9):
            taken.append(index)
            left -= float(cost)
    return proposals.loc[taken]


def decide_round(proposals: pd.DataFrame, spent_hours: float, settings: LoopSettings,
                 widths: Mapping[str, float], round_number: int,
                 verdicts: Mapping[str, str] | None = None) -> RoundDecision:
    """Round `round_number`'s decision (1 = the first round after the starting grid), given
    the proposals and widths of the fit before it and the device-hours spent so far by
    earlier rounds (the starting grid not counted). The order of the checks is the module
    docstring's."""
    if isinstance(round_number, bool) or not isinstance(round_number, int) or round_number < 1:
        raise DesignLoopError(f"round_number must be a whole number >= 1, got {round_number!r}")
    if not (isinstance(spent_hours, (int, float)) and spent_hours >= 0):
        raise DesignLoopError(f"spent_hours must be a number >= 0, got {spent_hours!r}")
    met = targets_met(settings, widths, verdicts)
    remaining = settings.budget_hours - float(spent_hours)

    def stop(reason: str, detail: str) -> RoundDecision:
        return RoundDecision(round_number, True, reason, detail, proposals.iloc[0:0],
                             float(spent_hours), 0.0, settings.budget_hours, dict(widths), met)

    shown = ", ".join(f"{a}* {widths.get(a, math.nan):.4g}" for a in AXES)
    if met:
        return stop(TARGETS_MET, f"interval widths {shown} and verdicts reach every target")
    if round_number > settings.rounds:
        return stop(ROUNDS_DONE, f"{settings.rounds} round(s) trained; widths {shown}")
    if remaining <= 0:
        return stop(BUDGET_SPENT, f"{spent_hours:.4g} of {settings.budget_hours:.4g} "
                                  "device-hours spent")
    priced = priced_proposals(proposals)
    if priced.empty:
        why = (str(proposals["why"].iloc[0]) if "why" in proposals.columns and len(proposals)
               else "the proposals table has no priced run")
        return stop(NOTHING_LEFT, why)
    picked = pick_runs(priced, remaining, settings.runs_per_round)
    if picked.empty:
        cheapest = float(priced["cost_device_hours"].min())
        return stop(BUDGET_SPENT, f"{remaining:.4g} device-hours left; the cheapest proposal "
                                  f"costs {cheapest:.4g}")
    hours = float(picked["cost_device_hours"].sum())
    return RoundDecision(round_number, False, "train",
                         f"train {len(picked)} run(s) for {hours:.4g} device-hours "
                         f"({remaining - hours:.4g} left after); widths now {shown}",
                         picked, float(spent_hours), hours, settings.budget_hours, dict(widths),
                         met)
