"""The markdown summary of a gpu_check JSON (ready to commit as docs/gpu-results.md).

It is rewritten after every part from whatever the JSON holds, so each section renders a
partial result too; a section that cannot render says so instead of stopping the run.
"""
from __future__ import annotations

from typing import Any, Callable


def fmt(value: Any, spec: str = ",.0f", none: str = "–") -> str:
    if value is None:
        return none
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def pct(value: Any) -> str:
    return fmt(value, ".1%")


def pairs(mapping: dict[str, Any] | None) -> str:
    """'key value, key value' for a settings dict."""
    return ", ".join(f"{k} {v}" for k, v in (mapping or {}).items())


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render(results: dict[str, Any], titles: dict[str, str]) -> str:
    lines = header(results) + overview(results, titles)
    for name, title in titles.items():
        part = results["parts"].get(name) or {"status": "not run", "result": {}}
        lines += [f"## {title}", "", status_line(part), ""]
        try:
            lines += SECTIONS[name](part.get("result") or {})
        except Exception as exc:  # noqa: BLE001 -- a partial result must not stop the run
            lines += [f"(this section could not render its partial result: {exc!r})", ""]
    return "\n".join(lines).rstrip() + "\n"


def header(results: dict[str, Any]) -> list[str]:
    device = results.get("device") or {}
    lines = ["# GPU check: results", "",
             f"`bash benchmarks/gpu_check.sh` on {device.get('device', 'an unknown device')} "
             f"(torch {device.get('torch', '?')}, transformers {device.get('transformers', '?')}"
             f", CUDA {device.get('cuda') or 'none'}), started {results.get('started')}, "
             f"{fmt(results.get('wall_s'), '.0f')} s in all.", ""]
    if results.get("dry"):
        lines += ["**Dry run** (`--dry`): CPU and tiny shapes. It proves the script runs "
                  "without the blocked packages; its numbers measure nothing.", ""]
    blocker = results.get("blocker") or {}
    probe = blocker.get("probe") or {}
    refused = [n for n, outcome in probe.items() if outcome.startswith(("ModuleNotFound",
                                                                        "ImportError"))]
    attempts = sorted({a for p in results["parts"].values() for a in p.get("blocked_imports",
                                                                              [])})
    lines += [f"Import blocker: {', '.join(blocker.get('blocked', []))} unimportable in every "
              f"part ({len(refused)} of {len(probe)} refused when probed); imports of them "
              f"attempted during the run: {', '.join(attempts) or 'none'}.", ""]
    return lines


def overview(results: dict[str, Any], titles: dict[str, str]) -> list[str]:
    rows = []
    for name, title in titles.items():
        part = results["parts"].get(name) or {}
        rows.append([title, part.get("status", "not run"), fmt(part.get("seconds"), ".0f"),
                     fmt(part.get("budget_s"), ".0f")])
    return table(["Part", "Status", "Seconds", "Allowed (s)"], rows)


def status_line(part: dict[str, Any]) -> str:
    status = part.get("status", "not run")
    reason = f": {part['reason']}" if part.get("reason") else ""
    return f"Status: **{status}**{reason}."


def mfu_section(r: dict[str, Any]) -> list[str]:
    model, batch = r.get("model") or {}, r.get("batch") or {}
    lines = [f"Model: d_model {model.get('d_model')}, {model.get('n_layers')} layers, vocab "
             f"{model.get('vocab_size')}, {fmt(model.get('n_params_total', 0) / 1e6, '.1f')}M "
             f"parameters, {fmt(model.get('flops_per_token', 0) / 1e9, '.3f')} GFLOP per "
             f"trained token; micro-batch {batch.get('micro_batch_size')} x "
             f"{batch.get('seq_len')}, global batch {fmt(batch.get('global_batch_tokens'))} "
             f"tokens, {batch.get('steps')} steps, compiled: {r.get('compiled')}. Dense bf16 "
             f"peak {fmt(r.get('peak_tflops'))} TFLOP/s; a bf16 8192^3 matmul reaches "
             f"{fmt(r.get('matmul_tflops'))} TFLOP/s.", ""]
    rows = [[label, fmt((r.get(key) or {}).get("tokens_per_s")), pct((r.get(key) or {}).get("mfu"))]
            for label, key in (("archscale trainer", "trainer"), ("bare PyTorch loop", "bare"))]
    lines += table(["Loop", "tokens/s (steady)", "MFU"], rows)
    return lines + [f"Trainer / bare loop: {fmt(r.get('trainer_over_bare'), '.3f')}.", ""]


