"""One verdict per finding: "supported", "not identified" or "contradicted", each with the
numbers and the rule that decided it (results/fits/verdicts.json, `archscale verdicts`).

Why: a fit always returns an optimum and an interval, whether or not the data settle them. The
rules below, written in docs/science.md before the laptop study was rerun, say when they do.
They read the form comparison (forms.json, archscale.fit.compare, which also holds the trained
shapes' margins over their neighbours, archscale.fit.seeds), the optimum check (the headline form's
optimum trained at the largest grid sizes with every seed, results/optimum_check/runs.csv)
and the search's recommendations with the throughput model's held-out error.

The findings and their rules (Z is the family-wise bar of forms.json's margins.margin_threshold):

- U in x (and U in r): supported when at 2 or more grid sizes the best trained shape is
  bracketed along the axis and both neighbours are worse by at least Z SE of the difference;
  contradicted when at 2 or more sizes the best shape sits at the edge of the axis with its one
  neighbour worse by Z SE, no size shows a U, and the headline law's term on the axis has no
  minimum (the curve bends the other way); otherwise not identified (an edge optimum alone may
  have its minimum beyond the trained range). Where the learning-rate check ran
  (results/lr_check/transfer.csv, archscale.fit.lr_check) and the rule's lr does not transfer
  to a shape the U rests on (the best shape or a neighbour on the axis, at any size), the
  verdict is "not identified: lr confounded", whatever the margins say.
- x* (and r*) where stated: supported only when (1) the U on that axis is supported, (2) the
  optimum check ran at every planned size with MIN_CHECK_SEEDS (2) or more seeds on each side
  of each comparison, (3) at each, the measured loss difference between
  the trained optimum and the base shape agrees with the headline law's predicted difference
  within 2 SE of the difference, (4) the trained optimum is not worse than the best trained
  shape by more than 2 SE, and (5) at those sizes the optimum of every form that held-out error
  does not reject (archscale.fit.compare.rejected_forms) lies inside the headline's interval,
  an interval over at least 95 % of the refits. Contradicted when the check disagrees by more
  than 2 SE at every checked size, or the U is contradicted. Otherwise (no optimum check
  included) not identified.
- x* (and r*) is the same at every size: contradicted when the headline form lets it move
  with N and its intervals at the smallest and largest grid sizes are disjoint; supported when
  the headline does not depend on N and held-out error rejects every form that does;
  otherwise not identified.
- the law extrapolates: supported when the headline form beats both nulls (skill > 0) in every
  progressive fold held out at a grid size, with 2 or more folds; contradicted when, over 2 or
  more such folds, it beats the no-architecture null in none; otherwise not identified.
- the frontier is faster at equal loss: supported when at every recommended budget the fastest
  shape at the baseline's predicted loss is predicted faster by more than twice the throughput
  model's held-out RMS error, and both shapes lie inside the law's fitted range; contradicted
  when no budget has a faster shape at that loss; otherwise not identified.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from archscale.fit.conditional import ConditionalLaw
from archscale.fit.forms.base import AXES
from archscale.fit.lr_check import not_transferred

SUPPORTED, NOT_IDENTIFIED, CONTRADICTED = "supported", "not identified", "contradicted"
#: The optimum check's agreement bar, in SE of the difference (the issue's and the paper's
#: usual 2-sigma; one comparison per checked size, so no family-wise correction).
CHECK_SE = 2.0
#: Seeds each side of an optimum-check comparison needs before its agreement can support.
MIN_CHECK_SEEDS = 2


def _finding(name: str, statement: str, verdict: str, rule: str, numbers: Mapping[str, Any],
             reasons: Sequence[str]) -> dict[str, Any]:
    return {"finding": name, "statement": statement, "verdict": verdict, "rule": rule,
            "numbers": dict(numbers), "reasons": list(reasons)}


# ---------------------------------------------------------------------------------------------
# U-shapes, from the margins of the trained shapes
# ---------------------------------------------------------------------------------------------

def u_shape(margins_doc: Mapping[str, Any], axis: str, min_sizes: int = 2,
            concave: bool = False) -> dict[str, Any]:
    """The "loss is U-shaped in <axis>" finding from forms.json's margins block; `concave`:
    the headline law's term on this axis has no minimum at any grid size."""
    margins = margins_doc.get("optimum_margins") or []
    z = (margins_doc.get("margin_threshold") or {}).get("threshold_se")
    rows, clear, monotone = [], 0, 0
    for entry in margins:
        side = entry[axis]
        sides = {s: side[s] for s in ("below", "above")}
        zs = {s: (v or {}).get("margin_in_se") for s, v in sides.items()}
        is_clear = bool(side.get("clear"))
        edge = [s for s in sides if sides[s] is None]
        other = [s for s in sides if sides[s] is not None]
        is_monotone = bool(z is not None and len(edge) == 1 and other
                           and zs[other[0]] is not None and zs[other[0]] >= z)
        clear += is_clear
        monotone += is_monotone
        rows.append({"N": entry["N"], "D": entry["D"], "best": entry["best"]["name"],
                     "margin_below_se": zs["below"], "margin_above_se": zs["above"],
                     "bracketed": side["bracketed"], "clear": is_clear})
    if z is None:
        verdict, reasons = NOT_IDENTIFIED, ["no comparison could be made in SE: the seed noise "
                                            "is unmeasured or no size has 3+ shapes"]
    elif clear >= min_sizes:
        verdict, reasons = SUPPORTED, [f"a clear U at {clear} size(s)"]
    elif monotone >= min_sizes and clear == 0 and concave:
        verdict, reasons = CONTRADICTED, [f"the best shape is at the edge of {axis} with a "
                                          f"clear margin at {monotone} size(s), and the headline "
                                          f"law's {axis} term bends the other way (no minimum)"]
    elif monotone >= min_sizes and clear == 0:
        verdict, reasons = NOT_IDENTIFIED, [f"the best shape is at the edge of {axis} with a "
                                            f"clear margin at {monotone} size(s): the minimum, if "
                                            "any, lies outside the trained range"]
    else:
        verdict, reasons = NOT_IDENTIFIED, [f"a clear U at {clear} size(s) (needed: "
                                            f"{min_sizes}); edge optimum at {monotone}"]
    return _finding(f"u_{axis}", f"loss is U-shaped in {axis}", verdict,
                    f"supported: best shape bracketed in {axis} with both neighbours worse by "
                    f">= {z if z is None else round(z, 3)} SE (family-wise) at {min_sizes}+ "
                    "sizes; contradicted: edge optimum with a clear margin at "
                    f"{min_sizes}+ sizes, no U, and a headline law without a minimum in {axis}",
                    {"threshold_se": z, "sizes": rows, "law_has_no_minimum": concave}, reasons)


