"""The sbatch command lines of the SLURM profile's jobs, built by the installed plugin itself.

No cluster is needed. `snakemake -n` switches to the dry-run executor and never calls the SLURM
plugin, and GPUs cannot be faked on the CI cluster, so the GPU arguments are checked here: a job
carrying the resources that Snakemake would give it is handed to the plugin's own
`Executor.run_job` (snakemake-executor-plugin-slurm 2.x), with `subprocess.Popen` replaced so that
the sbatch command is recorded instead of run. The resources come from slurm/config.v8+.yaml,
rendered and parsed by Snakemake's own profile and resource parsers.
"""
from __future__ import annotations

import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import snakemake_executor_plugin_slurm as slurm_plugin
import yaml
from snakemake.cli import get_profile_dir, parse_set_resources
from snakemake.iocontainers import ResourceList
from snakemake.profiles import ProfileConfigFileParser
from snakemake.resources import Resources
from snakemake_executor_plugin_slurm import Executor, ExecutorSettings

from archscale.training.launch import (node_torchrun_command, slurm_training_request,
                                       srun_nodes_command)

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "slurm" / "config.v8+.yaml"
CPU_PROFILE = REPO / "tests" / "slurm_cpu_profile" / "config.v8+.yaml"
GPU_RULES = ("train", "throughput", "validation_train", "validation_throughput",
             "optimum_check_train")
CPU_RULES = ("tokenize_shard", "evaluate", "validation_evaluate", "optimum_check_evaluate")


# --------------------------------------------------------------------------------------- helpers
def profile_args(path: Path) -> dict:
    """The profile as Snakemake reads it: YTE-rendered, one CLI value (or list) per option."""
    with open(path) as handle:
        return dict(ProfileConfigFileParser().parse(handle))


def site_variables() -> dict:
    """The SITE SETTINGS block (`__variables__`) of the GPU profile, as the user edits it."""
    return yaml.safe_load(PROFILE.read_text())["__variables__"]


def job_resources(args: dict, rule: str, threads: int) -> dict:
    """The resources Snakemake gives a job of `rule` that declares no resources of its own:
    default-resources overridden by set-resources, each evaluated as Snakemake does."""
    merged = dict(Resources.parse(args.get("default-resources", []), allow_expressions=True).items())
    overrides = parse_set_resources(args.get("set-resources", [])).get(rule)
    if overrides is not None:
        merged.update(overrides.items())
    values = {}
    for name, resource in merged.items():
        evaluated = resource.evaluate(wildcards={}, input=[], attempt=1, threads=threads,
                                      rulename=rule, async_run=None)
        values[name] = evaluated.value
    return values


def executor_settings(args: dict) -> ExecutorSettings:
    """The plugin's settings from the profile's `slurm-*` keys (a typo there raises TypeError)."""
    settings = {}
    for key, value in args.items():
        if key.startswith("slurm-"):
            field = key[len("slurm-"):].replace("-", "_")
            parsed = yaml.safe_load(value) if isinstance(value, str) else value
            settings[field] = Path(parsed) if field in ("logdir", "partition_config") else parsed
    return ExecutorSettings(**settings)


class MockJob:
    """What the plugin reads from a Snakemake job when it builds the sbatch call."""

    def __init__(self, rule: str, resources: dict, threads: int = 1, wildcards=("s-x08", "0")):
        self.name = rule
        self.rule = SimpleNamespace(name=rule)
        self.jobid = 7
        self.threads = threads
        self.wildcards = list(wildcards)
        self.resources = ResourceList(fromdict=resources)

    def is_group(self) -> bool:
        return False


