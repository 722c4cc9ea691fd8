# The closed loop (loop.enabled; off by default): after the study, train the runs
# results/proposals.csv ranks first, refit, re-check the verdicts and propose again, round after
# round, until the targets are met, the rounds are done or the device-hour budget is spent
# (archscale.search.design_loop decides; archscale.search.loop_rounds lays out the files).
# Round k's checkpoint (loop_round) decides from round k-1's fit (round 0: the study's own);
# once it has run, Snakemake schedules the round's runs with the study's own rules (`use rule
# ... with:`), the round's runs.csv, its fits, search, verdicts and proposals, and then the
# next round's decision. results/loop/rounds.csv walks the rounds until one says stop.
# Nothing here feeds back into the study's own runs.csv, fits or search.

from archscale.search.design_loop import DesignLoopError, LoopSettings
from archscale.search.loop_rounds import LOOP_DIR, round_files, unique_runs

LOOP = config["loop"]
try:  # a bad loop setting fails at load, before any run, with the key and the fix
    LoopSettings.from_config(LOOP)
except DesignLoopError as exc:
    raise WorkflowError(f"{CONFIG_SOURCE}: {exc}") from None
LRUN = f"{LOOP_DIR}/runs/{{larch}}/{{tokens}}/seed{{seed}}"
ROUND = f"{LOOP_DIR}/round{{k}}"


def loop_architecture(wildcards):
    """A loop run's architecture: a configured one (another seed of it) or a proposed shape,
    whose name is its shape."""
    return STUDY.named_architecture(wildcards.larch)


def loop_training_settings(wildcards):
    """A configured architecture keeps its own overrides; a proposed shape has none."""
    return STUDY.named_training_settings(wildcards.larch)


def loop_round_inputs(wildcards):
    """Round k decides from round k-1's proposals, interval widths and verdicts, and from the
    device-hours spent by the rounds before it (the previous decision)."""
    if not LOOP["enabled"]:
        raise WorkflowError(f"{LOOP_DIR}/ is the closed loop's, which is off in "
                            f"{CONFIG_SOURCE}: set loop.enabled: true there to build it")
    k = int(wildcards.k)
    if k < 1:
        raise WorkflowError(f"{LOOP_DIR}/round0 does not exist: round 0 is the study itself; "
                            "the loop's rounds are numbered from 1")
    before = round_files(k - 1)
    files = {key: before[key] for key in ("proposals", "conditional", "verdicts")}
    if k > 1:
        files["previous"] = f"{LOOP_DIR}/round{k - 1}/decision.json"
    return files


checkpoint loop_round:
    input:
        unpack(loop_round_inputs),
    output:
        plan=f"{ROUND}/plan.csv",
        decision=f"{ROUND}/decision.json",
    params:
        loop=STUDY.settings.loop.params("loop_round"),
        round=lambda wildcards: int(wildcards.k),
        code=code_version("loop"),
    log:
        "logs/loop/round{k}/decision.log",
    benchmark:
        "logs/benchmarks/loop/round{k}/decision.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/loop_round.py"


def loop_plans(k):
    """The plan.csv of rounds 1..k (each read once its checkpoint has run)."""
    return [checkpoints.loop_round.get(k=str(j)).output.plan for j in range(1, k + 1)]


def loop_runs_inputs(wildcards):
    """The study's runs.csv, and every run the rounds up to k planned: config, metrics, eval."""
    plans = loop_plans(int(wildcards.k))
    runs = unique_runs(plans)
    run_file = lambda name, t, s, f: f"{LOOP_DIR}/runs/{name}/{t}/seed{s}/{f}"
    return {"study": "results/runs.csv", "plans": plans,
            "configs": [f"{LOOP_DIR}/architectures/{n}/config.json" for n, _, _ in runs],
            "metrics": valid_json([run_file(*run, "metrics.json") for run in runs]),
            "evals": valid_json([run_file(*run, "eval.json") for run in runs])}


