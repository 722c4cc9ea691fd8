"""Part 5: the roofline's torch factors fitted to part 4's measurements, with the leave-one-out
error.

The fit is the workflow's own (archscale.throughput.calibrate.build_table, what the
throughput_table rule runs): it writes throughput.csv and calibration.json into the output
folder, so the calibration can be dropped into a study's results/ as it is. The leave-one-out
error is the honest one: each measurement predicted by the factors fitted to the others.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from gpu_check_parts.runner import Context, Recorder, Skip

ROW_COLUMNS = ("architecture", "batch", "input_len", "output_len", "measured_time_s",
               "predicted_time_s", "measured_output_tokens_per_s",
               "predicted_output_tokens_per_s", "loo_predicted_output_tokens_per_s",
               "loo_relative_error", "loo_status")


def measured_records(ctx: Context) -> list[str]:
    """Part 4's record files, or Skip saying why there are none."""
    part = ctx.earlier.get("throughput")
    records = ((part or {}).get("result") or {}).get("records") or []
    if not records:
        status = "did not run" if part is None else f"{part['status']}: {part.get('reason')}"
        raise Skip(f"no throughput measurement to fit (part throughput {status})")
    return records


def run(ctx: Context, rec: Recorder) -> None:
    from archscale.throughput.calibrate import build_table
    from archscale.devices import preset_for_device_name

    records = measured_records(ctx)
    device = json.loads(open(records[0]).read())["device"]
    preset = preset_for_device_name(device)
    if preset is None:
        raise Skip(f"no device preset for {device!r} (archscale.devices)")
    table_path = ctx.out_dir / "throughput.csv"
    calibration_path = ctx.out_dir / "calibration.json"
    frame = build_table(records, gpu=preset, gpus=None, table_path=table_path,
                        calibration_path=calibration_path,
                        log=logging.getLogger("gpu_check.calibration"))
    calibration = json.loads(calibration_path.read_text())
    rec.update(preset=preset, n_measurements=len(records), table=str(table_path),
               calibration=str(calibration_path), **torch_entry(calibration),
               leave_one_out=calibration["leave_one_out"].get("torch"),
               rows=[{k: python(row[k]) for k in ROW_COLUMNS}
                     for row in frame.to_dict("records")])


def torch_entry(calibration: dict[str, Any]) -> dict[str, Any]:
    """The fitted torch factors and their in-sample error, beside the defaults they moved
    from."""
    entry = next((e for e in calibration["entries"] if e["engine"] == "torch"), None)
    return {"factors": entry["factors"] if entry else None,
            "rms_log_error": entry["rms_log_error"] if entry else None,
            "default_factors": calibration["defaults"]["torch"]}


def python(value: Any) -> Any:
    """numpy scalars as plain Python numbers (for JSON)."""
    return value.item() if hasattr(value, "item") else value