def lr_confounded(u: Mapping[str, Any], margins_doc: Mapping[str, Any], axis: str,
                  transfer: pd.DataFrame | None) -> dict[str, Any]:
    """The U finding on `axis`, made "not identified" when the learning-rate check found a
    shape it rests on (the axis's best shape or a neighbour on it, at any size) whose rule lr
    does not transfer; unchanged (with the check's shapes noted) otherwise."""
    if transfer is None:
        return dict(u)
    resting = set()
    for entry in margins_doc.get("optimum_margins") or []:
        series = entry[axis]
        resting.add((series.get("series_best") or entry["best"])["name"])
        resting.update(side["name"] for side in (series.get("below"), series.get("above"))
                       if side)
    failed = {a: why for a, why in not_transferred(transfer).items() if a in resting}
    checked = sorted(set(transfer["arch"]) & resting)
    out = {**u, "numbers": {**u["numbers"], "lr_checked": checked,
                            "lr_not_transferred": sorted(failed)}}
    if failed and u["verdict"] != NOT_IDENTIFIED:
        out["verdict"] = NOT_IDENTIFIED
        out["reasons"] = [f"lr confounded: {'; '.join(failed.values())}",
                          f"(without the lr check: {u['verdict']}: {'; '.join(u['reasons'])})"]
    elif failed:
        out["reasons"] = list(u["reasons"]) + [f"lr confounded: {'; '.join(failed.values())}"]
    return out


# ---------------------------------------------------------------------------------------------
# The optimum check
# ---------------------------------------------------------------------------------------------

def _law(forms_doc: Mapping[str, Any]) -> ConditionalLaw:
    head = forms_doc["headline"]["form"]
    return ConditionalLaw(form=head, coefs=forms_doc["forms"][head]["coefficients"],
                          l_opt_source="given")


