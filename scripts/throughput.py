"""Measure one architecture with one engine (Snakemake rule throughput).

The measurement runs as `python -m archscale.throughput.measure` in a child process of this rule's
python (the vllm / sglang conda environment on a cluster): those engines start worker processes
that re-import the main module, and a child keeps them apart from Snakemake's script wrapper.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        import archscale
    except ImportError:  # an engine's conda env without archscale installed: use this checkout
        sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821
        import archscale
    from archscale.workflow.snakemake import log_to

    with log_to(snakemake.log[0]) as log:  # noqa: F821
        settings = dict(snakemake.params.settings)  # noqa: F821
        settings.setdefault("threads", snakemake.threads)  # noqa: F821
        src = str(Path(archscale.__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [src] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        cmd = [sys.executable, "-m", "archscale.throughput.measure",
               "--engine", snakemake.wildcards.engine,  # noqa: F821
               "--config", str(Path(snakemake.input.config).parent),  # noqa: F821
               "--out", snakemake.output[0],  # noqa: F821
               "--settings", json.dumps(settings)]
        log.info("running %s", " ".join(cmd))
        sys.stdout.flush()
        proc = subprocess.run(cmd, env=env, stdout=sys.stdout, stderr=sys.stderr)
        if proc.returncode != 0:
            raise SystemExit(f"throughput measurement failed (exit {proc.returncode}); "
                             f"see {snakemake.log[0]}")  # noqa: F821
