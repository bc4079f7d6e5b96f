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
             "Wall time includes interpreter start-up and imports; " + (
                 "every run starts from a cold page cache (sync; echo 1 > /proc/sys/vm/drop_caches)."
                 if c.get("cold") and result.get("disk", {}).get("drop_caches", "permitted") == "permitted" else
                 f"the page cache could NOT be dropped ({result['disk']['drop_caches']}): runs start warm or partly warm."
                 if c.get("cold") else "inputs read into the page cache right before each run."), "",
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
    "ta2-auto": "2-model task arithmetic, auto alpha",
    "soup3": "rewarded soup, 3 outputs",
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


# ------------------------------------------------------------------------------ cold cache (performance.md, 7B)
# (scenario, at most this many times the floor); the floor reads every input once and writes every output.
COLD_TARGETS: list[tuple[str, float]] = [("single", 1.2), ("ta2-auto", 1.2), ("soup3", 1.3)]
COLD_RSS_TARGET_GB = 2.0


def _tool_title(row: dict) -> str:
    title = f"floor, {row.get('read_passes', 2)} read passes" if row["tool"] == "floor-passes" else row["tool"]
    return title + (", reads overlapped with writes" if row.get("overlap") else "")


def _key(row: dict) -> tuple[str, str]:
    return row["scenario"], row["tool"] + ("+overlap" if row.get("overlap") else "")


def _best(row: dict) -> dict:
    """The sample with the shortest wall time (the one the minimum quotes)."""
    return min((s for s in row["samples"] if s["rc"] == 0), key=lambda s: s["wall_s"])


def _floors(rows: dict, scenario: str) -> dict[str, dict]:
    """The floors of a scenario that ran: plain (one read pass), same passes as the math, and overlapped ones."""
    out = {}
    for label, key in (("floor", "floor"), ("passes", "floor-passes"), ("overlap", "floor+overlap"),
                       ("overlap_passes", "floor-passes+overlap")):
        r = rows.get((scenario, key))
        if r and r["status"] == "ok":
            out[label] = r
    out.setdefault("passes", out.get("floor"))
    if "overlap" in out:
        out.setdefault("overlap_passes", out["overlap"])
    return {k: v for k, v in out.items() if v}


def cold_table(results: list[dict]) -> str:
    """Cold-cache runs (``run.py --cold``) of one or more result files: wall time, memory, ratios to the floors
    (by the minimums), and, for each tool's fastest run, what the disk read and wrote (/proc/diskstats) and the CPU
    seconds (user + system); the 1-minute load average before each run shows the other work on the machine."""
    rows = {_key(r): r for result in results for r in result["rows"]}
    scenarios = list(dict.fromkeys(k[0] for k in rows))
    rank = ["floor", "floor+overlap", "floor-passes", "floor-passes+overlap", "hf-lines", "mergekit"]
    rows = dict(sorted(rows.items(), key=lambda kv: (scenarios.index(kv[0][0]),
                                                     rank.index(kv[0][1]) if kv[0][1] in rank else len(rank))))
    overlapped = any(k[1].endswith("+overlap") for k in rows)
    head = ("| scenario | tool | runs | wall s (min) | wall s (median) | peak RSS GB | × floor | × floor, same passes "
            + ("| × overlapped floor, same passes " if overlapped else "")
            + "| disk read GB (GB/s) | disk written GB (GB/s) | CPU s | load before | mergekit ÷ hf-lines |")
    lines = [head, "| --- | --- |" + " ---: |" * (head.count("|") - 3)]
    blank = "| " * (head.count("|") - 5)
    for key, r in rows.items():
        title = SCENARIO_TITLES.get(r["scenario"], r["scenario"])
        if r["status"] != "ok":
            lines.append(f"| {title} | {_tool_title(r)} | | {r['status']}: {r.get('note', '')} {blank}|")
            continue
        floors = _floors(rows, r["scenario"])
        x = lambda which: _f(r["wall_s_min"] / floors[which]["wall_s_min"], ".2f") if which in floors else ""  # noqa: E731
        ratio = ""
        ours = rows.get((r["scenario"], "hf-lines"), {})
        if r["tool"] == "mergekit" and ours.get("status") == "ok":
            ratio = _f(r["wall_s_min"] / ours["wall_s_min"], ".2f")
        b = _best(r)
        disk = lambda k: (f"{b[k + '_gb']:.1f} ({b[k + '_gb_s']:.2f})" if k + "_gb" in b else "")  # noqa: E731
        cpu = _f(b.get("user_s", 0) + b.get("sys_s", 0), ".0f") if "user_s" in b else ""
        loads = [s["load_avg_1m_before"] for s in r["samples"] if "load_avg_1m_before" in s]
        lines.append(f"| {title} | {_tool_title(r)} | {len(r['samples'])} | {_f(r['wall_s_min'], '.1f')} | "
                     f"{_f(r['wall_s_median'], '.1f')} | {_f(r.get('peak_rss_gb'), '.2f')} | {x('floor')} | "
                     f"{x('passes')} | " + (f"{x('overlap_passes')} | " if overlapped else "")
                     + f"{disk('disk_read')} | {disk('disk_write')} | {cpu} | "
                     f"{_range(loads, '.1f', '').strip() if loads else ''} | {ratio} |")
    return "\n".join(lines) + "\n"