def _l_opt(forms_doc: Mapping[str, Any], entry: Mapping[str, Any], n: float) -> float:
    """The headline law's reference loss for a shape of n parameters at a grid entry."""
    ref = forms_doc["reference"]
    if not ref.get("degenerate") and ref.get("chinchilla"):
        from archscale.fit.chinchilla import ChinchillaLaw

        return float(ChinchillaLaw.from_dict(ref["chinchilla"])(n, entry["D"]))
    return float(entry["l_opt"])


def optimum_check(forms_doc: Mapping[str, Any], runs: pd.DataFrame | None, seed_sd: float | None
                  ) -> list[dict[str, Any]]:
    """Per checked size: the trained optimum against the headline law and the trained shapes.

    `runs` is results/optimum_check/runs.csv (one row per shape and seed; skipped sizes have
    no loss); `seed_sd` the study's seed SD at the grid budget."""
    if runs is None or forms_doc.get("headline") is None:
        return []
    law = _law(forms_doc)
    by_size = {int(e["size"]): e for e in forms_doc["headline"]["optimum_by_size"]}
    out = []
    for size, rows in runs.groupby("size", sort=True):
        entry = by_size.get(int(size))
        column = "loss" if "loss" in rows else "val_loss"  # `loss`: the fit's loss_column
        done = rows[pd.to_numeric(rows[column], errors="coerce").notna()]
        row: dict[str, Any] = {"size": int(size), "status": "ok", "reason": ""}
        if entry is None or done.empty:
            reason = "; ".join(str(r) for r in rows.get("reason", pd.Series()).dropna()) or \
                "no trained run"
            out.append({**row, "status": "skipped", "reason": reason})
            continue
        losses = done[column].astype(float).to_numpy()
        n_opt, x, r = (float(done[c].iloc[0]) for c in ("N", "x", "r"))
        trained = entry.get("trained") or []
        base = next((t for t in trained if t["name"] == entry.get("base")), None)
        best = min(trained, key=lambda t: t["loss"]) if trained else None
        if base is None or best is None or not seed_sd:
            out.append({**row, "status": "skipped", "reason": "no base shape at this size and "
                        "budget, or the seed noise is unmeasured"})
            continue

        def predict(xx, rr, nn):
            return float(law.predict(xx, rr, _l_opt(forms_doc, entry, nn), n=nn))

        pred_opt = predict(x, r, n_opt)
        pred_base = predict(base["x"], base["r"], base["N"])
        measured = float(losses.mean())
        se_base = seed_sd * math.sqrt(1 / len(losses) + 1 / base["n_seeds"])
        se_best = seed_sd * math.sqrt(1 / len(losses) + 1 / best["n_seeds"])
        miss = (measured - base["loss"]) - (pred_opt - pred_base)
        row.update({
            "shape": str(done["varch"].iloc[0]), "N": n_opt, "D": float(entry["D"]),
            "x": x, "r": r, "x_star": entry.get("x_star"), "r_star": entry.get("r_star"),
            "n_seeds": int(len(losses)), "seed_losses": [float(v) for v in losses],
            "measured": measured, "predicted": pred_opt, "base": base["name"],
            "base_measured": base["loss"], "base_predicted": pred_base,
            "predicted_gain_vs_base": pred_base - pred_opt,
            "measured_gain_vs_base": base["loss"] - measured,
            "miss": miss, "se": se_base, "miss_in_se": miss / se_base,
            "best": best["name"], "best_measured": best["loss"],
            "vs_best": measured - best["loss"], "vs_best_in_se": (measured - best["loss"])
            / se_best, "seed_sd": seed_sd})
        row["agrees"] = bool(abs(row["miss_in_se"]) <= CHECK_SE)
        # with one seed on a side, a miss under 2 SE is too weak to count as agreement
        row["powered"] = bool(len(losses) >= MIN_CHECK_SEEDS
                              and base["n_seeds"] >= MIN_CHECK_SEEDS)
        row["not_worse_than_best"] = bool(row["vs_best_in_se"] <= CHECK_SE)
        out.append(row)
    return out


