"""Benchmark hf-lines against mergekit and the I/O floor on synthetic LLaMA checkpoints.

    python benchmarks/run.py                         # 1.1B shape, scenarios single, ta4, ties4
    python benchmarks/run.py --smoke                 # seconds; for CI
    python benchmarks/run.py --shape 7b --scenarios single --tools floor,hf-lines
    python benchmarks/run.py --shape 7b --cold --scenarios single,ta2-auto,soup3 --repeat 2 --name 7b-cold

Each run is its own subprocess, timed by wall clock (imports included) with its peak RSS
from /usr/bin/time -v (or a fresh Python parent's RUSAGE_CHILDREN). The inputs are read
right before every run so each tool starts from a warm page cache (once is not enough
where the host pages out cold memory: this VM's DAMON scheme evicts pages idle for ~30 s),
and dirty pages are synced between runs. Results go to benchmarks/results/<name>.json and .md.

``--cold`` starts every run from a cold page cache instead (``sync; echo 1 >
/proc/sys/vm/drop_caches``; a refusal is recorded and shown), first measures the disk's own
read and write rates (``disk_probe.py``), and records for each run the bytes the disk read
and wrote (/proc/diskstats) with a per-second timeline, and the CPU seconds. Where the
inputs and every tool's outputs do not fit on the disk together, each output is checked
(against the float32 reference on a sample of tensors) right after its tool's last run and
deleted; where even one run's outputs do not fit (a 3-output 7B soup), ``reclaim.py`` punches
holes in the bytes already written while the run goes on (floor and hf-lines alike).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import mergekit_env  # noqa: E402
from compare import compare_outputs  # noqa: E402
from bench_report import machine, markdown  # noqa: E402
from disk_probe import block_device, disk_counters, drop_caches, probe, queue_settings  # noqa: E402
from synthetic import SHAPES, make_checkpoint_set  # noqa: E402

SCENARIOS = {  # name -> number of fine-tuned inputs
    "single": 1,
    "ta4": 4,
    "ties4": 4,
    "ties4-global": 4,  # hf-lines' default TIES (global trim per task); mergekit cannot do it
    "ta2-auto": 2,  # 2-model task arithmetic, alpha: auto (a statistics pass, then the merge pass)
    "soup3": 2,  # rewarded soup of 2 policies, 3 outputs (--soup-lambdas) from one read pass
}
# Read passes over the inputs that hf-lines' math needs; "floor-passes" is the floor with that many.
READ_PASSES = {"ta2-auto": 2}
AUTO_ALPHA = {"ta2-auto"}
TOOLS = ["floor", "floor-passes", "hf-lines", "mergekit"]
RESERVE = 2 << 30  # bytes left free on the output disk
TOOL_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


# --- the hf-lines side; recipe keys live only here so they are easy to adjust ---------------

def hf_lines_recipe(scenario: str, base: Path, models: list[Path], alpha: float, beta: float,
                    density: float) -> dict:
    recipe = {"base_model": str(base), "models": [{"model": str(m)} for m in models],
              "lines": {"alpha": alpha, "beta": beta}}
    if scenario == "ta2-auto":
        recipe.update(method="task_arithmetic", method_options={})
        recipe["lines"]["alpha"] = "auto"
    elif scenario == "ta4":
        recipe.update(method="task_arithmetic", method_options={})
    elif scenario == "ties4":
        # Per-tensor trimming is what mergekit does, so the outputs are comparable.
        recipe.update(method="ties", method_options={"density": density, "trim": "tensor"})
    elif scenario == "ties4-global":
        recipe.update(method="ties", method_options={"density": density, "trim": "global"})
    else:
        raise ValueError(scenario)
    return recipe


def hf_lines_base_command() -> list[str] | None:
    exe = shutil.which("hf-lines")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys; from hf_lines.cli import main; sys.exit(main())"]


def hf_lines_missing(cmd: list[str]) -> dict[str, str]:
    """Subcommand -> why it cannot run, for the subcommands that do not answer ``--help``."""
    env = {**os.environ, **TOOL_ENV, "PYTHONPATH": str(REPO)}
    missing = {}
    for sub in ("scale", "merge", "soup"):
        r = subprocess.run([*cmd, sub, "--help"], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            missing[sub] = f"`hf-lines {sub} --help` failed: {tail[0][:160]}"
    return missing


def hf_lines_subcommand(scenario: str) -> str:
    return {"single": "scale", "soup3": "soup"}.get(scenario, "merge")


# The soup CLI refuses a sweep whose outputs do not all fit on the disk. With reclaim.py freeing
# the written bytes as the run goes, it is told that much more room (the bytes of its outputs).
_SOUP_ROOMY = ("import os, sys; import hf_lines.soups.soup as s; extra = int(os.environ['HF_LINES_BENCH_EXTRA_FREE']); "
               "f = s.free_bytes; s.free_bytes = lambda folder: f(folder) + extra; "
               "from hf_lines.cli import main; sys.exit(main())")


def resolved_alpha(out: Path) -> float | None:
    """The alpha an ``alpha: auto`` merge resolved to (its hf_lines.json)."""
    try:
        return float(json.loads((out / "hf_lines.json").read_text())["lines"]["alpha"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


# --- measuring ----------------------------------------------------------------------------

_RUSAGE_PARENT = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
                  "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
                  "sys.exit(rc)")


def cpu_counters() -> list[int] | None:
    """The machine's CPU time so far (/proc/stat): user, nice, system, idle, iowait, irq, softirq, steal."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None