def cold_targets(results: list[dict]) -> str:
    """The 7B cold-cache targets against the result files (ratios by the minimums, and by the medians)."""
    rows = {_key(r): r for result in results for r in result["rows"]}
    lines = ["| scenario | target | measured |", "| --- | --- | --- |"]

    def against(ours: dict, floor: dict, limit: float) -> str:
        by_min = ours["wall_s_min"] / floor["wall_s_min"]
        text = f"{by_min:.2f}x ({_verdict(by_min, limit, True)})"
        if len(ours["samples"]) > 1 and len(floor["samples"]) > 1:
            text += f", {ours['wall_s_median'] / floor['wall_s_median']:.2f}x by the medians"
        return text

    for scenario, limit in COLD_TARGETS:
        ours, floors = rows.get((scenario, "hf-lines")), _floors(rows, scenario)
        title = SCENARIO_TITLES[scenario]
        if not ours or ours["status"] != "ok" or "floor" not in floors:
            lines.append(f"| {title} | within {limit}x of the floor | not measured |")
            continue
        parts = [f"the floor (one read pass): {against(ours, floors['floor'], limit)}"]
        if floors["passes"] is not floors["floor"]:
            parts.append(f"the floor reading the inputs {floors['passes'].get('read_passes', 2)} times, as the math "
                         f"does: {against(ours, floors['passes'], limit)}")
        if "overlap_passes" in floors:
            parts.append(f"the overlapped floor with the same passes (another run): "
                         f"{against(ours, floors['overlap_passes'], limit)}")
        mk = rows.get((scenario, "mergekit"))
        if mk and mk["status"] == "ok":
            parts.append(f"mergekit takes {mk['wall_s_min'] / ours['wall_s_min']:.2f}x hf-lines' time")
        lines.append(f"| {title} | within {limit}x of the floor | {'; '.join(parts)} (by the minimums) |")
    rss = [r["peak_rss_gb"] for r in rows.values() if r["tool"] == "hf-lines" and r["status"] == "ok"]
    if rss:
        worst = max((r for r in rows.values() if r["tool"] == "hf-lines" and r["status"] == "ok"),
                    key=lambda r: r["peak_rss_gb"])
        verdict = "met" if max(rss) < COLD_RSS_TARGET_GB else f"missed: {SCENARIO_TITLES[worst['scenario']]}"
        lines.append(f"| all | peak RSS under {COLD_RSS_TARGET_GB:g} GB | {min(rss):.2f} to {max(rss):.2f} GB ({verdict}) |")
    return "\n".join(lines) + "\n"


