"""Throughput measurement: one interface (base), three engines (torch, vLLM, SGLang).

Throughput depends on the architecture only, so every engine measures the architecture's
config.json with dummy (random) weights: measurements never wait for or rerun after training.
The roofline model that generalises the measurements lives in archscale.throughput.model.
"""
from archscale.throughput.engines.base import (ENGINES, Engine, EngineUnavailable,
                                               IncompleteGeneration, MeasureSettings,
                                               ThroughputResult, get_engine, make_prompts,
                                               measurement_settings)

__all__ = ["ENGINES", "Engine", "EngineUnavailable", "IncompleteGeneration", "MeasureSettings",
           "ThroughputResult", "get_engine", "make_prompts", "measurement_settings"]