def sbatch_argv(job: MockJob, settings: ExecutorSettings, workdir: Path,
                monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the plugin's Executor.run_job on `job`; return the sbatch argv it would execute."""
    calls: list[str] = []
    real_popen = subprocess.Popen

    class SubmittedProcess:
        returncode = 0

        def communicate(self, input=None):
            return "4242\n", ""

    def popen(command, *args, **kwargs):
        if isinstance(command, str) and command.startswith("sbatch "):
            calls.append(command)
            return SubmittedProcess()
        return real_popen(command, *args, **kwargs)  # e.g. `scontrol show config`

    monkeypatch.setattr(slurm_plugin.subprocess, "Popen", popen)
    # Account checks would ask sacctmgr/sshare/sacct; a given account is taken as valid and
    # no account is guessed when none is given.
    monkeypatch.setattr(slurm_plugin, "validate_account", lambda account, logger: account)
    monkeypatch.setattr(slurm_plugin, "get_account", lambda logger: None)
    # `scontrol show config` (job-array limit) waits ~10 s on a machine whose controller is down
    if hasattr(slurm_plugin, "get_max_array_size"):
        monkeypatch.setattr(slurm_plugin, "get_max_array_size", lambda: 1000)

    monkeypatch.chdir(workdir)  # the plugin's default log directory is relative to the cwd
    executor = Executor.__new__(Executor)  # __init__ would start Snakemake's scheduler threads
    executor.workflow = SimpleNamespace(executor_settings=settings, workdir_init=str(workdir))
    executor.logger = logging.getLogger("test_slurm_submit_args")
    executor.__post_init__(test_mode=True)
    submitted, errors = [], []
    executor.report_job_submission = submitted.append
    executor.report_job_error = lambda info, msg=None, **kw: errors.append(msg)
    executor.format_job_exec = lambda j: f"python -m snakemake --target-jobs '{j.name}:arch=s-x08'"

    executor.run_job(job)

    assert not errors, f"the plugin refused the job: {errors}"
    assert len(calls) == 1, f"expected one sbatch call, got {calls}"
    assert len(submitted) == 1 and submitted[0].external_jobid == "4242"
    argv = shlex.split(calls[0])
    assert argv[0] == "sbatch"
    print(f"\n{job.name}: {' '.join(a for a in argv if not a.startswith('--wrap='))}")
    return argv


def option(argv: list[str], flag: str) -> str:
    """The value of a short option given as two words (`-p gpu`)."""
    assert argv.count(flag) == 1, f"expected exactly one {flag} in {argv}"
    return argv[argv.index(flag) + 1]


def gpu_flags(argv: list[str]) -> list[str]:
    return [a for a in argv if re.match(r"--(gpus|gres|gpus-per-\w+)=", a)]


# ----------------------------------------------------------------------- the plugin's own output
def test_train_like_job_requests_its_gpu(tmp_path, monkeypatch):
    """gpu=1, gpu_model=h100, cpus_per_gpu=8: the 2.x plugin emits --gpus=<model>:<n>."""
    job = MockJob("train", {"slurm_partition": "gpu", "slurm_account": "proj123",
                            "runtime": 1440, "mem_mb": 64000, "gpu": 1, "gpu_model": "h100",
                            "cpus_per_gpu": 8}, threads=8)
    argv = sbatch_argv(job, ExecutorSettings(), tmp_path, monkeypatch)
    assert gpu_flags(argv) == ["--gpus=h100:1"]
    assert "--cpus-per-gpu=8" in argv
    assert not any(a.startswith("--cpus-per-task") for a in argv)
    assert option(argv, "-p") == "gpu"
    assert option(argv, "-A") == "proj123"
    assert option(argv, "-t") == "1440"
    assert option(argv, "--mem") == "64000"
    assert option(argv, "-D") == str(tmp_path)
    assert any(a.startswith("--wrap=") and "--target-jobs" in a for a in argv)


def test_cpus_per_task_would_shadow_cpus_per_gpu(tmp_path, monkeypatch):
    """Why the profile sets cpus_per_task: 0 on GPU rules: the plugin prefers cpus_per_task."""
    resources = {"slurm_partition": "gpu", "runtime": 60, "mem_mb": 1000, "gpu": 1,
                 "gpu_model": "h100", "cpus_per_gpu": 8}
    shadowed = sbatch_argv(MockJob("throughput", {**resources, "cpus_per_task": 4}),
                           ExecutorSettings(), tmp_path, monkeypatch)
    assert "--cpus-per-task=4" in shadowed and "--cpus-per-gpu=8" not in shadowed
    zeroed = sbatch_argv(MockJob("throughput", {**resources, "cpus_per_task": 0}),
                         ExecutorSettings(), tmp_path, monkeypatch)
    assert "--cpus-per-gpu=8" in zeroed
    assert not any(a.startswith("--cpus-per-task") for a in zeroed)


def test_cpu_job_requests_no_gpu(tmp_path, monkeypatch):
    job = MockJob("evaluate", {"slurm_partition": "cpu", "runtime": 240, "mem_mb": 32000,
                               "cpus_per_task": 2}, threads=2)
    argv = sbatch_argv(job, ExecutorSettings(), tmp_path, monkeypatch)
    assert gpu_flags(argv) == []
    assert "--cpus-per-task=2" in argv and "--ntasks=1" in argv
    assert option(argv, "-p") == "cpu"


# ------------------------------------------------------------------- the profile in slurm/ itself
def test_snakemake_resolves_profile_name_to_this_file(monkeypatch):
    """`--profile slurm` typed in the repository root reads slurm/config.v8+.yaml."""
    monkeypatch.chdir(REPO)
    found = get_profile_dir("slurm")
    assert found is not None, "snakemake finds no profile named 'slurm' in the repository root"
    assert Path(found[1]).resolve() == PROFILE


def test_no_workflow_profile_overrides_it():
    """A profiles/default/ folder would be applied on top of slurm/ and win on its keys."""
    assert not (REPO / "profiles" / "default").exists()


def test_profile_parses_and_sets_the_cluster_basics():
    raw = yaml.safe_load(PROFILE.read_text())
    assert isinstance(raw, dict)
    args = profile_args(PROFILE)
    assert args["executor"] == "slurm"
    assert yaml.safe_load(args["rerun-incomplete"]) is True
    assert yaml.safe_load(args["keep-going"]) is True
    assert 0 <= int(args["retries"]) <= 1
    assert int(args["latency-wait"]) >= 5
    assert str(executor_settings(args).logdir).startswith("logs")
    for key in ("slurm_partition", "runtime", "mem_mb", "cpus_per_task"):
        assert any(r.startswith(key + "=") for r in args["default-resources"]), key
    variables = site_variables()
    assert set(variables) == {"cpu_partition", "gpu_partition", "account", "gpu_model"}


def test_set_resources_name_real_rules():
    """Snakemake silently ignores set-resources for a rule name that does not exist."""
    sources = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    text = "\n".join(p.read_text() for p in sources if p.exists())
    rules = set(re.findall(r"^\s*(?:local)?(?:rule|checkpoint)\s+(\w+)\s*:", text,
                           flags=re.M))
    rules |= set(re.findall(r"^use rule \w+ as (\w+) with:", text, flags=re.M))
    assert rules, f"no rules found in {REPO / 'Snakefile'} or {REPO / 'rules'}/*.smk"
    for path in (PROFILE, CPU_PROFILE):
        named = {entry.split(":", 1)[0] for entry in profile_args(path)["set-resources"]}
        assert named <= rules, f"{path.name} sets resources of unknown rules {named - rules}"


def rule_resources(args: dict, rule: str, threads: int, training: dict | None = None) -> dict:
    """A job's resources as Snakemake merges them: default-resources, then the rule's own (the
    training rules' GPU request from the config's training.gpus and nodes), then
    set-resources."""
    merged = dict(Resources.parse(args.get("default-resources", []), allow_expressions=True)
                  .items())
    values = {name: r.evaluate(wildcards={}, input=[], attempt=1, threads=threads,
                               rulename=rule, async_run=None).value for name, r in merged.items()}
    if rule in ("train", "validation_train", "optimum_check_train"):
        values.update(slurm_training_request(training or {"gpus": 0, "nodes": 1}))
        values.update(runtime=1440, mem_mb=64000)  # the rule's own, sized by the architecture
    overrides = parse_set_resources(args.get("set-resources", [])).get(rule)
    if overrides is not None:
        for name, r in overrides.items():
            values[name] = r.evaluate(wildcards={}, input=[], attempt=1, threads=threads,
                                      rulename=rule, async_run=None).value
    return {k: v for k, v in values.items() if v != ""}


@pytest.mark.parametrize("rule", GPU_RULES)
def test_profile_gpu_rules_request_a_gpu(rule, tmp_path, monkeypatch):
    args = profile_args(PROFILE)
    site = site_variables()
    resources = rule_resources(args, rule, threads=8)
    assert int(resources["gpu"]) >= 1
    argv = sbatch_argv(MockJob(rule, resources, threads=8), executor_settings(args), tmp_path,
                       monkeypatch)
    expected = f"--gpus={site['gpu_model']}:{resources['gpu']}" if site["gpu_model"] \
        else f"--gpus={resources['gpu']}"
    assert gpu_flags(argv) == [expected]
    assert f"--cpus-per-gpu={resources['cpus_per_gpu']}" in argv
    assert not any(a.startswith("--cpus-per-task") for a in argv)
    assert option(argv, "-p") == site["gpu_partition"]
    if site["account"]:
        assert option(argv, "-A") == site["account"]
    assert option(argv, "-t") == str(resources["runtime"])
    assert option(argv, "--mem") == str(resources["mem_mb"])
    assert "--requeue" in argv  # slurm-requeue: a preempted job goes back to the queue
    assert option(argv, "--output").startswith(str(tmp_path / "logs"))


@pytest.mark.parametrize("rule", CPU_RULES)
def test_profile_cpu_rules_request_no_gpu(rule, tmp_path, monkeypatch):
    args = profile_args(PROFILE)
    site = site_variables()
    resources = job_resources(args, rule, threads=2)
    argv = sbatch_argv(MockJob(rule, resources, threads=2), executor_settings(args), tmp_path,
                       monkeypatch)
    assert gpu_flags(argv) == []
    assert "--cpus-per-task=2" in argv  # cpus_per_task: threads
    assert option(argv, "-p") == site["cpu_partition"]
    assert option(argv, "--mem") == str(resources["mem_mb"])


@pytest.mark.parametrize("rule", GPU_RULES + CPU_RULES)
def test_cpu_test_profile_removes_every_gpu_request(rule, tmp_path, monkeypatch):
    """`--profile slurm --profile tests/slurm_cpu_profile`: the later profile replaces whole
    top-level keys, so the GPU entries of slurm/ are gone and jobs fit the one-node cluster."""
    cpu = profile_args(CPU_PROFILE)
    assert cpu["slurm-status-command"] == "squeue"  # no accounting on the test cluster
    assert int(cpu["slurm-init-seconds-before-status-checks"]) <= 2
    merged = {**profile_args(PROFILE), **cpu}
    resources = rule_resources(merged, rule, threads=1)
    assert not {"gpu_model", "cpus_per_gpu", "gres"} & set(resources)
    assert int(resources.get("gpu", 0)) == 0
    argv = sbatch_argv(MockJob(rule, resources), executor_settings(merged), tmp_path, monkeypatch)
    assert gpu_flags(argv) == []
    assert option(argv, "-p") == "debug"
    assert "--cpus-per-task=1" in argv
    assert "--requeue" not in argv


@pytest.mark.workflow
def test_dry_run_of_the_verbatim_command_plans_gpu_jobs():
    """`snakemake --profile slurm -n results/pareto.csv` in the repository root: no SLURM needed
    (dry runs use the dry-run executor); Snakemake's own resource merge gives train a GPU."""
    if not (REPO / "Snakefile").exists():
        pytest.fail(f"{REPO / 'Snakefile'} does not exist")
    # --forceall: plan every job even where results/ already holds outputs of a local run.
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "slurm", "-n",
                           "--forceall", "results/pareto.csv"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    site = site_variables()
    blocks = re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\S|\Z)", out, flags=re.M | re.S)
    train = [body for name, body in blocks if name == "train"]
    assert train, f"the dry run plans no train job:\n{out[-4000:]}"
    for body in train:
        assert "gpu=1" in body and f"slurm_partition={site['gpu_partition']}" in body, body


