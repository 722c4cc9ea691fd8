"""Throughput: measured on each architecture's config.json with dummy weights, and modelled.

- engines/:   one interface (engines/base.py), one module per engine (torch, vLLM, SGLang),
              and the registry that finds them (engines/registry.py).
- measure:    one measurement in a child process, run in the engine's own environment.
- model:      the roofline model of prefill and decode that generalises the measurements.
- calibrate:  fitting the model's factors to the measurements (throughput.csv, calibration.json).

Throughput depends on the architecture only, so measurements never wait for or rerun after
training. This file imports nothing, so importing the device presets stays light.
"""
