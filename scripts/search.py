"""Snakemake `script:` for the frontier search (rule search); the logic is
archscale.search.study.run_study_search, which `archscale search` runs too."""
import pandas as pd

from archscale.architecture import Architecture
from archscale.fit.conditional import load_conditional
from archscale.io import write_csv, write_json
from archscale.provenance import now, provenance
from archscale.search.plots import plot_frontier
from archscale.search.study import SearchSettings, pareto_columns, run_study_search, score_rows
from archscale.throughput.model import load_calibration
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    started = now()
    p = sm.params.settings
    archs = [Architecture(**spec) for spec in p["architectures"].values()]
    settings = SearchSettings(search=p["search"], throughput=p["throughput"], architectures=archs,
                              r_range=tuple(p["r_range"]), tokens=float(p["tokens"]),
                              law=load_conditional(sm.input.conditional),
                              calibration=load_calibration(sm.input.calibration))
    result, inputs = run_study_search(settings, runs=pd.read_csv(sm.input.runs),
                                      measured=pd.read_csv(sm.input.throughput))
    write_csv(sm.output.candidates, result["candidates"])
    write_csv(sm.output.pareto, pareto_columns(result["pareto"]))
    write_json(sm.output.recommendations, {
        "what": "per parameter budget: the baseline, the most accurate frontier architecture "
                "(Panda-like) and the fastest one at no more than the baseline's predicted loss "
                "(Surefire-like), before and after the GQA local search",
        "recommendations": result["recommendations"],
        "law": {"x_star": inputs.law.x_star, "r_star": inputs.law.r_star,
                "fit_quality": pd.read_csv(sm.input.quality).to_dict(orient="records"),
                "note": "how well the law extrapolated to a held-out larger size "
                        "(results/fits/quality.csv); check it before trusting a recommendation"},
        "provenance": provenance(settings=p, inputs=list(sm.input), started=started,
                                 packages=("numpy", "pandas", "scipy", "pulp")),
    })
    trained = score_rows(pd.DataFrame([{**a.shape(), "vocab_size": a.vocab_size, "budget": 0.0}
                                       for a in archs]), inputs)
    plot_frontier(result["candidates"], result["pareto"], result["recommendations"], trained,
                  sm.output.plot)
    log.info("search: %d candidates, %d on the frontier", len(result["candidates"]),
             len(result["pareto"]))
