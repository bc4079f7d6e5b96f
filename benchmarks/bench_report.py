"""The benchmark's machine description, its markdown reports, and the generated tables in docs/.

Every table of numbers in docs/*.md sits between markers and is rendered from a result file:

    <!-- generated: KIND PATH [PATH ...] -->
    ...
    <!-- end generated -->

KIND is a key of ``RENDERERS``; the PATHs are relative to the repository root.

    python benchmarks/bench_report.py --docs            # rewrite every generated block
    python benchmarks/bench_report.py --docs --check    # exit 1 if a block is stale
    python benchmarks/bench_report.py benchmarks/results/1.1b-{ta,ties,ties-tensor}.json   # print the table
"""
from __future__ import annotations

import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


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


def performance_table(results: list[dict]) -> str:
    """One table over several result files, as docs/performance.md quotes it: min and median wall
    time of the repeats, ratios to the I/O floor (both by min) and mergekit's time over hf-lines'."""
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


readme_table = performance_table  # its name while the README held the table


# ------------------------------------------------------------------------------ targets (performance.md)
# (scenario, what the target says, [(compared with, at most this many times the floor / at least this
# many times faster than mergekit)]). The targets are specifications; the measured column comes from
# the result files.
TARGETS: list[tuple[str, str, list[tuple[str, float]]]] = [
    ("single", "within 1.5x of the floor, 4x faster than mergekit", [("floor", 1.5), ("mergekit", 4.0)]),
    ("ta4", "within 2x of the floor", [("floor", 2.0)]),
    ("ties4-global", "within 3x of the floor", [("floor", 3.0)]),
]
RSS_TARGET_GB = 1.5


def _verdict(value: float, limit: float, at_most: bool) -> str:
    ok = value <= limit if at_most else value >= limit
    return "met" if ok else f"missed by {abs(value - limit):.2f}x"