class DiskTimeline:
    """/proc/diskstats of one device and the machine's CPU use (/proc/stat), sampled every second while a run goes on."""

    def __init__(self, dev: str | None, every: float = 1.0):
        import threading

        self.dev, self.every, self.samples, self.cpu = dev, every, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last, last_cpu = disk_counters(self.dev), cpu_counters()
        while not self._stop.wait(self.every):
            now, now_cpu = disk_counters(self.dev), cpu_counters()
            if last and now:
                self.samples.append((round((now["read_bytes"] - last["read_bytes"]) / 1e6),
                                     round((now["write_bytes"] - last["write_bytes"]) / 1e6)))
            if last_cpu and now_cpu:
                d = [a - b for a, b in zip(now_cpu, last_cpu)]
                total = sum(d) or 1
                busy = d[0] + d[1] + d[2] + d[5] + d[6]
                self.cpu.append((round(100 * busy / total), round(100 * d[4] / total)))
            last, last_cpu = now, now_cpu

    def __enter__(self) -> "DiskTimeline":
        self.before = disk_counters(self.dev)
        if self.dev:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.dev:
            self._thread.join()
        self.after = disk_counters(self.dev)

    def summary(self, wall: float) -> dict:
        if not (self.before and self.after):
            return {}
        r = self.after["read_bytes"] - self.before["read_bytes"]
        w = self.after["write_bytes"] - self.before["write_bytes"]
        busy = (self.after["busy_ms"] - self.before["busy_ms"]) / 1e3
        return {"disk_read_gb": r / 1e9, "disk_write_gb": w / 1e9, "disk_read_gb_s": r / 1e9 / wall,
                "disk_write_gb_s": w / 1e9 / wall, "disk_busy_frac": min(busy / wall, 1.0),
                # MB read/MB written per second of the run, "r/w" space separated
                "disk_mb_per_s": " ".join(f"{a}/{b}" for a, b in self.samples),
                # the whole machine's CPU per second, % busy/% waiting on I/O (all processes, all cores)
                "cpu_busy_iowait_pct": " ".join(f"{a}/{b}" for a, b in self.cpu)}


def _time_v(text: str) -> dict:
    """CPU seconds and peak RSS from /usr/bin/time -v."""
    keys = {"User time (seconds)": "user_s", "System time (seconds)": "sys_s",
            "Maximum resident set size (kbytes)": "max_rss_kb", "Major (requiring I/O) page faults": "major_faults"}
    out = {}
    for line in text.splitlines():
        key, _, value = line.strip().rpartition(": ")
        if key in keys:
            try:
                out[keys[key]] = float(value)
            except ValueError:
                pass
    return out


