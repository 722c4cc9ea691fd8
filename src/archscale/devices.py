"""Device presets: what training costs, the roofline throughput model and the search count in.

Dense bf16 peak (TFLOP/s, no sparsity), memory bandwidth (GB/s) and memory (GB), from the
vendors' datasheets (SXM parts). `cpu` is a nominal laptop-class figure for the default study:
its efficiency factors are always fitted to measurements, so only ratios matter there.
config.yaml's throughput.gpus adds or overrides presets.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Device:
    name: str
    peak_tflops: float
    hbm_gbps: float
    memory_gb: float

    @property
    def peak_flops(self) -> float:
        """Dense peak in FLOP/s."""
        return self.peak_tflops * 1e12

    @property
    def bandwidth(self) -> float:
        """Memory bandwidth in bytes/s."""
        return self.hbm_gbps * 1e9

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


PRESETS: dict[str, Device] = {
    "A100-40GB": Device("A100-40GB", 312.0, 1555.0, 40.0),
    "A100-80GB": Device("A100-80GB", 312.0, 2039.0, 80.0),
    "H100": Device("H100", 989.0, 3350.0, 80.0),
    "H200": Device("H200", 989.0, 4800.0, 141.0),
    "cpu": Device("cpu", 0.2, 20.0, 16.0),
}

# What torch.cuda.get_device_name() returns for each preset's part (checked in order).
_NAME_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"H200", "H200"),
    (r"H100", "H100"),
    (r"A100.*80", "A100-80GB"),
    (r"A100", "A100-40GB"),
)


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


def preset_for_device_name(device_name: str) -> str | None:
    """The preset a measured device name (e.g. 'NVIDIA H100 80GB HBM3') belongs to, if any.

    Used to warn when measurements were taken on another part than the preset they calibrate.
    A name with no GPU part in it is taken for the CPU.
    """
    for pattern, preset in _NAME_PATTERNS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return preset
    if re.search(r"NVIDIA|AMD Instinct|Radeon|MI[23]\d\d", device_name):
        return None
    return "cpu"
