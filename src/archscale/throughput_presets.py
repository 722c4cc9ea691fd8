"""Device presets for the roofline throughput model.

Dense bf16 peak (TFLOP/s, no sparsity), memory bandwidth (GB/s) and memory (GB), from the
vendors' datasheets (SXM parts). `cpu` is a nominal laptop-class figure for the default study:
its efficiency factors are always fitted to measurements, so only ratios matter there.
config.yaml's throughput.gpus adds or overrides presets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Device:
    name: str
    peak_tflops: float
    hbm_gbps: float
    memory_gb: float


PRESETS: dict[str, Device] = {
    "A100-40GB": Device("A100-40GB", 312.0, 1555.0, 40.0),
    "A100-80GB": Device("A100-80GB", 312.0, 2039.0, 80.0),
    "H100": Device("H100", 989.0, 3350.0, 80.0),
    "H200": Device("H200", 989.0, 4800.0, 141.0),
    "cpu": Device("cpu", 0.2, 20.0, 16.0),
}


def known_devices(extra: dict[str, Any] | None = None) -> dict[str, Device]:
    """Presets plus config-defined devices (config wins on a name clash)."""
    devices = dict(PRESETS)
    for name, spec in (extra or {}).items():
        devices[name] = Device(name, float(spec["peak_tflops"]), float(spec["hbm_gbps"]),
                               float(spec["memory_gb"]))
    return devices


def get_device(name: str, extra: dict[str, Any] | None = None) -> Device:
    devices = known_devices(extra)
    if name not in devices:
        raise ValueError(f"unknown device preset {name!r}; known: {sorted(devices)} "
                         "(add one under throughput.gpus in config.yaml)")
    return devices[name]