DISK_ROWS = [
    ("read_direct", "sequential read, O_DIRECT, 16 MiB requests (dd iflag=direct)"),
    ("read_direct_again", "the first of those files read again (shows a cache below the guest)"),
    ("read_buffered", "sequential read() through the page cache, 16 MiB"),
    ("read_mmap", "mapped file, pages touched in order (as a per-tensor mmap reader)"),
    ("read_mmap_sequential", "the same with MADV_SEQUENTIAL"),
    ("write_direct", "sequential write, O_DIRECT, 16 MiB, then fsync (dd oflag=direct)"),
]


def disk_table(result: dict) -> str:
    """``disk_probe.py`` as run.py --cold ran it: the disk's own rates from a cold cache."""
    d = result["disk"]
    lines = ["| measurement | GB/s | runs |", "| --- | ---: | ---: |"]
    for key, title in DISK_ROWS:
        runs = d.get(key, [])
        if runs:
            lines.append(f"| {title} | {_range([r['gb_s'] for r in runs], '.2f', '').strip()} | {len(runs)} |")
    rw = d.get("read_write_direct")
    if rw:
        lines.append(f"| reading and writing at once (O_DIRECT, one stream each) | {rw['read']['gb_s']:.2f} read + "
                     f"{rw['write']['gb_s']:.2f} written | 1 |")
    q = d.get("queue", {})
    lines.append(f"| device `{q.get('device')}`: read_ahead_kb {q.get('read_ahead_kb')}, max_sectors_kb "
                 f"{q.get('max_sectors_kb')}, scheduler {q.get('scheduler')}; drop_caches {d.get('drop_caches')} | | |")
    return "\n".join(lines) + "\n"


def compute_table(data: dict) -> str:
    """``profile_compute.py``: CPU seconds of each per-tensor step for a whole checkpoint, from memory, one thread."""
    lines = ["| step (whole checkpoint, inputs in memory, 1 thread) | CPU s |", "| --- | ---: |"]
    for key, value in data["cpu_s_whole_checkpoint_one_thread"].items():
        lines.append(f"| {key} | {value:.1f} |")
    for key, value in data["scenario_cpu_s_one_thread"].items():
        lines.append(f"| **{SCENARIO_TITLES.get(key, key)}**: all its steps | {value:.1f} ({value / 2:.1f} s on 2 cores) |")
    lines.append(f"| timed on {len(data['tensors'])} tensors, {data['sample_bytes'] / 1e9:.2f} GB of the "
                 f"{data['checkpoint_bytes'] / 1e9:.2f} GB checkpoint, scaled by bytes | |")
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
def ab_table(result: dict) -> str:
    """Two source trees compared (``ab.py``): min and median of the repeats, and whether the bytes agree."""
    lines = ["| scenario | before (min / median) | after (min / median) | after / before (min / median) "
             "| peak RSS GB (before / after) | same bytes |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        rss = " / ".join(_f(r.get(f"{side}_peak_rss_gb"), ".2f") for side in ("before", "after"))
        lines.append(f"| {r['scenario']} | {r['before_s_min']:.2f} / {r['before_s_median']:.2f} s "
                     f"| {r['after_s_min']:.2f} / {r['after_s_median']:.2f} s "
                     f"| {r['after_x_before_min']:.3f} / {r['after_x_before_median']:.3f} | {rss} "
                     f"| {'yes' if r['same_bytes'] else 'NO'} ({r['files']} files) |")
    return "\n".join(lines) + "\n"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


RENDERERS: dict[str, Callable[[list[Path]], str]] = {
    "performance-table": lambda paths: performance_table([_json(p) for p in paths]),
    "performance-targets": lambda paths: targets_table([_json(p) for p in paths]),
    "soup-table": lambda paths: soup_table(_json(paths[0])),
    "adapter-table": lambda paths: adapter_table(_json(paths[0])),
    "cold-table": lambda paths: cold_table([_json(p) for p in paths]),
    "cold-targets": lambda paths: cold_targets([_json(p) for p in paths]),
    "disk-table": lambda paths: disk_table(_json(paths[0])),
    "compute-table": lambda paths: compute_table(_json(paths[0])),
    "ab-table": lambda paths: ab_table(_json(paths[0])),
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
