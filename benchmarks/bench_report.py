"""The benchmark's machine description and markdown report."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict:
    """CPU model, cores, RAM, library versions and the load (other work skews timings)."""
    info = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count(),
            "load_avg_1m_at_end": os.getloadavg()[0]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram_gb"] = round(int(line.split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    try:
        import torch
        import safetensors
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["safetensors"] = safetensors.__version__
    except ImportError:
        pass
    return info


def _f(x, fmt):
    return format(x, fmt) if isinstance(x, (int, float)) else "–"


def markdown(result: dict) -> str:
    m, c = result["machine"], result["config"]
    lines = [f"# hf-lines benchmark: {result['name']}", "",
             f"{result['timestamp']}; shape {c['shape']} ({c['layers']} layers, {c['params_b']:.2f}B params, "
             f"{c['checkpoint_gb']:.2f} GB/checkpoint, bf16), alpha={c['alpha']}, beta={c['beta']}, "
             f"TIES density={c['density']}, mergekit compute dtype {c.get('mergekit_dtype')}, repeats={c['repeat']} ({c['stat']} wall shown).",
             f"Machine: {m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('ram_gb', '?')} GB RAM, "
             f"torch {m.get('torch', '?')}, Python {m['python']}. mergekit {result['tools'].get('mergekit_version', '–')}.",
             "Wall time includes interpreter start-up and imports; inputs read into the page cache right before each run.", "",
             "| scenario | tool | wall s | peak RSS GB | wall ×floor | wall ×hf-lines | RSS ×hf-lines | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in result["rows"]:
        note = r.get("note", "") if r["status"] != "ok" else ""
        status = "" if r["status"] == "ok" else f"**{r['status']}** "
        lines.append(f"| {r['scenario']} | {r['tool']} | {_f(r.get('wall_s'), '.2f')} | "
                     f"{_f(r.get('peak_rss_gb'), '.2f')} | {_f(r.get('x_floor'), '.2f')} | "
                     f"{_f(r.get('x_hf_lines'), '.2f')} | {_f(r.get('rss_x_hf_lines'), '.2f')} | "
                     f"{status}{note.replace('|', '/')} |")
    if result["numerics"]:
        lines += ["", "Numeric agreement (reference: float32 theta_0 + lambda(i) * sum tau, rounded once to bf16):",
                  "", "| scenario | pair | max abs diff | max ulps at input scale | ‖a−b‖/‖update‖ | elements differing | worst tensor |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for scenario, pairs in result["numerics"].items():
            for pair, d in pairs.items():
                probs = f" ({'; '.join(d['problems'][:2])})" if d["problems"] else ""
                lines.append(f"| {scenario} | {pair} | {d['max_abs']:.3g} | {d['max_ulps_at_input_scale']:.2f} | {d['update_rel_err']:.2e} | "
                             f"{100 * d['frac_elements_differing']:.4f}% | {d['worst_tensor']}{probs} |")
    return "\n".join(lines) + "\n"


SCENARIO_TITLES = {
    "single": "single edit",
    "ta4": "4-model task arithmetic",
    "ties4": "4-model TIES, per-tensor trim",
    "ties4-global": "4-model TIES, global trim",
}


def readme_table(results: list[dict]) -> str:
    """One table over several result files, as the README quotes it: min and median wall time of
    the repeats, ratios to the I/O floor (both by min) and mergekit's time over hf-lines'."""
    lines = ["| scenario | tool | runs | wall s (min) | wall s (median) | peak RSS GB | × floor | mergekit ÷ hf-lines |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for result in results:
        rows = {(r["scenario"], r["tool"]): r for r in result["rows"]}
        for r in result["rows"]:
            title = SCENARIO_TITLES.get(r["scenario"], r["scenario"])
            if r["status"] != "ok":
                lines.append(f"| {title} | {r['tool']} | | {r['status']}: {r.get('note', '')} | | | | |")
                continue
            ratio = ""
            ours = rows.get((r["scenario"], "hf-lines"), {})
            if r["tool"] == "mergekit" and ours.get("status") == "ok":
                ratio = _f(r["wall_s_min"] / ours["wall_s_min"], ".2f")
            lines.append(f"| {title} | {r['tool']} | {len(r['samples'])} | {_f(r['wall_s_min'], '.2f')} | "
                         f"{_f(r['wall_s_median'], '.2f')} | {_f(r.get('peak_rss_gb'), '.2f')} | "
                         f"{_f(r.get('x_floor'), '.2f')} | {ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Print the README's table from benchmark result files.")
    ap.add_argument("results", nargs="+", type=Path, help="benchmarks/results/*.json written by run.py")
    print(readme_table([json.loads(p.read_text()) for p in ap.parse_args().results]), end="")
