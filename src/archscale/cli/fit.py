"""`archscale fit ...`: the fit stages (archscale.fit.stages) on the command line.

    archscale fit chinchilla  --runs runs.csv --out chinchilla.json [--bootstrap K] [--plot PNG]
                              [--l-opt best_shapes]
    archscale fit conditional --runs runs.csv --out conditional.json [--form FORM]
                              [--l-opt empirical|chinchilla|best_shapes]
                              [--chinchilla chinchilla.json]
    archscale fit quality     --runs runs.csv --out quality.csv [--form FORM]

FORM is any registered law form (archscale.fit.forms.names(): multiplicative, additive, ...).

Each writes --out and prints one line on stdout: the file and its headline numbers.
"""
from __future__ import annotations

import argparse
from typing import Any, Mapping

from archscale.cli.args import (csv_file, json_file, non_negative_int, output_file,
                                positive_float, positive_int)
from archscale.fit.defaults import FIT_DEFAULTS


# ---------------------------------------------------------------------------------------------
# argparse
# ---------------------------------------------------------------------------------------------

def _summary(out: str, doc: Mapping[str, Any]) -> str:
    """One line for stdout: what was written and its headline numbers."""
    warnings = len(doc.get("warnings") or [])
    tail = f"; {warnings} warning(s), see the file" if warnings else ""
    if doc.get("law") == "chinchilla":
        c = doc["coefficients"]
        fitted = doc.get("fitted_on", {}).get("points", "all_runs")
        return (f"wrote {out}: E {c['E']:.4g}, A {c['A']:.4g}, B {c['B']:.4g}, alpha "
                f"{c['alpha']:.3g}, beta {c['beta']:.3g} ({doc['data']['n_points']} points, "
                f"{fitted}){tail}")
    opt = doc["optimum"]
    return (f"wrote {out}: x* {opt['x_star']:.4g}, r* {opt['r_star']:.4g} "
            f"({doc['fit']['n_points']} runs used, L_opt {doc['l_opt']['source']}){tail}")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", required=True, type=csv_file,
                        help="runs table (CSV): runs.csv columns or N, D, loss, x, r")
    parser.add_argument("--out", required=True, type=output_file, help="output file")
    parser.add_argument("--loss-column", default=FIT_DEFAULTS["loss_column"],
                        help="loss column when not named 'loss' (default val_loss)")
    parser.add_argument("--huber-delta", type=positive_float, default=FIT_DEFAULTS["huber_delta"])
    parser.add_argument("--seed", type=non_negative_int, default=FIT_DEFAULTS["seed"])


def _form_argument(parser: argparse.ArgumentParser) -> None:
    """--form, choosing among the registered law forms (archscale.fit.forms)."""
    from archscale.fit import forms  # numpy only: --help stays light

    parser.add_argument("--form", choices=forms.names(), default=FIT_DEFAULTS["form"],
                        help="the conditional law's form (default %(default)s)")