def measure(cmd: list[str], log: Path, env: dict | None = None, dev: str | None = None) -> dict:
    """Wall seconds and peak RSS (GB) of cmd and its children (the largest single process)."""
    stats = log.with_suffix(".rss")
    if Path("/usr/bin/time").exists():
        wrapped = ["/usr/bin/time", "-v", "-o", str(stats), *cmd]
    else:  # ru_maxrss of a fresh parent's children: the peak of the run alone
        wrapped = [sys.executable, "-c", _RUSAGE_PARENT, str(stats), *cmd]
    full_env = {**os.environ, **TOOL_ENV, "PYTHONPATH": str(REPO), **(env or {})}
    load_before = os.getloadavg()[0]  # other work on the machine skews timings; keep the evidence
    with open(log, "w") as out, DiskTimeline(dev) as disk:
        t0 = time.perf_counter()
        rc = subprocess.call(wrapped, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        wall = time.perf_counter() - t0
    kb = None
    cpu = {}
    if stats.exists():
        text = stats.read_text()
        for line in text.splitlines():
            if "Maximum resident set size" in line:
                kb = int(line.split(":")[1])
        if kb is None and text.strip().isdigit():
            kb = int(text.strip())
        cpu = {k: v for k, v in _time_v(text).items() if k != "max_rss_kb"}
    tail = log.read_text(errors="replace").strip().splitlines()[-8:] if rc else []
    sample = {"rc": rc, "wall_s": wall, "peak_rss_gb": kb * 1024 / 1e9 if kb else None,
              "load_avg_1m_before": load_before, "log_tail": tail}
    if dev:
        sample.update(cpu, **disk.summary(wall))
    return sample


def start_reclaimer(folder: Path, work: Path, tag: str, keep: list[str]) -> tuple[subprocess.Popen, Path, Path]:
    """reclaim.py on ``folder`` until stop_reclaimer; ``keep``: tensors whose first rows the check reads."""
    stop, stats = work / f"{tag}.reclaim-stop", work / f"{tag}.reclaim.json"
    stop.unlink(missing_ok=True)
    stats.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(HERE / "reclaim.py"), str(folder), "--stop-file", str(stop),
                             "--stats", str(stats), *(a for n in keep for a in ("--keep", n))])
    return proc, stop, stats


def stop_reclaimer(handle: tuple[subprocess.Popen, Path, Path]) -> dict:
    proc, stop, stats = handle
    stop.touch()
    proc.wait(timeout=600)
    stop.unlink(missing_ok=True)
    try:
        return json.loads(stats.read_text())
    except (OSError, ValueError):
        return {"errors": [f"reclaim.py exited {proc.returncode} without statistics"]}


def warm_page_cache(folders: list[Path]) -> float:
    t0 = time.perf_counter()
    for folder in folders:
        for f in sorted(folder.iterdir()):
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass
    return time.perf_counter() - t0


# --- one scenario -------------------------------------------------------------------------

def soup_lambdas(args) -> list[str]:
    return [x for x in args.soup_lambdas.split(",") if x.strip()]


def n_outputs(scenario: str, args) -> int:
    return len(soup_lambdas(args)) if scenario == "soup3" else 1


