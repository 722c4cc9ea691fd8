"""Write an architecture's Hugging Face config.json (Snakemake rule architecture_config)."""
from archscale.architecture import Architecture
from archscale.io import write_json
from archscale.workflow.snakemake import log_to

with log_to(snakemake.log[0]) as log:  # noqa: F821 (snakemake injects this name)
    arch = Architecture(**snakemake.params.arch)  # noqa: F821
    write_json(snakemake.output[0], arch.hf_config())  # noqa: F821
    log.info("wrote %s: N=%d r=%.3f d/sqrt(N)=%.4f", arch.name, arch.n_params_non_embedding,
             arch.r_mlp_attn, arch.d_over_sqrt_n)