def _settings(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    return {"loss_column": args.loss_column, "huber_delta": args.huber_delta,
            "seed": args.seed, **extra}


def _r_range(args: argparse.Namespace) -> list[float]:
    """--r-range as [low, high]; reversed bounds select no run, so they are refused here
    rather than leaving `fit quality` to report zero folds."""
    low, high = args.r_range
    if not low < high:
        raise ValueError(f"--r-range: LOW must be below HIGH, got {low:g} {high:g}; give the "
                         "bounds in increasing order, e.g. --r-range 0.5 5")
    return [low, high]


def _run_chinchilla(args: argparse.Namespace) -> int:
    from archscale.fit.stages import chinchilla_stage

    doc = chinchilla_stage(args.runs, args.out,
                           _settings(args, bootstrap=args.bootstrap, l_opt=args.l_opt,
                                     compute_budgets=args.compute_budgets),
                           plot=args.plot, workers=args.workers,
                           extra_provenance={"command_line": "archscale fit chinchilla"})
    print(_summary(args.out, doc))
    return 0


def _run_conditional(args: argparse.Namespace) -> int:
    from archscale.fit.stages import conditional_stage

    plots = {"u_curves": args.plot_u_curves, "predicted": args.plot_predicted}
    doc = conditional_stage(args.runs, args.out,
                            _settings(args, form=args.form, l_opt=args.l_opt,
                                      r_range=_r_range(args), bootstrap=args.bootstrap),
                            chinchilla=args.chinchilla, plots=plots,
                            extra_provenance={"command_line": "archscale fit conditional"})
    print(_summary(args.out, doc))
    return 0


def _run_quality(args: argparse.Namespace) -> int:
    from archscale.fit.stages import quality_stage

    table = quality_stage(args.runs, args.out,
                          _settings(args, form=args.form, r_range=_r_range(args)))
    ok = table[table["status"] == "ok"] if len(table) else table
    scores = (f"mean MSE {ok['mse'].mean():.3g}, mean Spearman {ok['spearman'].mean():.3g}"
              if len(ok) else "no fold could be evaluated")
    print(f"wrote {args.out}: {len(ok)} of {len(table)} progressive-extrapolation fold(s) "
          f"evaluated, {scores}")
    return 0


def register(subparsers: Any) -> None:
    """Add `fit chinchilla|conditional|quality` to the main CLI's sub-command parsers."""
    fit = subparsers.add_parser("fit", help="fit scaling laws to a runs table")
    sub = fit.add_subparsers(dest="fit_command", required=True)

    chin = sub.add_parser("chinchilla", help="L(N, D) = E + A/N^alpha + B/D^beta (Approach 3)")
    _common(chin)
    chin.add_argument("--bootstrap", type=non_negative_int, default=FIT_DEFAULTS["bootstrap"],
                      help="bootstrap resamples for confidence intervals (0: none)")
    chin.add_argument("--compute-budgets", type=positive_float, nargs="+",
                      default=FIT_DEFAULTS["compute_budgets"],
                      help="FLOP budgets C = 6ND for the compute-optimal N, D")
    chin.add_argument("--l-opt", choices=("chinchilla", "best_shapes", "empirical"),
                      default=FIT_DEFAULTS["l_opt"],
                      help="the L_opt source it serves: 'best_shapes' fits the lowest loss of "
                           "each size and token budget, the others every run")
    chin.add_argument("--workers", type=positive_int, default=2, help="bootstrap processes")
    chin.add_argument("--plot", type=output_file,
                      help="also write loss vs N and D with the fit (PNG)")
    chin.set_defaults(func=_run_chinchilla)

    cond = sub.add_parser("conditional", help="the architecture-conditional correction")
    _common(cond)
    _form_argument(cond)
    cond.add_argument("--l-opt", choices=("chinchilla", "best_shapes", "empirical"),
                      default=FIT_DEFAULTS["l_opt"], help="reference loss L_opt(N, D)")
    cond.add_argument("--chinchilla", type=json_file,
                      help="a chinchilla.json to use instead of fitting one")
    cond.add_argument("--r-range", type=positive_float, nargs=2, default=FIT_DEFAULTS["r_range"],
                      metavar=("LOW", "HIGH"), help="fit runs with r_mlp/attn in this range")
    cond.add_argument("--bootstrap", type=non_negative_int, default=FIT_DEFAULTS["bootstrap"])
    cond.add_argument("--plot-u-curves", type=output_file, help="also write the U-curves (PNG)")
    cond.add_argument("--plot-predicted", type=output_file,
                      help="also write predicted vs observed (PNG)")
    cond.set_defaults(func=_run_conditional)

    qual = sub.add_parser("quality", help="progressive extrapolation over model sizes (CSV)")
    _common(qual)
    _form_argument(qual)
    qual.add_argument("--r-range", type=positive_float, nargs=2, default=FIT_DEFAULTS["r_range"],
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
