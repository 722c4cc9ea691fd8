"""archscale: architecture-conditional scaling laws for inference-efficient LLMs."""
__version__ = "0.1.0"