use rule architecture_config as loop_config with:
    input:
        study_checks,
    output:
        f"{LOOP_DIR}/architectures/{{larch}}/config.json",
    params:
        arch=arch_params(loop_architecture),
    log:
        "logs/loop/architectures/{larch}.log",
    benchmark:
        "logs/benchmarks/loop_config/{larch}.tsv"


use rule train as loop_train with:
    input:
        arch=f"{LOOP_DIR}/architectures/{{larch}}/config.json",
        train=f"{DATA}/train.bin",
        meta=f"{DATA}/meta.json",
        tokenizer=f"{DATA}/tokenizer/tokenizer.json",
        tokenizer_config=f"{DATA}/tokenizer/tokenizer_config.json",
    output:
        model=f"{LRUN}/model/model.safetensors",
        config=f"{LRUN}/model/config.json",
        tokenizer=f"{LRUN}/model/tokenizer.json",
        tokenizer_config=f"{LRUN}/model/tokenizer_config.json",
        log_csv=f"{LRUN}/train_log.csv",
        metrics=f"{LRUN}/metrics.json",
    params:
        arch=arch_params(loop_architecture),
        training=training_params(loop_training_settings),
        tokens=run_tokens,
        seed=run_seed,
        seq_len=SEQ_LEN,
        label=lambda wildcards: {"arch": wildcards.larch, "loop": True},
        resume=lambda wildcards: (f"{LOOP_DIR}/resume/{wildcards.larch}/{wildcards.tokens}/"
                                  f"seed{wildcards.seed}"),
        code=code_version("train"),
    threads: training_threads(loop_training_settings)
    resources:
        mem_mb=training_mem_mb(loop_architecture, loop_training_settings),
        runtime=training_runtime(loop_architecture, loop_training_settings, run_tokens),
        gpu=training_gpu_request(loop_training_settings),
        nodes=training_nodes(loop_training_settings),
        slurm_extra=training_slurm_extra(loop_training_settings),
    log:
        "logs/loop/train/{larch}/{tokens}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/loop/train/{larch}/{tokens}/seed{seed}.tsv"


use rule evaluate as loop_evaluate with:
    input:
        model=f"{LRUN}/model/model.safetensors",
        config=f"{LRUN}/model/config.json",
        tokenizer=f"{LRUN}/model/tokenizer.json",
        val=f"{DATA}/val.bin",
        meta=f"{DATA}/meta.json",
        task_yamls=local_task_files,
        task_data=[f"{MC_DIR}/corpus_mc.jsonl"] if "corpus_mc" in EVAL_TASKS else [],
    output:
        f"{LRUN}/eval.json",
    params:
        evaluation=evaluation_params(STUDY),
        seq_len=SEQ_LEN,
        label=lambda wildcards: {"arch": wildcards.larch, "tokens": run_tokens(wildcards),
                                 "seed": run_seed(wildcards)},
        code=code_version("evaluate"),
    resources:
        mem_mb=evaluation_mem_mb(loop_architecture),
        gpu=evaluation_gpu(loop_training_settings),
    log:
        "logs/loop/evaluate/{larch}/{tokens}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/loop/evaluate/{larch}/{tokens}/seed{seed}.tsv"


rule loop_runs:
    input:
        unpack(loop_runs_inputs),
    output:
        f"{ROUND}/runs.csv",
    params:
        tasks=EVAL_TASKS,
        code=code_version("loop"),
    log:
        "logs/loop/round{k}/runs.log",
    benchmark:
        "logs/benchmarks/loop/round{k}/runs.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/loop_runs.py"


# Each round's refit: the study's own fit, search and verdict rules on the round's runs.csv.
use rule fit_chinchilla as loop_fit_chinchilla with:
    input:
        runs=f"{ROUND}/runs.csv",
    output:
        json=f"{ROUND}/chinchilla.json",
    log:
        "logs/loop/round{k}/chinchilla.log",
    benchmark:
        "logs/benchmarks/loop/round{k}/chinchilla.tsv"