def commands(tool: str, scenario: str, base: Path, fts: list[Path], out: Path, work: Path, args,
             hf_cmd: list[str], mk_yaml: Path | None, alpha: float | None = None,
             roomy: bool = False) -> list[str] | str | None:
    """The command for a (tool, scenario), a string saying why it cannot run, or None where it has no row.

    ``alpha`` overrides ``args.alpha`` (mergekit gets the alpha hf-lines' ``alpha: auto`` resolved);
    ``roomy``: the soup CLI is told the room that reclaim.py frees as it goes.
    """
    alpha = args.alpha if alpha is None else alpha
    if tool in ("floor", "floor-passes"):
        passes = READ_PASSES.get(scenario, 1) if tool == "floor-passes" else 1
        if tool == "floor-passes" and passes == 1:
            return None  # the plain floor already reads the inputs as often as the math needs
        outs = [out / f"floor-{k}" for k in range(n_outputs(scenario, args))] if scenario == "soup3" else [out]
        cmd = [sys.executable, str(HERE / "io_floor.py"), str(base), *map(str, fts),
               "--overwrite", "--reader", args.floor_reader]
        for o in outs:
            cmd += ["-o", str(o)]
        return cmd + (["--read-passes", str(passes)] if passes > 1 else []) + (["--overlap"] if args.floor_overlap else [])
    if tool == "hf-lines":
        device = ["--device", args.device] if args.device else []
        if scenario == "single":
            return [*hf_cmd, "scale", str(base), str(fts[0]), "-o", str(out),
                    "--alpha", str(alpha), "--beta", str(args.beta), "--overwrite", *device]
        if scenario == "soup3":  # computes on the CPU (its --device is for --eval)
            launcher = [sys.executable, "-c", _SOUP_ROOMY] if roomy else hf_cmd
            return [*launcher, "soup", str(base), *map(str, fts), "--lambdas", ",".join(soup_lambdas(args)),
                    "--alpha", str(alpha), "--beta", str(args.beta), "-o", str(out), "--overwrite",
                    "--passes", "single", "-q"]
        recipe = work / f"hf-lines-{scenario}.yaml"
        recipe.write_text(yaml.safe_dump(hf_lines_recipe(scenario, base, fts, alpha, args.beta, args.density),
                                         sort_keys=False))
        return [*hf_cmd, "merge", str(recipe), "-o", str(out), "--overwrite", *device]
    if tool == "mergekit":
        if scenario == "ties4-global":
            return "mergekit trims per tensor only"
        if scenario == "soup3":
            return "mergekit has no rewarded soup (one merge, one read of the inputs, per output)"
        cfg = work / f"mergekit-{scenario}.yaml"
        cfg.write_text(yaml.safe_dump(mergekit_env.mergekit_config(scenario, base, fts, alpha, args.beta,
                                                                   args.density, args.mergekit_dtype), sort_keys=False))
        return mergekit_env.mergekit_command(mk_yaml, cfg, out, args.mergekit_shard_size)
    raise ValueError(tool)


