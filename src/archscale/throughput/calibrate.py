"""results/throughput.csv: measured vs predicted throughput, and the fitted calibration.

Why leave-one-out: the search trusts the model on architectures nobody measured, so the honest
error is the one on a measurement the fit did not see. Each (engine, device) is calibrated on
its own measurements; the device is the study's preset (throughput.gpu), and a measured device
name that does not match the preset is flagged in the table and the log.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from archscale.architecture import Architecture
from archscale.io import read_json, write_csv
from archscale.provenance import now, provenance
from archscale.devices import get_device, preset_for_device_name
from archscale.throughput.model import Measurement, fit_factors, leave_one_out, save_calibration


def build_table(results: Sequence[str | Path], gpu: str, gpus: Mapping[str, Any] | None,
                table_path: str | Path, calibration_path: str | Path,
                log: logging.Logger | None = None, model_code_version: str | None = None):
    """Fit, predict and write both outputs; returns the table as a DataFrame.

    Each record names its architecture (the directory of the config.json it measured).
    `model_code_version`, recorded in calibration.json, is the workflow's hash of the model's
    code (the rule passes it; the library does not reach up into the workflow for it).
    """
    started = now()
    import pandas as pd

    log = log or logging.getLogger("archscale")
    device = get_device(gpu, gpus)
    records = [read_json(path) for path in results]
    measurements = [Measurement.from_result(r, device) for r in records]
    calibration = fit_factors(measurements)
    loo = leave_one_out(measurements)
    rows = []
    for record, m, (loo_time, loo_calibrated) in zip(records, measurements, loo):
        factors, calibrated = calibration.lookup(m.engine, device.name)
        predicted_time = m.predicted_time(factors)
        tokens_out = m.workload.batch * m.workload.output_len
        tokens_all = m.workload.batch * (m.workload.input_len + m.workload.output_len)
        arch = Architecture.from_hf_config({
            "hidden_size": m.shape["d_model"], "num_hidden_layers": m.shape["n_layers"],
            "num_attention_heads": m.shape["n_heads"],
            "num_key_value_heads": m.shape["n_kv_heads"], "head_dim": m.shape["head_dim"],
            "intermediate_size": m.shape["ffn_dim"], "vocab_size": m.shape["vocab_size"],
            "tie_word_embeddings": m.shape["tie_word_embeddings"]}, name=m.name)
        matches = preset_for_device_name(record["device"]) in (device.name, None)
        if not matches:
            log.warning("%s/%s was measured on %r, which is not the preset %r that "
                        "throughput.gpu names", m.name, m.engine, record["device"], device.name)
        rows.append({
            "architecture": m.name, "engine": m.engine,
            "engine_version": record["engine_version"], "device": record["device"],
            "preset": device.name, "device_matches_preset": matches,
            **arch.shape(), "vocab_size": arch.vocab_size,
            "n_params_non_embedding": arch.n_params_non_embedding,
            "r_mlp_attn": round(arch.r_mlp_attn, 6), "gqa_group": arch.gqa_group,
            "kv_bytes_per_token": arch.kv_bytes_per_token(m.workload.dtype),
            "dtype": m.workload.dtype, "batch": m.workload.batch,
            "input_len": m.workload.input_len, "output_len": m.workload.output_len,
            "repeats": record["repeats"],
            "measured_time_s": m.time_s,
            # the spread of the timed repeats: a speed-up smaller than this is noise
            "measured_time_relative_sd": (float(record.get("std_time_s", 0.0)) / m.time_s
                                          if m.time_s > 0 else None),
            "measured_output_tokens_per_s": record["output_tokens_per_s"],
            "measured_total_tokens_per_s": record["total_tokens_per_s"],
            "predicted_time_s": predicted_time,
            "predicted_output_tokens_per_s": tokens_out / predicted_time,
            "predicted_total_tokens_per_s": tokens_all / predicted_time,
            "model_status": "calibrated" if calibrated else "uncalibrated",
            "loo_predicted_output_tokens_per_s": tokens_out / loo_time,
            "loo_relative_error": m.time_s / loo_time - 1.0,   # on tokens/s
            "loo_status": "calibrated" if loo_calibrated else "uncalibrated (alone in group)",
        })
    frame = pd.DataFrame(rows)
    for (engine, dev), entry in sorted(calibration.entries.items()):
        sub = frame[frame.engine == engine]
        log.info("%s on %s: factors %s; in-sample RMS log error %.3f; leave-one-out mean "
                 "|error| %.1f %% over %d measurements", engine, dev, entry.factors.to_dict(),
                 entry.rms_log_error, 100 * sub.loo_relative_error.abs().mean(), len(sub))
    save_calibration(calibration, calibration_path, extra={
        "leave_one_out": leave_one_out_summary(frame),
        "model_code_version": model_code_version,
        "provenance": provenance(settings={"gpu": gpu, "gpus": dict(gpus or {})},
                                 inputs=results, started=started,
                                 packages=("numpy", "scipy", "pandas"))})
    write_csv(table_path, frame)
    return frame


def leave_one_out_summary(frame) -> dict[str, Any]:
    """Per engine: how far each measurement's throughput was from the model fitted without it
    (relative error on tokens/s), the honest error of the calibrated model."""
    out: dict[str, Any] = {}
    for engine, sub in frame.groupby("engine", sort=True):
        errors = sub["loo_relative_error"].abs()
        calibrated = sub["loo_status"] == "calibrated"
        out[str(engine)] = {
            "n_measurements": int(len(sub)),
            "n_predicted_calibrated": int(calibrated.sum()),
            "mean_abs_relative_error": float(errors.mean()),
            "max_abs_relative_error": float(errors.max()),
            "note": "each measurement predicted by the factors fitted to the others of its "
                    "(engine, device); one alone is predicted from the defaults"}
    return out