use rule fit_conditional as loop_fit_conditional with:
    input:
        runs=f"{ROUND}/runs.csv",
        chinchilla=f"{ROUND}/chinchilla.json",
    output:
        json=f"{ROUND}/conditional.json",
    log:
        "logs/loop/round{k}/conditional.log",
    benchmark:
        "logs/benchmarks/loop/round{k}/conditional.tsv"


use rule fit_forms as loop_fit_forms with:
    input:
        runs=f"{ROUND}/runs.csv",
    output:
        json=f"{ROUND}/forms.json",
    log:
        "logs/loop/round{k}/forms.log",
    benchmark:
        "logs/benchmarks/loop/round{k}/forms.tsv"


use rule search as loop_search with:
    input:
        conditional=f"{ROUND}/conditional.json",
        calibration="results/throughput/calibration.json",
        throughput="results/throughput.csv",
        runs=f"{ROUND}/runs.csv",
        quality="results/fits/quality.csv",
    output:
        candidates=f"{ROUND}/candidates.csv",
        pareto=f"{ROUND}/pareto.csv",
        recommendations=f"{ROUND}/recommendations.json",
        plot=f"{ROUND}/frontier.png",
        svg=f"{ROUND}/frontier.svg",
    log:
        "logs/loop/round{k}/search.log",
    benchmark:
        "logs/benchmarks/loop/round{k}/search.tsv"


use rule verdicts as loop_verdicts with:
    input:
        forms=f"{ROUND}/forms.json",
        recommendations=f"{ROUND}/recommendations.json",
        throughput="results/throughput.csv",
        check=[],
        lr_check=["results/lr_check/transfer.csv"] if LR_CHECK["enabled"] else [],
    output:
        json=f"{ROUND}/verdicts.json",
    log:
        "logs/loop/round{k}/verdicts.log",
    benchmark:
        "logs/benchmarks/loop/round{k}/verdicts.tsv"


def loop_evals(wildcards):
    """Every eval.json so far, the study's and the loop's: their durations price the next
    proposals' evaluations."""
    runs = unique_runs(loop_plans(int(wildcards.k)))
    return run_paths(f"{RUN}/eval.json") + [f"{LOOP_DIR}/runs/{n}/{t}/seed{s}/eval.json"
                                            for n, t, s in runs]


use rule proposals as loop_proposals with:
    input:
        runs=f"{ROUND}/runs.csv",
        conditional=f"{ROUND}/conditional.json",
        evals=loop_evals,
    output:
        csv=f"{ROUND}/proposals.csv",
    log:
        "logs/loop/round{k}/proposals.log",
    benchmark:
        "logs/benchmarks/loop/round{k}/proposals.tsv"


def loop_chain(wildcards):
    """Every round's decision until one says stop, with the fit each decided from."""
    files = {"decisions": [], "conditionals": [], "verdicts": []}
    k = 1
    while True:
        decision = checkpoints.loop_round.get(k=str(k)).output.decision
        before = round_files(k - 1)
        files["decisions"].append(decision)
        files["conditionals"].append(before["conditional"])
        files["verdicts"].append(before["verdicts"])
        if read_json(decision)["stop"]:
            return files
        k += 1


rule loop_rounds:
    input:
        unpack(loop_chain),
    output:
        csv=f"{LOOP_DIR}/rounds.csv",
        plot=report("results/plots/loop_rounds.png", category="Loop",
                    caption="../report/loop_rounds.rst"),
        svg="results/plots/loop_rounds.svg",
    params:
        code=code_version("loop"),
    log:
        "logs/loop/rounds.log",
    benchmark:
        "logs/benchmarks/loop/rounds.tsv"
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/loop_rounds.py"