def sample_names(base: Path, num_blocks: int) -> set[str]:
    """The tensors a sampled comparison reads: blocks 0, L/2 and L-1, and everything outside the blocks."""
    from safetensors_stream import checkpoint_files

    blocks = {0, num_blocks // 2, num_blocks - 1}
    names = [n for ns in checkpoint_files(base).values() for n in ns]
    keep = set()
    for n in names:
        parts = n.split(".")
        if "layers" in parts and parts[parts.index("layers") + 1].isdigit():
            if int(parts[parts.index("layers") + 1]) not in blocks:
                continue
        keep.add(n)
    return keep


def soup_check(out: Path, base: Path, fts: list[Path], alpha: float, beta: float) -> dict:
    """First rows of a few tensors of every soup output against the float64 formula (soup_bench.spot_check)."""
    sys.path.insert(0, str(REPO))
    from soup_bench import SPOT, spot_check
    from hf_lines.soups import RewardedSoup, SoupIndex

    soup = RewardedSoup.from_pretrained(str(base), [str(f) for f in fts], alpha=alpha, beta=beta)
    checks = [spot_check(soup, {**e, "path": str(out / e["name"])}) for e in SoupIndex.load(out).outputs]
    return {"outputs": len(checks), "tensors": len(SPOT), "rows": 16,
            "max_err_bf16_steps": max(c["max_err_bf16_steps"] for c in checks), "checks": checks}


def verify(scenario: str, outputs: dict[str, Path], base: Path, fts: list[Path], args, num_blocks: int,
           alpha: float, only: set[str] | None) -> tuple[dict, dict | None]:
    """(numerics, soup check) of finished outputs; nothing where there is nothing to compare."""
    t0 = time.perf_counter()
    if scenario == "soup3":
        if "hf-lines" not in outputs:
            return {}, None
        found = soup_check(outputs["hf-lines"], base, fts, alpha, args.beta)
        print(f"  checked the soup outputs in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        return {}, found
    with_ref = scenario in ("single", "ta4", "ta2-auto")
    if not outputs or (len(outputs) < 2 and not with_ref):
        return {}, None
    numerics = compare_outputs(outputs, base, fts, alpha=alpha, beta=args.beta, num_blocks=num_blocks,
                               with_reference=with_ref, only=only)
    if only is not None:
        for d in numerics.values():
            d["tensors_compared"] = f"sample: {len(only)} tensors (blocks 0, L/2, L-1 and the non-block tensors)"
    print(f"  compared {', '.join(outputs)} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return numerics, None


def run_scenario(scenario: str, tools: dict[str, str | None], base: Path, all_fts: list[Path], work: Path,
                 args, hf_cmd, mk_yaml, num_blocks: int, ckpt_bytes: int = 0,
                 dev: str | None = None) -> tuple[list[dict], dict, dict]:
    fts = all_fts[: SCENARIOS[scenario]]
    # Disk: one run writes run_bytes. Where that does not fit beside the inputs, reclaim.py frees the
    # written bytes as the run goes; where the outputs of every tool do not fit together, each is
    # checked right after its tool's last run and deleted, instead of compared with the others at the end.
    free = shutil.disk_usage(work).free
    run_bytes = n_outputs(scenario, args) * ckpt_bytes
    reclaim = args.reclaim == "always" or (args.reclaim == "auto" and run_bytes + RESERVE > free)
    producers = [t for t in ("hf-lines", "mergekit") if t in tools and not tools[t]]
    keep_outputs = not reclaim and len(producers) * run_bytes + RESERVE <= free
    compare = args.compare if args.compare != "auto" else ("sample" if ckpt_bytes > 5e9 else "full")
    only = sample_names(base, num_blocks) if compare == "sample" else None
    info = {"outputs_per_run": n_outputs(scenario, args), "read_passes": READ_PASSES.get(scenario, 1),
            "free_disk_gb_before": round(free / 1e9, 1), "reclaim": reclaim,
            "outputs_compared_together": keep_outputs, "compare": "none" if args.no_compare else compare}
    if scenario == "soup3":
        info["lambdas"] = soup_lambdas(args)
    rows, outputs, runnable = [], {}, {}
    for tool in TOOLS:
        if tool not in tools:
            continue
        out = work / f"out-{scenario}-{tool}"
        cmd = commands(tool, scenario, base, fts, out, work, args, hf_cmd, mk_yaml, roomy=reclaim)
        if cmd is None:
            continue
        row = {"scenario": scenario, "tool": tool}
        if tool == "floor-passes":
            row["read_passes"] = READ_PASSES[scenario]
        if tool in ("floor", "floor-passes") and args.floor_overlap:
            row["overlap"] = True
        rows.append(row)
        if tools[tool]:
            row.update(status="unavailable", note=tools[tool])
            continue
        if isinstance(cmd, str):
            row.update(status="n/a", note=cmd)
            continue
        row.update(command=" ".join(cmd), samples=[])
        runnable[tool] = [row, cmd, out]
    from soup_bench import SPOT  # the tensors soup_check reads; reclaim.py keeps their first rows

    spot = [n.format(last=num_blocks - 1) for n in SPOT]
    alpha = args.alpha  # the alpha of the math; for alpha: auto, what hf-lines resolved
    numerics, soup = {}, None
    # Repeats are interleaved across tools so that drifting load on the machine hits them alike.
    for rep in range(args.repeat):
        last = rep == args.repeat - 1
        for tool, entry in runnable.items():
            row, cmd, out = entry
            if row["samples"] and row["samples"][-1]["rc"] != 0:
                continue
            if tool == "mergekit" and scenario in AUTO_ALPHA:
                # mergekit has no auto alpha: it gets hf-lines' (for task arithmetic that is 1/N exactly)
                given = alpha if "hf-lines" in runnable else 1 / len(fts)
                cmd = entry[1] = commands(tool, scenario, base, fts, out, work, args, hf_cmd, mk_yaml, alpha=given)
                row.update(command=" ".join(cmd), alpha_given=given)
            if out.exists():
                shutil.rmtree(out)
            need = RESERVE + (0 if reclaim else run_bytes)
            free_now = shutil.disk_usage(work).free
            if free_now < need:
                row["samples"].append({"rc": -1, "wall_s": float("nan"), "peak_rss_gb": None, "log_tail": [
                    f"not run: {free_now / 1e9:.1f} GB free on the output disk, {need / 1e9:.1f} GB needed"]})
                print(f"  {scenario:<12} {tool:<12} run {rep + 1}: {row['samples'][-1]['log_tail'][0]}", file=sys.stderr)
                continue
            os.sync()  # the previous run's dirty pages must not be flushed on this run's clock
            cache = "warm"
            if args.cold:
                cache = drop_caches() or "dropped"
            elif not args.no_warm:
                warm_page_cache([base, *fts])
            handle = start_reclaimer(out, work, f"{scenario}-{tool}", spot) if reclaim else None
            env = {"HF_LINES_BENCH_EXTRA_FREE": str(run_bytes)} if reclaim else None
            try:
                sample = measure(cmd, work / f"{scenario}-{tool}-{rep}.log", env=env, dev=dev)
            finally:
                if handle is not None:
                    reclaimed = stop_reclaimer(handle)
            if handle is not None:
                sample["reclaim"] = reclaimed
            if args.cold or args.no_warm:
                sample["cache"] = cache
            row["samples"].append(sample)
            disk = (f"  disk {sample['disk_read_gb_s']:.2f} GB/s read, {sample['disk_write_gb_s']:.2f} GB/s written, "
                    f"CPU {sample.get('user_s', 0) + sample.get('sys_s', 0):.0f} s") if "disk_read_gb_s" in sample else ""
            print(f"  {scenario:<12} {tool:<12} run {rep + 1}: rc {sample['rc']}  {sample['wall_s']:8.2f}s  "
                  f"{sample['peak_rss_gb'] or float('nan'):6.2f} GB{disk}", file=sys.stderr)
            produced = tool in ("hf-lines", "mergekit") and sample["rc"] == 0
            if produced and tool == "hf-lines" and scenario in AUTO_ALPHA:
                found = resolved_alpha(out)
                if found is not None:
                    alpha = row["alpha_resolved"] = found
            if produced and last and not keep_outputs and not args.no_compare:
                n, s = verify(scenario, {tool: out}, base, fts, args, num_blocks, alpha, only)
                numerics.update(n)
                soup = s or soup
            if not (produced and last and keep_outputs):  # keep only the last output, and not the floor's
                shutil.rmtree(out, ignore_errors=True)
    for tool, (row, cmd, out) in runnable.items():
        samples = row["samples"]
        if samples and all(s["rc"] == 0 for s in samples):
            walls = [s["wall_s"] for s in samples]
            rss = [s["peak_rss_gb"] for s in samples if s["peak_rss_gb"] is not None]
            row.update(status="ok", wall_s=min(walls) if args.stat == "min" else statistics.median(walls),
                       wall_s_min=min(walls), wall_s_median=statistics.median(walls),
                       peak_rss_gb=max(rss) if rss else None)
            if tool in ("hf-lines", "mergekit") and keep_outputs:
                outputs[tool] = out
        else:
            tail = samples[-1]["log_tail"] if samples else ["no run"]
            row.update(status="failed", note=" | ".join(tail[-3:])[-400:])
    by_tool = {r["tool"]: r for r in rows if r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        if "floor" in by_tool:
            r["x_floor"] = r["wall_s"] / by_tool["floor"]["wall_s"]
        if "floor-passes" in by_tool:
            r["x_floor_passes"] = r["wall_s"] / by_tool["floor-passes"]["wall_s"]
        if "hf-lines" in by_tool:
            r["x_hf_lines"] = r["wall_s"] / by_tool["hf-lines"]["wall_s"]
            if r.get("peak_rss_gb") and by_tool["hf-lines"].get("peak_rss_gb"):
                r["rss_x_hf_lines"] = r["peak_rss_gb"] / by_tool["hf-lines"]["peak_rss_gb"]
    if outputs and not args.no_compare:
        n, s = verify(scenario, outputs, base, fts, args, num_blocks, alpha, only)
        numerics.update(n)
        soup = s or soup
    if soup is not None:
        info["soup_check"] = soup
    if scenario in AUTO_ALPHA:
        info["alpha_resolved"] = alpha if "hf-lines" in runnable else None
    for out in outputs.values():
        shutil.rmtree(out, ignore_errors=True)
    for tool in TOOLS:
        shutil.rmtree(work / f"out-{scenario}-{tool}", ignore_errors=True)
    return rows, numerics, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1.1b")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--scenarios", default="single,ta4,ties4", help=f"comma list of {', '.join(SCENARIOS)}")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--smoke", action="store_true", help="tiny shape in a throw-away folder; finishes in seconds")
    ap.add_argument("--workdir", default=None, help="where the synthetic set lives (reused if present); not in the repo")
    ap.add_argument("--clean", action="store_true", help="delete the synthetic inputs at the end")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--density", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=1, help="runs per (scenario, tool)")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="which of the repeats' wall times the table shows (min resists other load on the machine)")
    ap.add_argument("--floor-reader", choices=["pread", "mmap", "safe_open"], default="pread",
                    help="how the floor reads (io_floor.py); mmap reads as hf-lines does")
    ap.add_argument("--floor-overlap", action="store_true", help="the floor reads the next tensor on a second thread "
                    "while it writes (io_floor.py --overlap; pread only)")
    ap.add_argument("--device", default=None, help="hf-lines --device (cuda, auto; default: the CPU); "
                    "benchmarks/cuda_check.py compares the CPU and CUDA paths")
    ap.add_argument("--mergekit-venv", default=str(mergekit_env.DEFAULT_VENV))
    ap.add_argument("--mergekit-shard-size", default=None, help="mergekit --out-shard-size (its default: 5B bytes)")
    ap.add_argument("--mergekit-dtype", default="bfloat16",
                    help="mergekit's compute dtype (float32 matches hf-lines' accuracy; output stays bf16)")
    ap.add_argument("--no-install", action="store_true", help="skip mergekit if its venv is not there yet")
    ap.add_argument("--no-compare", action="store_true")
    ap.add_argument("--no-warm", action="store_true", help="do not read the inputs into the page cache before each run")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every run (sync; echo 1 > "
                    "/proc/sys/vm/drop_caches), measure the disk first (disk_probe.py), record disk traffic per run")
    ap.add_argument("--no-probe", action="store_true", help="with --cold: skip the disk measurements")
    ap.add_argument("--reclaim", choices=["auto", "always", "never"], default="auto",
                    help="punch holes in written output bytes during a run (reclaim.py): auto = where one run's "
                         "outputs do not fit beside the inputs")
    ap.add_argument("--compare", choices=["auto", "full", "sample"], default="auto",
                    help="tensors the numeric check reads: every one, or blocks 0, L/2, L-1 and the non-block "
                         "tensors (auto: sample above 5 GB per checkpoint)")
    ap.add_argument("--soup-lambdas", default="0,0.5,1", help="soup3: the outputs' lambdas (weights lam, 1 - lam)")
    ap.add_argument("--profile", action="store_true", help="afterwards, time the per-tensor arithmetic apart from the "
                    "disk (profile_compute.py) into <results-dir>/<name>-compute.json")
    ap.add_argument("--name", default=None, help="results file stem (default: the shape)")
    ap.add_argument("--results-dir", type=Path, default=HERE / "results", help="where the .json and .md go")
    args = ap.parse_args(argv)

    shape = "smoke" if args.smoke else args.shape
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenarios {unknown}")
    wanted = [t for t in args.tools.split(",") if t]
    if set(wanted) - set(TOOLS):
        ap.error(f"unknown tools {sorted(set(wanted) - set(TOOLS))}")

    scratch = None
    if args.smoke and args.workdir is None:
        scratch = Path(tempfile.mkdtemp(prefix="hf-lines-bench-smoke-"))
        root = scratch
    else:
        suffix = f"-L{args.layers}" if args.layers else ""
        root = Path(args.workdir or Path(tempfile.gettempdir()) / "hf-lines-bench" / f"{shape}{suffix}").resolve()
    if REPO in root.parents or root == REPO:
        ap.error(f"workdir {root} is inside the repository; checkpoints must live outside it")
    root.mkdir(parents=True, exist_ok=True)
    work = root / "runs"
    work.mkdir(exist_ok=True)

    # Tool availability: a missing tool becomes a row saying why, never a crash.
    tools: dict[str, str | None] = {t: None for t in wanted}
    hf_cmd = hf_lines_base_command()
    mk_yaml = None
    info_tools = {}
    hf_missing: dict[str, str] = {}
    if "hf-lines" in tools:
        hf_missing = hf_lines_missing(hf_cmd)
    if "mergekit" in tools:
        try:
            if args.no_install or args.smoke:
                if not mergekit_env._works(Path(args.mergekit_venv)):
                    raise RuntimeError(f"no mergekit venv at {args.mergekit_venv} (run benchmarks/mergekit_env.py)")
                mk_yaml = Path(args.mergekit_venv) / "bin" / "mergekit-yaml"
            else:
                mk_yaml = mergekit_env.ensure_mergekit(args.mergekit_venv)
            info_tools["mergekit_version"] = mergekit_env.MERGEKIT_VERSION
            subprocess.run([str(mk_yaml), "--help"], capture_output=True)  # warm its imports
        except Exception as e:  # noqa: BLE001 - any install problem just disables the tool
            tools["mergekit"] = f"unavailable: {e}"

    n_ft = max(SCENARIOS[s] for s in scenarios)
    t0 = time.perf_counter()
    base, fts = make_checkpoint_set(root / "inputs", shape, n_ft, layers=args.layers)
    print(f"inputs ready in {time.perf_counter() - t0:.1f}s at {root / 'inputs'}", file=sys.stderr)
    cfg = json.loads((base / "config.json").read_text())
    num_blocks = cfg["num_hidden_layers"]
    ckpt_bytes = sum(f.stat().st_size for f in base.glob("*.safetensors"))

    dev = block_device(root) if args.cold else None
    disk = None
    if args.cold:
        refused = drop_caches()
        disk = {"queue": queue_settings(dev), "drop_caches": refused or "permitted"}
        if refused:
            print(f"warning: {refused}; runs start from whatever the page cache holds", file=sys.stderr)
        if not args.no_probe and ckpt_bytes > 1e9:
            # a different file for each measurement (disk_probe.py: the host may cache what was read)
            shards = [sorted(f.glob("*.safetensors")) for f in [base, *fts]]
            files = [f for group in zip(*shards) for f in group] if len(shards) > 1 else shards[0]
            t1 = time.perf_counter()
            disk.update(probe(files, write_gb=4.0))
            print(f"disk probe in {time.perf_counter() - t1:.0f}s: " + ", ".join(
                f"{k} {v:.2f}" for k, v in disk["summary"].items()) + " GB/s", file=sys.stderr)

    rows, numerics, scenario_info = [], {}, {}
    for scenario in scenarios:
        sub = hf_lines_subcommand(scenario)
        scenario_tools = {**tools, **({"hf-lines": hf_missing[sub]} if "hf-lines" in tools and sub in hf_missing else {})}
        r, n, info = run_scenario(scenario, scenario_tools, base, fts, work, args, hf_cmd, mk_yaml, num_blocks,
                                  ckpt_bytes, dev)
        rows += r
        scenario_info[scenario] = info
        if n:
            numerics[scenario] = n

    result = {
        "name": args.name or (shape + (f"-L{args.layers}" if args.layers else "")),
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "tools": info_tools,
        "config": {"shape": shape, "layers": num_blocks, "params_b": ckpt_bytes / 2 / 1e9,
                   "checkpoint_gb": ckpt_bytes / 1e9, "alpha": args.alpha, "beta": args.beta,
                   "density": args.density, "device": args.device, "repeat": args.repeat, "stat": args.stat, "floor_reader": args.floor_reader,
                   **({"floor_overlap": True} if args.floor_overlap else {}),
                   "mergekit_flags": mergekit_env.MERGEKIT_FLAGS,
                   "mergekit_shard_size": args.mergekit_shard_size, "mergekit_dtype": args.mergekit_dtype},
        "rows": rows,
        "numerics": numerics,
    }
    if args.cold or any(s in READ_PASSES or s == "soup3" for s in scenarios):
        result["config"].update(cold=args.cold, reclaim=args.reclaim)
        result["scenarios"] = scenario_info
    if disk is not None:
        result["disk"] = disk
    md = markdown(result)
    print(md)
    results_dir = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{result['name']}.json").write_text(json.dumps(result, indent=2) + "\n")
    (results_dir / f"{result['name']}.md").write_text(md)
    print(f"wrote {results_dir / result['name']}.json and .md", file=sys.stderr)
    if args.profile and len(fts) >= 2:
        subprocess.run([sys.executable, str(HERE / "profile_compute.py"), str(root / "inputs"), "--layers",
                        f"0,{num_blocks // 2}", "--json", str(results_dir / f"{result['name']}-compute.json")],
                       env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)

    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    elif args.clean:
        shutil.rmtree(root / "inputs", ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
        print(f"inputs kept for reuse: {root / 'inputs'} (--clean removes them)", file=sys.stderr)
    failed = [r for r in rows if r["status"] == "failed"]
    return 1 if failed and args.smoke else 0


if __name__ == "__main__":
    raise SystemExit(main())
