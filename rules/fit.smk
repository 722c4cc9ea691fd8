# Law fitting: Chinchilla L_opt(N, D), the architecture-conditional correction, fit quality.
# All read results/runs.csv; params are the `fit` section and the fitting code's hash only.
# The proposals (last rule) read the fitted law and the study's job durations.

from archscale.search.proposals import proposals_params


rule fit_chinchilla:
    input:
        runs=table("results/runs.csv"),
    output:
        json="results/fits/chinchilla.json",
        plot=report("results/plots/chinchilla.png", category="Fits",
                    caption="../report/chinchilla.rst"),
        svg="results/plots/chinchilla.svg",  # every figure is also written as SVG (figures.py)
    params:
        fit=fit_params(STUDY, "fit_chinchilla"),
        code=code_version("fit"),
    log:
        "logs/fits/chinchilla.log",
    benchmark:
        "logs/benchmarks/fit_chinchilla.tsv"
    threads: 2
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/fit_chinchilla.py"


rule fit_conditional:
    input:
        runs=table("results/runs.csv"),
        chinchilla=table("results/fits/chinchilla.json"),
    output:
        json="results/fits/conditional.json",
        u_curves=report("results/plots/u_curves.png", category="Fits",
                        caption="../report/u_curves.rst"),
        predicted=report("results/plots/predicted_vs_observed.png", category="Fits",
                         caption="../report/predicted.rst"),
        svg=["results/plots/u_curves.svg", "results/plots/predicted_vs_observed.svg"],
    params:
        fit=fit_params(STUDY, "fit_conditional"),
        code=code_version("fit"),
    log:
        "logs/fits/conditional.log",
    benchmark:
        "logs/benchmarks/fit_conditional.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/fit_conditional.py"


rule fit_quality:
    input:
        runs=table("results/runs.csv"),
    output:
        csv="results/fits/quality.csv",
    params:
        fit=fit_params(STUDY, "fit_quality"),
        code=code_version("fit"),
    log:
        "logs/fits/quality.log",
    benchmark:
        "logs/benchmarks/fit_quality.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/fit_quality.py"


rule fit_forms:
    input:
        runs=table("results/runs.csv"),
    output:
        json="results/fits/forms.json",
    params:
        fit=fit_params(STUDY, "fit_forms"),
        code=code_version("fit"),
    log:
        "logs/fits/forms.log",
    benchmark:
        "logs/benchmarks/fit_forms.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/fit_forms.py"


rule verdicts:
    input:
        forms="results/fits/forms.json",
        recommendations="results/recommendations.json",
        throughput="results/throughput.csv",
        # the trained optimum, when optimum_check.enabled (rules/optimum_check.smk)
        check=["results/optimum_check/runs.csv"] if OPTIMUM_CHECK["enabled"] else [],
        # whether the lr rule transfers, when lr_check.enabled (rules/lr_check.smk)
        lr_check=["results/lr_check/transfer.csv"] if LR_CHECK["enabled"] else [],
    output:
        json="results/fits/verdicts.json",
    params:
        code=code_version("fit"),
    log:
        "logs/fits/verdicts.log",
    benchmark:
        "logs/benchmarks/verdicts.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/verdicts.py"


# The runs that would narrow the x* and r* intervals most per device-hour, after every study
# (archscale.search.proposals); nothing upstream of the search reads it.
rule proposals:
    input:
        runs=table("results/runs.csv"),
        conditional="results/fits/conditional.json",
        # the evaluate jobs' durations price a proposed run's evaluation (the cost model)
        evals=run_paths(f"{RUN}/eval.json"),
    output:
        csv="results/proposals.csv",
    params:
        settings=proposals_params(STUDY),
        code=code_version("proposals"),
    log:
        "logs/fits/proposals.log",
    benchmark:
        "logs/benchmarks/proposals.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/proposals.py"