def optimum_finding(axis: str, forms_doc: Mapping[str, Any], u: Mapping[str, Any],
                    check: list[dict[str, Any]], check_enabled: bool) -> dict[str, Any]:
    """The "<axis>* where stated" finding."""
    head = forms_doc.get("headline") or {}
    stated = [{"N": e["N"], "star": e.get(f"{axis}_star"),
               "interval": [(e.get(f"{axis}_interval") or {}).get(k) for k in ("low", "high")]}
              for e in head.get("optimum_by_size", [])]
    ok = [c for c in check if c["status"] == "ok"]
    checked_sizes = {c["size"] for c in ok}
    agreement = [a for a in forms_doc.get("agreement", [])
                 if a["axis"] == axis and a["size"] in checked_sizes]
    reasons = []
    if u["verdict"] == CONTRADICTED:
        verdict = CONTRADICTED
        reasons.append(f"the U in {axis} is contradicted")
    elif not check_enabled or not check:
        verdict = NOT_IDENTIFIED
        reasons.append("no optimum check: the stated optimum was not trained (enable "
                       "optimum_check in the config)")
    elif len(ok) < len(check):
        verdict = NOT_IDENTIFIED
        reasons.append("the optimum check could not run at every planned size")
    elif all(not c["agrees"] for c in ok):
        verdict = CONTRADICTED
        reasons.append("the trained optimum misses the law's prediction by more than "
                       f"{CHECK_SE:g} SE at every checked size")
    else:
        failed = []
        if u["verdict"] != SUPPORTED:
            failed.append(f"the U in {axis} is {u['verdict']}")
        if not all(c["agrees"] for c in ok):
            failed.append(f"the check misses by more than {CHECK_SE:g} SE at some size")
        weak = [f"{c['N']:.3g}" for c in ok if not c.get("powered", True)]
        if weak:
            failed.append(f"fewer than {MIN_CHECK_SEEDS} seeds a side at N = {', '.join(weak)}: "
                          "agreement there is too weak to support")
        if not all(c["not_worse_than_best"] for c in ok):
            failed.append("the trained optimum is worse than the best trained shape by more "
                          f"than {CHECK_SE:g} SE at some size")
        if not agreement or not all(a["all_inside"] for a in agreement):
            out = sorted({n for a in agreement for n in a["considered"] if not a["inside"][n]})
            failed.append(f"form(s) {out} put {axis}* outside the headline interval" if out
                          else f"no headline interval for {axis}* at the checked sizes")
        verdict = NOT_IDENTIFIED if failed else SUPPORTED
        reasons.extend(failed or ["every condition holds"])
    return _finding(f"{axis}_star", f"{axis}* as the headline form ({head.get('form')}) states "
                    "it, at the checked sizes", verdict,
                    f"supported: U in {axis} supported, the optimum check ({MIN_CHECK_SEEDS}+ "
                    f"seeds a side) agrees within {CHECK_SE:g} SE at every checked size and is "
                    "not worse than the best "
                    f"trained shape by {CHECK_SE:g} SE, and every form's {axis}* lies in the "
                    "headline interval; contradicted: the check misses at every size (or the "
                    "U is contradicted); otherwise not identified",
                    {"stated": stated, "agreement": agreement,
                     "moves_with_n": bool(forms_doc.get("forms", {}).get(head.get("form"), {})
                                          .get("depends_on_n"))}, reasons)


def fixed_optimum_finding(axis: str, forms_doc: Mapping[str, Any]) -> dict[str, Any]:
    """The "<axis>* is the same at every size" finding (the paper's form assumes it)."""
    head = forms_doc.get("headline") or {}
    results = forms_doc.get("forms", {})
    by_size = head.get("optimum_by_size") or []
    aware = [n for n, r in results.items() if r.get("depends_on_n") and "error" not in r]
    rejected = forms_doc.get("rejected") or {}
    numbers: dict[str, Any] = {"headline": head.get("form"), "n_aware_forms": aware,
                               "rejected": rejected}
    rule = (f"contradicted: the headline form lets {axis}* move with N and its intervals at the "
            "smallest and largest grid sizes are disjoint; supported: the headline does not "
            "depend on N and held-out error rejects every form that does; otherwise not "
            "identified")
    name, statement = f"{axis}_star_fixed", f"{axis}* is the same at every size"
    if not by_size:
        return _finding(name, statement, NOT_IDENTIFIED, rule, numbers, ["no headline form"])
    first, last = (by_size[0].get(f"{axis}_interval") or {}), \
        (by_size[-1].get(f"{axis}_interval") or {})
    numbers.update({"smallest": {"N": by_size[0]["N"], "star": by_size[0].get(f"{axis}_star"),
                                 "interval": [first.get("low"), first.get("high")]},
                    "largest": {"N": by_size[-1]["N"], "star": by_size[-1].get(f"{axis}_star"),
                                "interval": [last.get("low"), last.get("high")]}})
    if results.get(head["form"], {}).get("depends_on_n"):
        ends = [first.get("low"), first.get("high"), last.get("low"), last.get("high")]
        if len(by_size) >= 2 and all(v is not None and math.isfinite(v) for v in ends) and (
                first["high"] < last["low"] or last["high"] < first["low"]):
            return _finding(name, statement, CONTRADICTED, rule, numbers,
                            [f"{axis}* moves from {by_size[0].get(f'{axis}_star'):.3g} to "
                             f"{by_size[-1].get(f'{axis}_star'):.3g}; the intervals are "
                             "disjoint"])
        return _finding(name, statement, NOT_IDENTIFIED, rule, numbers,
                        ["the N-aware headline's intervals at the end sizes overlap"])
    if aware and all(n in rejected for n in aware):
        return _finding(name, statement, SUPPORTED, rule, numbers,
                        ["held-out error rejects every N-aware form"])
    return _finding(name, statement, NOT_IDENTIFIED, rule, numbers,
                    ["held-out error does not reject the N-aware form(s)"])


