"""The serving engines that measure throughput: one interface (base) and three engines.

Each engine module imports its engine package only when it measures, so this package imports
anywhere (the vLLM and SGLang environments, and CPU machines without either).
"""