def targets_table(results: list[dict]) -> str:
    """The targets for the benchmark machine and where the result files put hf-lines against them."""
    rows = {(r["scenario"], r["tool"]): r for result in results for r in result["rows"]}
    lines = ["| scenario | target | measured |", "| --- | --- | --- |"]
    for scenario, target, checks in TARGETS:
        ours = rows.get((scenario, "hf-lines"))
        if not ours or ours["status"] != "ok":
            lines.append(f"| {SCENARIO_TITLES[scenario]} | {target} | not measured |")
            continue
        parts = []
        for other, limit in checks:
            them = rows.get((scenario, other))
            if not them or them["status"] != "ok":
                parts.append(f"{other}: not measured")
                continue
            if other == "floor":
                by_min = ours["wall_s_min"] / them["wall_s_min"]
                by_median = ours["wall_s_median"] / them["wall_s_median"]
                text = f"{by_min:.2f}x the floor by the minimums ({_verdict(by_min, limit, True)})"
            else:
                by_min = them["wall_s_min"] / ours["wall_s_min"]
                by_median = them["wall_s_median"] / ours["wall_s_median"]
                text = f"{by_min:.2f}x faster than {other} by the minimums ({_verdict(by_min, limit, False)})"
            if len(ours["samples"]) > 1:
                text += f", {by_median:.2f}x by the medians"
            parts.append(text)
        lines.append(f"| {SCENARIO_TITLES[scenario]} | {target} | {'; '.join(parts)} |")
    rss = [r["peak_rss_gb"] for r in rows.values() if r["tool"] == "hf-lines" and r["status"] == "ok"]
    if rss:
        verdict = "met" if max(rss) < RSS_TARGET_GB else "missed"
        lines.append(f"| all | peak RSS under {RSS_TARGET_GB} GB | {min(rss):.2f} to {max(rss):.2f} GB ({verdict}) |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ soups (soups.md)
GIB = float(1 << 30)
MIB = float(1 << 20)


def _range(values: list[float], fmt: str, unit: str) -> str:
    lo, hi = min(values), max(values)
    same = format(lo, fmt) == format(hi, fmt)
    return f"{lo:{fmt}} {unit}" if same else f"{lo:{fmt}} to {hi:{fmt}} {unit}"


def soup_table(data: dict) -> str:
    """The rewarded-soup sweeps of ``benchmarks/soup_bench.py`` (benchmarks/results/soup_bench.json)."""
    lines = ["| case | outputs | read passes | sweep | peak RSS | I/O floor | check |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for run in data["runs"].values():
        if run["case"] == "lora":
            runs = run["runs"]
            each = run["output_adapter_bytes_total"] / run["outputs"]
            lines.append(
                f"| LoRA, rank {run['rank']} x {len(run['policy_adapter_bytes'])} policies on q, k, v, o, gate, up, down "
                f"| {run['outputs']} adapters (LiNeS and plain, lam {run['lambdas']}), {each / 1e6:.0f} MB each "
                f"| 0 base reads | {_range([r['run_s'] for r in runs], '.1f', 's')} "
                f"| {_range([r['peak_rss_bytes'] / GIB for r in runs], '.2f', 'GiB')} | - "
                f"| {run['max_rel_err']:.1e} relative |")
            continue
        sweep, gb = run["sweep"], run["checkpoint_bytes"] / 1e9
        case = f"full, {run['layers']} layers ({gb:.2f} GB per checkpoint), lam {run['lambdas']}"
        if run.get("passes_setting", "auto") != "auto":
            case += f", `passes={run['passes_setting']}`"
        if run.get("discard"):
            case += ", `--discard`"
        floor = "-"
        if "floor" in run:
            floor = f"{run['floor']['run_s']:.0f} s (x{run['sweep_vs_floor']:.1f})"
        err = run["max_err_bf16_steps"]
        check = "<= 1 bf16 step" if err <= 1 else f"{err:.2f} bf16 steps"
        lines.append(f"| {case} | {sweep['outputs']} x {gb:.2f} GB | {sweep['passes']} | {sweep['run_s']:.0f} s "
                     f"| {sweep['peak_rss_bytes'] / GIB:.2f} GiB | {floor} | {check} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ adapters (adapters.md)
def adapter_table(data: dict) -> str:
    """``benchmarks/adapter_bench.py``: one rank-r adapter scaled on a sparse 7B-shaped base."""
    runs, a, limits = data["runs"], data["adapter"], data.get("limits", {})
    scale_limit = f" (limit {limits['scale_s']:.0f} s)" if "scale_s" in limits else ""
    rss_limit = f" (limit {limits['peak_rss_bytes'] / MIB:.0f} MiB)" if "peak_rss_bytes" in limits else ""
    lines = ["| base | adapter | runs | `scale_adapter` | peak RSS | imports | largest error of B |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
             f"| {data['base']['shape']} shape, sparse (no weights on disk) "
             f"| rank {a['rank']}, {a['modules']} modules, {a['bytes'] / MIB:.0f} MiB of {a['dtype']} factors "
             f"| {len(runs)} | {_range([r['scale_s'] for r in runs], '.2f', 's')}{scale_limit} "
             f"| {max(r['peak_rss_bytes'] for r in runs) / MIB:.0f} MiB{rss_limit} "
             f"| {_range([r['import_s'] for r in runs], '.1f', 's')} | {data['max_rel_error_B']:.1e} relative |"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ generated blocks in docs/
def _json(path: Path) -> dict:
    return json.loads(path.read_text())


RENDERERS: dict[str, Callable[[list[Path]], str]] = {
    "performance-table": lambda paths: performance_table([_json(p) for p in paths]),
    "performance-targets": lambda paths: targets_table([_json(p) for p in paths]),
    "soup-table": lambda paths: soup_table(_json(paths[0])),
    "adapter-table": lambda paths: adapter_table(_json(paths[0])),
    # a markdown report a run wrote (examples/results/*/results.md), verbatim
    "include": lambda paths: "".join(p.read_text() for p in paths),
}
BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^\n]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def render(spec: str, root: Path = ROOT) -> str:
    """The text of the block whose start marker reads ``<!-- generated: SPEC -->``."""
    kind, *paths = spec.split()
    if kind not in RENDERERS or not paths:
        raise ValueError(f"generated block {spec!r}: expected KIND PATH..., KIND one of {', '.join(RENDERERS)}")
    return RENDERERS[kind]([root / p for p in paths])


def blocks(text: str) -> list[tuple[str, str]]:
    """(spec, body) of every generated block in ``text``."""
    return [(m["spec"], m["body"]) for m in BLOCK.finditer(text)]


def regenerate(text: str, root: Path = ROOT) -> str:
    """``text`` with every generated block rendered again from its result files."""
    return BLOCK.sub(lambda m: m.group(1) + render(m["spec"], root) + m.group(4), text)


def doc_pages(root: Path = ROOT) -> list[Path]:
    """The pages that may hold generated blocks: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def update_docs(root: Path = ROOT, check: bool = False) -> list[Path]:
    """Rewrite the stale pages (only list them with ``check``); returns the stale pages."""
    stale = []
    for page in doc_pages(root):
        text = page.read_text()
        new = regenerate(text, root)
        if new != text:
            stale.append(page)
            if not check:
                page.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    """Command line: print the performance table of result files, or regenerate docs/."""
    import argparse

    ap = argparse.ArgumentParser(description="Benchmark tables from result files: print the performance table, "
                                             "or (--docs) rewrite every generated block in README.md and docs/*.md.")
    ap.add_argument("results", nargs="*", type=Path, help="benchmarks/results/*.json written by run.py")
    ap.add_argument("--docs", action="store_true", help="rewrite the generated blocks of README.md and docs/*.md")
    ap.add_argument("--check", action="store_true", help="with --docs: change nothing, exit 1 if a block is stale")
    args = ap.parse_args(argv)
    if args.docs:
        stale = update_docs(check=args.check)
        for page in stale:
            print(f"{'stale' if args.check else 'rewrote'}: {page.relative_to(ROOT)}")
        return 1 if args.check and stale else 0
    if not args.results:
        ap.error("give result files, or --docs")
    print(performance_table([_json(p) for p in args.results]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