# ---------------------------------------------------------------------------------------------
# Extrapolation and the frontier
# ---------------------------------------------------------------------------------------------

def extrapolation_finding(forms_doc: Mapping[str, Any], min_folds: int = 2) -> dict[str, Any]:
    head = (forms_doc.get("headline") or {}).get("form")
    summary = forms_doc["forms"].get(head, {}).get("heldout", {}).get("progressive", {}) \
        if head else {}
    folds = summary.get("folds", 0)
    vs_none = summary.get("skill_vs_no_architecture") or []
    vs_kind = summary.get("skill_vs_kind_ratio") or []
    numbers = {"form": head, "folds": folds, "mse_by_fold": summary.get("mse_by_fold"),
               "skill_vs_no_architecture": vs_none, "skill_vs_kind_ratio": vs_kind,
               "spearman_by_fold": summary.get("spearman_by_fold"),
               "nulls_mse": {k: v.get("progressive", {}).get("mse_by_fold")
                             for k, v in forms_doc.get("nulls", {}).items()}}
    if folds >= min_folds and vs_none and all(s is not None and s <= 0 for s in vs_none):
        verdict, reasons = CONTRADICTED, ["no better than ignoring the architecture in any fold"]
    elif folds >= min_folds and vs_none and vs_kind and all(
            s is not None and s > 0 for s in vs_none + vs_kind):
        verdict, reasons = SUPPORTED, [f"beats both nulls in all {folds} folds"]
    else:
        verdict = NOT_IDENTIFIED
        reasons = [f"{folds} progressive fold(s) (needed: {min_folds})" if folds < min_folds
                   else "it does not beat both nulls in every fold"]
    return _finding("extrapolates", "the law predicts a larger size it was not fitted on",
                    verdict, f"supported: skill > 0 against both nulls in every progressive "
                    f"fold at a grid size, {min_folds}+ folds; contradicted: no skill against "
                    f"the no-architecture null in any of {min_folds}+ folds", numbers, reasons)


def frontier_finding(recommendations: Mapping[str, Any] | None,
                     throughput: pd.DataFrame | None) -> dict[str, Any]:
    rule = ("supported: at every budget the fastest shape at the baseline's predicted loss is "
            "predicted faster by more than twice the throughput model's held-out RMS error, "
            "both shapes inside the law's fitted range; contradicted: no budget has a faster "
            "shape at that loss")
    if not recommendations:
        return _finding("frontier_faster", "the frontier is faster at equal loss",
                        NOT_IDENTIFIED, rule, {}, ["no recommendations.json"])
    err = None
    if throughput is not None and "loo_relative_error" in throughput:
        values = pd.to_numeric(throughput["loo_relative_error"], errors="coerce").dropna()
        err = float(np.sqrt(np.mean(values ** 2))) if len(values) else None
    rows, clear, faster = [], 0, 0
    recs = recommendations.get("recommendations", [])
    for rec in recs:
        s = rec.get("speedup_vs_baseline")
        fast, base = rec.get("fastest_at_baseline_loss") or {}, rec.get("baseline") or {}
        inside = fast.get("law_range") == "inside" and base.get("law_range") == "inside"
        ok = bool(s is not None and err is not None and s - 1 > 2 * err and inside)
        faster += bool(s is not None and s > 1)
        clear += ok
        rows.append({"budget": rec.get("budget"), "speedup": s, "fastest": fast.get("name"),
                     "fastest_range": fast.get("law_range"),
                     "baseline_range": base.get("law_range"), "clear": ok})
    law = (recommendations.get("law") or {}).get("form")
    numbers = {"throughput_heldout_rms_error": err, "budgets": rows, "law_form": law}
    if recs and faster == 0:
        verdict, reasons = CONTRADICTED, ["no budget has a faster shape at the baseline's loss"]
    elif recs and clear == len(recs):
        verdict, reasons = SUPPORTED, ["clear at every budget"]
    else:
        verdict = NOT_IDENTIFIED
        reasons = [f"clear at {clear} of {len(recs)} budget(s)"
                   + ("" if err is not None else "; the throughput model's held-out error is "
                      "unknown")]
    if law:
        reasons.append(f"losses from the search's law ({law}, fit.form), not the headline form")
    return _finding("frontier_faster", "the frontier is faster at equal loss", verdict, rule,
                    numbers, reasons)