def fsdp_section(r: dict[str, Any]) -> list[str]:
    step, plan, measured = r.get("step") or {}, r.get("plan") or {}, r.get("measured") or {}
    arch, layout = r.get("architecture") or {}, r.get("plan_for_file_layout") or {}
    lines = [f"{r.get('config')}: {arch.get('name')} "
             f"({fmt(arch.get('n_params_total', 0) / 1e9, '.2f')}B parameters); the file's "
             f"settings: {pairs(r.get('file_settings'))}. Measured: {pairs(step)}.", ""]
    if plan.get("skipped"):
        lines += [f"Plan figure: none ({plan['skipped']}).", ""]
    so_far = r.get("peak_so_far") or {}
    rows = [["peak allocated (GB)", fmt(measured.get("peak_allocated_gb",
                                                     so_far.get("allocated_gb")), ".1f"),
             fmt(plan.get("allocated_gb"), ".1f")],
            ["peak reserved / plan total (GB)", fmt(measured.get("peak_reserved_gb"), ".1f"),
             fmt(plan.get("total_gb"), ".1f")],
            ["measured / plan (allocated)", fmt(r.get("measured_over_plan"), ".2f"), ""],
            ["outcome", measured.get("outcome", "not finished"), ""]]
    lines += table(["", "measured, 1 GPU", "plan, 1 GPU"], rows)
    if layout:
        lines += [f"The plan for the file's own {layout.get('gpus')} GPU(s) x "
                  f"{layout.get('nodes')} node(s): {fmt(layout.get('allocated_gb'), '.1f')} GB "
                  f"allocated, {fmt(layout.get('total_gb'), '.1f')} GB in all per GPU.", ""]
    return lines


def parallel_section(r: dict[str, Any]) -> list[str]:
    ddp, fsdp = r.get("ddp_losses") or [], r.get("fsdp_losses") or []
    lines = [f"{r.get('steps')} steps, {r.get('backend')} group of {r.get('world_size')} rank, "
             f"{r.get('dtype')}, global batch {fmt(r.get('global_batch_tokens'))} tokens.", ""]
    rows = [[i + 1, fmt(a, ".4f"), fmt(b, ".4f")] for i, (a, b) in
            enumerate(zip(ddp + [None] * (len(fsdp) - len(ddp)), fsdp + [None] * (len(ddp) - len(fsdp))))]
    lines += table(["step", "ddp loss", "fsdp loss"], rows)
    if "max_relative_difference" in r:
        lines += [f"Largest relative difference {fmt(r['max_relative_difference'], '.2e')} "
                  f"(tolerance {fmt(r['tolerance'], '.0e')}): same loss **{r['same_loss']}**; "
                  f"the loss fell by {pct(r['relative_loss_fall'])} over the run.", ""]
    return lines


def throughput_section(r: dict[str, Any]) -> list[str]:
    lines = [f"Engine: {r.get('engine')}; {r.get('timing')}.", ""]
    if r.get("output_len_reduced"):
        lines += [f"**Output length reduced**: {r['output_len_reduced']}.", ""]
    ratios = r.get("ratios_to_baseline") or {}
    rows = []
    for run in r.get("runs") or []:
        key = f"{run['batch']}x{run['input_len']}->{run['output_len']}"
        note = run.get("skipped") or run.get("failed") or ""
        rows.append([run["architecture"], key, fmt(run.get("time_s"), ".2f"),
                     fmt(run.get("output_tokens_per_s")),
                     fmt((ratios.get(key) or {}).get(run["architecture"]), ".3f"), note])
    lines += table(["Architecture", "workload", "time (s)", "output tok/s", "vs LLaMA-3.2-1B",
                    "note"], rows)
    gains = r.get("paper_gains") or {}
    lines += ["Paper (Table 1, H200): " + "; ".join(
        f"{n} vLLM {fmt(g.get('vllm'), '+.0%')}, SGLang {fmt(g.get('sglang'), '+.0%')}"
        for n, g in gains.items() if n.endswith("1B")) + ".", ""]
    return lines


def calibration_section(r: dict[str, Any]) -> list[str]:
    fitted, default = r.get("factors") or {}, r.get("default_factors") or {}
    rows = [[k, fmt(fitted.get(k), ".3g"), fmt(default.get(k), ".3g")] for k in default]
    lines = [f"Preset {r.get('preset')}, {r.get('n_measurements')} measurements; in-sample RMS "
             f"log error {fmt(r.get('rms_log_error'), '.3f')}.", ""]
    lines += table(["factor", "fitted", "default"], rows)
    loo = r.get("leave_one_out") or {}
    lines += [f"Leave-one-out |error| on tokens/s: mean {pct(loo.get('mean_abs_relative_error'))}, "
              f"max {pct(loo.get('max_abs_relative_error'))}.", ""]
    rows = [[row["architecture"], f"{row['batch']}x{row['input_len']}->{row['output_len']}",
             fmt(row["measured_output_tokens_per_s"]), fmt(row["predicted_output_tokens_per_s"]),
             fmt(row["loo_predicted_output_tokens_per_s"]), pct(row["loo_relative_error"])]
            for row in r.get("rows") or []]
    return lines + table(["Architecture", "workload", "measured tok/s", "fitted", "leave-one-out",
                          "LOO error"], rows)


SECTIONS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "train_mfu": mfu_section, "fsdp_memory": fsdp_section, "parallel_loss": parallel_section,
    "throughput": throughput_section, "calibration": calibration_section,
}
