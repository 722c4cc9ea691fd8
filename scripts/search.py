"""Snakemake `script:` for the frontier search (rule search); the logic is
archscale.search.study.run_study_search and the files archscale.search.outputs, which
`archscale search` runs too."""
import pandas as pd

from archscale.architecture import Architecture
from archscale.fit.conditional import load_conditional
from archscale.io import read_json
from archscale.provenance import now
from archscale.search.outputs import write_search_outputs
from archscale.search.plots import plot_frontier
from archscale.search.study import SearchSettings, run_study_search, score_rows
from archscale.throughput.model import load_calibration
from archscale.workflow.snakemake import log_to

sm = snakemake  # noqa: F821
with log_to(sm.log[0]) as log:
    started = now()
    p = sm.params.settings
    archs = [Architecture(**spec) for spec in p["architectures"].values()]
    settings = SearchSettings(search=p["search"], throughput=p["throughput"], architectures=archs,
                              tokens=float(p["tokens"]),
                              law=load_conditional(sm.input.conditional),
                              calibration=load_calibration(sm.input.calibration),
                              throughput_error=read_json(sm.input.calibration).get(
                                  "leave_one_out"))
    result, inputs = run_study_search(settings, runs=pd.read_csv(sm.input.runs),
                                      measured=pd.read_csv(sm.input.throughput))
    write_search_outputs(result, inputs.law, sm.output, quality=pd.read_csv(sm.input.quality),
                         settings=p, inputs=list(sm.input), started=started)
    trained = score_rows(pd.DataFrame([{**a.shape(), "vocab_size": a.vocab_size, "budget": 0.0,
                                        "architecture": a.name} for a in archs]), inputs)
    plot_frontier(result["candidates"], result["pareto"], result["recommendations"], trained,
                  sm.output.plot)
    log.info("search: %d candidates, %d on the frontier", len(result["candidates"]),
             len(result["pareto"]))