def verdicts(forms_doc: Mapping[str, Any], check_runs: pd.DataFrame | None = None,
             check_enabled: bool = False,
             recommendations: Mapping[str, Any] | None = None,
             throughput: pd.DataFrame | None = None,
             lr_transfer: pd.DataFrame | None = None) -> dict[str, Any]:
    """The verdicts.json document; `lr_transfer` is the learning-rate check's transfer.csv
    when the study ran it."""
    from archscale.fit.seeds import seed_sd_at

    head = forms_doc.get("headline") or {}
    grid_d = head["optimum_by_size"][-1]["D"] if head.get("optimum_by_size") else None
    margins = forms_doc.get("margins") or {}
    noise = margins.get("seed_noise") or {}
    sd = seed_sd_at(noise, grid_d) if grid_d is not None and noise else None
    by_size = head.get("optimum_by_size") or []
    u = {a: lr_confounded(u_shape(margins, a, concave=bool(by_size) and not any(
        e.get(f"{a}_is_minimum") for e in by_size)), margins, a, lr_transfer) for a in AXES}
    check = optimum_check(forms_doc, check_runs, sd) if check_enabled else []
    findings = [u["x"], u["r"],
                optimum_finding("x", forms_doc, u["x"], check, check_enabled),
                optimum_finding("r", forms_doc, u["r"], check, check_enabled),
                fixed_optimum_finding("x", forms_doc), fixed_optimum_finding("r", forms_doc),
                extrapolation_finding(forms_doc),
                frontier_finding(recommendations, throughput)]
    return {"what": "one verdict per finding, with its numbers and rule "
                    "(archscale.fit.verdicts; the rules: docs/science.md)",
            "verdicts": [SUPPORTED, NOT_IDENTIFIED, CONTRADICTED],
            "headline_form": head.get("form"), "selection": forms_doc.get("selection"),
            "reference": {k: forms_doc.get("reference", {}).get(k)
                          for k in ("source", "degenerate", "degeneracy")},
            "seed_sd": sd, "optimum_check": check,
            "lr_check": None if lr_transfer is None else
            lr_transfer.astype(object).where(lr_transfer.notna(), None).to_dict("records"),
            "findings": findings}


def summary_lines(doc: Mapping[str, Any]) -> list[str]:
    """The verdicts as a few lines of text: what `archscale verdicts` prints."""
    lines = [f"headline form: {doc.get('headline_form')} "
             f"({(doc.get('selection') or {}).get('reason', '')})"]
    width = max(len(f["statement"]) for f in doc["findings"])
    for f in doc["findings"]:
        lines.append(f"{f['statement']:<{width}}  {f['verdict']:<15} {'; '.join(f['reasons'])}")
    for c in doc.get("optimum_check", []):
        if c["status"] == "ok":
            lines.append(f"optimum check at N={c['N']:.3g}: {c['shape']} measured "
                         f"{c['measured']:.4f} vs predicted {c['predicted']:.4f}; gain over "
                         f"{c['base']} {c['measured_gain_vs_base']:+.4f} measured, "
                         f"{c['predicted_gain_vs_base']:+.4f} predicted "
                         f"(miss {c['miss_in_se']:+.1f} SE)")
        else:
            lines.append(f"optimum check at size {c['size']}: skipped ({c['reason']})")
    return lines