# ------------------------------------------------------------------- training on several nodes
def test_four_node_training_job_takes_whole_nodes_with_one_task_each(tmp_path, monkeypatch):
    """training.gpus: 8, nodes: 4 (the 3B run of docs/slurm.md) through the real profile: the
    plugin's --gpus is a total, so 32; one task per node, the node's torchrun; no
    --ntasks-per-gpu (the plugin would send `tasks` as that on a GPU job)."""
    args = profile_args(PROFILE)
    site = site_variables()
    resources = rule_resources(args, "train", threads=8, training={"gpus": 8, "nodes": 4})
    argv = sbatch_argv(MockJob("train", resources, threads=8), executor_settings(args), tmp_path,
                       monkeypatch)
    model = f"{site['gpu_model']}:" if site["gpu_model"] else ""
    assert gpu_flags(argv) == [f"--gpus={model}32"]
    assert "--nodes=4" in argv and "--ntasks-per-node=1" in argv and "--exclusive" in argv
    assert not any(a.startswith(("--ntasks=", "--ntasks-per-gpu")) for a in argv), argv
    assert f"--cpus-per-gpu={resources['cpus_per_gpu']}" in argv


def test_one_node_training_job_sends_no_node_geometry(tmp_path, monkeypatch):
    args = profile_args(PROFILE)
    resources = rule_resources(args, "train", threads=8, training={"gpus": 8, "nodes": 1})
    argv = sbatch_argv(MockJob("train", resources, threads=8), executor_settings(args), tmp_path,
                       monkeypatch)
    assert "--nodes=1" in argv and "--exclusive" not in argv
    assert not any(a.startswith("--ntasks") for a in argv), argv
    assert gpu_flags(argv)[0].endswith(":8") or gpu_flags(argv) == ["--gpus=8"]


