"""The fit stage's entry points: `archscale fit ...` and the functions Snakemake scripts call.

    archscale fit chinchilla  --runs runs.csv --out chinchilla.json [--bootstrap K] [--plot PNG]
    archscale fit conditional --runs runs.csv --out conditional.json [--form multiplicative]
                              [--l-opt empirical|chinchilla] [--chinchilla chinchilla.json]
    archscale fit quality     --runs runs.csv --out quality.csv

Each writes --out and prints the result as JSON on stdout (the document without its per-point
`data` section, which stays in the file). The `*_stage` functions take the config's `fit`
section as a dict (missing keys get the schema's defaults), so the CLI and the workflow do
exactly the same thing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

from archscale.fit.chinchilla import FitError, fit_chinchilla, load_chinchilla
from archscale.fit.conditional import fit_conditional
from archscale.provenance import now

from archscale.fit.io import read_runs, to_jsonable, write_json



def _schema_fit_defaults() -> dict[str, Any]:
    from archscale.config import schema
    return {k: v.get("default") for k, v in schema()["properties"]["fit"]["properties"].items()}


#: The schema's defaults for the `fit` section (src/archscale/schemas/config.schema.json).
FIT_DEFAULTS: dict[str, Any] = _schema_fit_defaults()


def fit_settings(fit: Mapping[str, Any] | None) -> dict[str, Any]:
    """The config's fit section with defaults filled in; unknown keys are an error."""
    settings = dict(FIT_DEFAULTS)
    unknown = sorted(set(fit or {}) - set(FIT_DEFAULTS))
    if unknown:
        raise ValueError(f"fit settings: unknown key(s) {unknown}; known: {sorted(FIT_DEFAULTS)}")
    settings.update(fit or {})
    return settings


def _complete_provenance(doc: dict[str, Any], started: str, inputs: list) -> None:
    """Add the start time and the input files' hashes to a fit document's provenance."""
    from archscale.provenance import provenance as project_provenance

    doc.setdefault("provenance", {})
    doc["provenance"]["started"] = started
    doc["provenance"]["inputs"] = project_provenance(inputs=[str(p) for p in inputs])["inputs"]


def chinchilla_stage(runs: str | Path, out: str | Path, fit: Mapping[str, Any] | None = None,
                     plot: str | Path | None = None, workers: int = 2,
                     extra_provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fit the Chinchilla law to a runs table and write chinchilla.json (and a plot)."""
    started = now()
    s = fit_settings(fit)
    table = read_runs(runs, s["loss_column"], require=("N", "D", "loss"))
    result = fit_chinchilla(table["N"], table["D"], table["loss"],
                            huber_delta=s["huber_delta"], bootstrap=s["bootstrap"],
                            compute_budgets=s["compute_budgets"], seed=s["seed"],
                            n_starts=s["n_starts"], workers=workers)
    doc = result.to_dict(extra_provenance, settings={"fit": s, "runs": str(runs)})
    _complete_provenance(doc, started, [runs])
    write_json(out, doc)
    if plot:
        from archscale.fit.plots import plot_chinchilla

        plot_chinchilla(result, plot)
    return doc


def conditional_stage(runs: str | Path, out: str | Path, fit: Mapping[str, Any] | None = None,
                      chinchilla: str | Path | None = None,
                      plots: Mapping[str, str | Path] | None = None,
                      extra_provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fit the conditional law and write conditional.json (and plots).

    The Chinchilla law is read from `chinchilla` (a chinchilla.json) when given, else fitted on
    the runs without bootstrap. It is the L_opt when fit.l_opt is 'chinchilla', and the
    extrapolation outside the empirical points when it is 'empirical' (where a table too small
    for a Chinchilla fit is allowed: the law then answers L_opt only at its points).
    plots: optional paths under the keys 'u_curves' and 'predicted'.
    """
    started = now()
    s = fit_settings(fit)
    table = read_runs(runs, s["loss_column"], require=("N", "D", "loss", "x", "r"))
    notes = []
    if chinchilla:
        law = load_chinchilla(chinchilla)
    else:
        try:
            law = fit_chinchilla(table["N"], table["D"], table["loss"],
                                 huber_delta=s["huber_delta"], n_starts=s["n_starts"]).law
        except FitError as exc:
            if s["l_opt"] == "chinchilla":
                raise
            law = None
            notes.append(f"no Chinchilla fit for extrapolating L_opt ({exc}); the law answers "
                         "L_opt only inside the empirical points")
    result = fit_conditional(table, form=s["form"], l_opt=s["l_opt"], chinchilla=law,
                             r_range=s["r_range"], bootstrap=s["bootstrap"], seed=s["seed"],
                             size_tol=s["size_tolerance"])
    result.warnings.extend(notes)
    settings = {"fit": s, "runs": str(runs), "chinchilla": str(chinchilla) if chinchilla else
                "fitted on the runs"}
    doc = result.to_dict(extra_provenance, settings=settings)
    _complete_provenance(doc, started, [runs] + ([chinchilla] if chinchilla else []))
    write_json(out, doc)
    if plots:
        from archscale.fit.plots import plot_predicted_vs_observed, plot_u_curves

        if plots.get("u_curves"):
            plot_u_curves(result, plots["u_curves"])
        if plots.get("predicted"):
            plot_predicted_vs_observed(result, plots["predicted"])
    return doc


def quality_stage(runs: str | Path, out: str | Path, fit: Mapping[str, Any] | None = None):
    """Progressive extrapolation over sizes, written as quality.csv; returns the table."""
    from archscale.io import write_csv

    from archscale.fit.quality import progressive_extrapolation

    s = fit_settings(fit)
    table = read_runs(runs, s["loss_column"], require=("N", "D", "loss", "x", "r"))
    quality = progressive_extrapolation(table, form=s["form"], r_range=s["r_range"],
                                        huber_delta=s["huber_delta"],
                                        size_tol=s["size_tolerance"],
                                        min_train_sizes=s["min_train_sizes"],
                                        n_starts=s["n_starts"])
    write_csv(out, quality)
    return quality


# ---------------------------------------------------------------------------------------------
# argparse
# ---------------------------------------------------------------------------------------------

def _print(doc: Mapping[str, Any]) -> None:
    print(json.dumps(to_jsonable({k: v for k, v in doc.items() if k != "data"}), indent=2))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", required=True,
                        help="runs table (CSV): runs.csv columns or N, D, loss, x, r")
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument("--loss-column", default=FIT_DEFAULTS["loss_column"],
                        help="loss column when not named 'loss' (default val_loss)")
    parser.add_argument("--huber-delta", type=float, default=FIT_DEFAULTS["huber_delta"])
    parser.add_argument("--seed", type=int, default=FIT_DEFAULTS["seed"])


