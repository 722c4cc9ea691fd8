# The report's Training, Data and Throughput figures and its tables (snakemake --report
# results/report.html). Each reads finished tables only; none feeds a fit or the search.

from archscale.workflow.report_front_page import report_mode, write_front_page

# `snakemake --report` opens on the study's answer: the global report text is written from the
# results as they are now (archscale.workflow.report_front_page). A report made before rule `all`
# has run (right after `snakemake --cores 2 results/pareto.csv`) shows what exists.
REPORT_MODE = report_mode(sys.argv)
FRONT_PAGE = ".snakemake/archscale/report_front_page.rst"
if REPORT_MODE:
    workflow.report(str(write_front_page("results", FRONT_PAGE)))


def shown_in_report(paths):
    """`paths`, less those not built yet when this read of the Snakefile only makes a report."""
    return [p for p in paths if REPORT_MODE != "report" or os.path.exists(p)]


rule training_curves:
    input:
        logs=run_paths(f"{RUN}/train_log.csv"),
    output:
        report("results/plots/training_curves.png", category="Training",
               caption="../report/training_curves.rst"),
        "results/plots/training_curves.svg",  # every figure is also written as SVG (figures.py)
    params:
        runs=STUDY.runs(),
        code=code_version("report"),
    log:
        "logs/report/training_curves.log",
    benchmark:
        "logs/benchmarks/training_curves.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/report_training.py"


rule data_summary:
    input:
        meta=f"{DATA}/meta.json",
        tokenizer=f"{DATA}/tokenizer/tokenizer_config.json",
    output:
        report(f"{DATA}/summary.csv", category="Data", caption="../report/data_summary.rst"),
    params:
        data=config["data"],
        code=code_version("report"),
    log:
        "logs/report/data_summary.log",
    benchmark:
        "logs/benchmarks/data_summary.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/report_data.py"


rule throughput_plot:
    input:
        "results/throughput.csv",
    output:
        report("results/plots/throughput.png", category="Throughput",
               caption="../report/throughput.rst"),
        "results/plots/throughput.svg",
    params:
        code=code_version("report"),
    log:
        "logs/report/throughput.log",
    benchmark:
        "logs/benchmarks/throughput_plot.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/report_throughput.py"


# The tables people read, as HTML pages rounded for reading (archscale.tables); the CSVs keep
# full precision for the stages that read them.
REPORT_TABLE_CAPTIONS = {"pareto": "report/pareto_table.rst",
                         "answer": "report/recommendations_table.rst",
                         "runs": "report/runs.rst", "quality": "report/quality_table.rst"}


def caption_digest(paths):
    """sha256 (16 hex digits) of the caption files' text, in order."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(open(os.path.join(workflow.basedir, path), "rb").read())
    return digest.hexdigest()[:16]


rule report_tables:
    input:
        pareto="results/pareto.csv",
        recommendations="results/recommendations.json",
        runs="results/runs.csv",
        quality="results/fits/quality.csv",
    output:
        pareto=report("results/report/pareto.html", category="Search",
                      caption=f"../{REPORT_TABLE_CAPTIONS['pareto']}"),
        answer=report("results/report/recommendations.html", category="Search",
                      caption=f"../{REPORT_TABLE_CAPTIONS['answer']}"),
        runs=report("results/report/runs.html", category="Training",
                    caption=f"../{REPORT_TABLE_CAPTIONS['runs']}"),
        quality=report("results/report/quality.html", category="Fits",
                       caption=f"../{REPORT_TABLE_CAPTIONS['quality']}"),
    params:
        # each page shows its caption's text (the report shows captions only on a click): the
        # files, relative to the workflow folder, and a hash of their text, so that an edited
        # caption rewrites the pages (a path as an input would differ in every copied study)
        captions=REPORT_TABLE_CAPTIONS,
        captions_sha=caption_digest(REPORT_TABLE_CAPTIONS.values()),
        code=code_version("report"),
    log:
        "logs/report/tables.log",
    benchmark:
        "logs/benchmarks/report_tables.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/report_tables.py"


# The figures and tables of the report besides the fits and the search (rule all asks for them;
# a report made before rule all ran leaves out those not built yet).
REPORT_EXTRAS = shown_in_report(["results/plots/training_curves.png", f"{DATA}/summary.csv",
                                 "results/plots/throughput.png", *rules.report_tables.output])
