"""The serving engines that measure throughput: one interface (base), one module per engine
(torch, vllm, sglang) and the registry that names them and imports each only when asked.

Each engine module imports its engine package only when it measures, so this package imports
anywhere (the vLLM and SGLang environments, and CPU machines without either).
"""