def _settings(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    return {"loss_column": args.loss_column, "huber_delta": args.huber_delta,
            "seed": args.seed, **extra}


def _run_chinchilla(args: argparse.Namespace) -> int:
    doc = chinchilla_stage(args.runs, args.out,
                           _settings(args, bootstrap=args.bootstrap,
                                     compute_budgets=args.compute_budgets),
                           plot=args.plot, workers=args.workers,
                           extra_provenance={"command_line": "archscale fit chinchilla"})
    _print(doc)
    return 0


def _run_conditional(args: argparse.Namespace) -> int:
    plots = {"u_curves": args.plot_u_curves, "predicted": args.plot_predicted}
    doc = conditional_stage(args.runs, args.out,
                            _settings(args, form=args.form, l_opt=args.l_opt,
                                      r_range=list(args.r_range), bootstrap=args.bootstrap),
                            chinchilla=args.chinchilla, plots=plots,
                            extra_provenance={"command_line": "archscale fit conditional"})
    _print(doc)
    return 0


def _run_quality(args: argparse.Namespace) -> int:
    table = quality_stage(args.runs, args.out,
                          _settings(args, form=args.form, r_range=list(args.r_range)))
    print(json.dumps(to_jsonable(table.to_dict(orient="records")), indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add `fit chinchilla|conditional|quality` to the main CLI's sub-command parsers."""
    fit = subparsers.add_parser("fit", help="fit scaling laws to a runs table")
    sub = fit.add_subparsers(dest="fit_command", required=True)

    chin = sub.add_parser("chinchilla", help="L(N, D) = E + A/N^alpha + B/D^beta (Approach 3)")
    _common(chin)
    chin.add_argument("--bootstrap", type=int, default=FIT_DEFAULTS["bootstrap"],
                      help="bootstrap resamples for confidence intervals (0: none)")
    chin.add_argument("--compute-budgets", type=float, nargs="+",
                      default=FIT_DEFAULTS["compute_budgets"],
                      help="FLOP budgets C = 6ND for the compute-optimal N, D")
    chin.add_argument("--workers", type=int, default=2, help="bootstrap processes")
    chin.add_argument("--plot", help="also write loss vs N and D with the fit (PNG)")
    chin.set_defaults(func=_run_chinchilla)

    cond = sub.add_parser("conditional", help="the architecture-conditional correction")
    _common(cond)
    cond.add_argument("--form", choices=("multiplicative", "additive"),
                      default=FIT_DEFAULTS["form"])
    cond.add_argument("--l-opt", choices=("chinchilla", "empirical"),
                      default=FIT_DEFAULTS["l_opt"], help="reference loss L_opt(N, D)")
    cond.add_argument("--chinchilla", help="a chinchilla.json to use instead of fitting one")
    cond.add_argument("--r-range", type=float, nargs=2, default=FIT_DEFAULTS["r_range"],
                      metavar=("LOW", "HIGH"), help="fit runs with r_mlp/attn in this range")
    cond.add_argument("--bootstrap", type=int, default=FIT_DEFAULTS["bootstrap"])
    cond.add_argument("--plot-u-curves", help="also write the U-curves (PNG)")
    cond.add_argument("--plot-predicted", help="also write predicted vs observed (PNG)")
    cond.set_defaults(func=_run_conditional)

    qual = sub.add_parser("quality", help="progressive extrapolation over model sizes (CSV)")
    _common(qual)
    qual.add_argument("--form", choices=("multiplicative", "additive"),
                      default=FIT_DEFAULTS["form"])
    qual.add_argument("--r-range", type=float, nargs=2, default=FIT_DEFAULTS["r_range"],
                      metavar=("LOW", "HIGH"))
    qual.set_defaults(func=_run_quality)


def main(argv: list[str] | None = None) -> int:
    """Run the fit commands on their own: python -m archscale.cli.fit fit chinchilla ..."""
    parser = argparse.ArgumentParser(prog="archscale")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