def test_node_tasks_and_their_torchruns(monkeypatch):
    """What the launcher runs inside the allocation: one srun task per node (round-robin over
    the allocation's nodes, sharing the job step's resources), each a torchrun whose c10d
    rendezvous the task with SLURM_PROCID 0 hosts."""
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "4")
    srun = srun_nodes_command("job.json", 4, 8, "node01:29500", "123", python="py")
    assert srun[:6] == ["srun", "--overlap", "--ntasks=4", "--distribution=cyclic",
                        "--kill-on-bad-exit=1", "--nodes=4"]
    assert srun[6:] == ["py", "-m", "archscale.training.launch", "--node", "--job", "job.json",
                        "--nnodes", "4", "--nproc", "8", "--endpoint", "node01:29500",
                        "--run-id", "123"]
    host = node_torchrun_command("job.json", 4, 8, "node01:29500", "123", True, python="py")
    assert host == ["py", "-m", "torch.distributed.run", "--nnodes=4", "--nproc-per-node=8",
                    "--rdzv-backend=c10d", "--rdzv-endpoint=node01:29500", "--rdzv-id=123",
                    "--rdzv-conf=is_host=true", "-m", "archscale.training.launch",
                    "--job", "job.json"]
    other = node_torchrun_command("job.json", 4, 8, "node01:29500", "123", False, python="py")
    assert "--rdzv-conf=is_host=false" in other


def test_multi_node_outside_slurm_is_a_clear_error(tmp_path, monkeypatch):
    from archscale.training.job import TrainJob
    from archscale.training.launch import execute

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    job = TrainJob(arch_config="a", train_bin="b", meta="m", tokenizer_dir="t",
                   model_dir=str(tmp_path), log_csv="l", metrics_json="j",
                   resume_dir=str(tmp_path), tokens=1, seed=0, seq_len=8, settings={})
    with pytest.raises(RuntimeError, match="needs a SLURM allocation"):
        execute(job, gpus=8, nodes=2)
