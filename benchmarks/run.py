"""Benchmark hf-lines against mergekit and the I/O floor on synthetic LLaMA checkpoints.

    python benchmarks/run.py                         # 1.1B shape, scenarios single, ta4, ties4
    python benchmarks/run.py --smoke                 # seconds; for CI
    python benchmarks/run.py --shape 7b --scenarios single --tools floor,hf-lines

Each run is its own subprocess, timed by wall clock (imports included) with its peak RSS
from /usr/bin/time -v (or a fresh Python parent's RUSAGE_CHILDREN). The inputs are read
right before every run so each tool starts from a warm page cache (once is not enough
where the host pages out cold memory: this VM's DAMON scheme evicts pages idle for ~30 s),
and dirty pages are synced between runs. Results go to benchmarks/results/<name>.json and .md.
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
from synthetic import SHAPES, make_checkpoint_set  # noqa: E402

SCENARIOS = {  # name -> number of fine-tuned inputs
    "single": 1,
    "ta4": 4,
    "ties4": 4,
    "ties4-global": 4,  # hf-lines' default TIES (global trim per task); mergekit cannot do it
}
TOOLS = ["floor", "hf-lines", "mergekit"]
TOOL_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


# --- the hf-lines side; recipe keys live only here so they are easy to adjust ---------------

def hf_lines_recipe(scenario: str, base: Path, models: list[Path], alpha: float, beta: float,
                    density: float) -> dict:
    recipe = {"base_model": str(base), "models": [{"model": str(m)} for m in models],
              "lines": {"alpha": alpha, "beta": beta}}
    if scenario == "ta4":
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
    for sub in ("scale", "merge"):
        r = subprocess.run([*cmd, sub, "--help"], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
            missing[sub] = f"`hf-lines {sub} --help` failed: {tail[0][:160]}"
    return missing


# --- measuring ----------------------------------------------------------------------------

_RUSAGE_PARENT = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
                  "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
                  "sys.exit(rc)")


def measure(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Wall seconds and peak RSS (GB) of cmd and its children (the largest single process)."""
    stats = log.with_suffix(".rss")
    if Path("/usr/bin/time").exists():
        wrapped = ["/usr/bin/time", "-v", "-o", str(stats), *cmd]
    else:  # ru_maxrss of a fresh parent's children: the peak of the run alone
        wrapped = [sys.executable, "-c", _RUSAGE_PARENT, str(stats), *cmd]
    full_env = {**os.environ, **TOOL_ENV, "PYTHONPATH": str(REPO), **(env or {})}
    load_before = os.getloadavg()[0]  # other work on the machine skews timings; keep the evidence
    with open(log, "w") as out:
        t0 = time.perf_counter()
        rc = subprocess.call(wrapped, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        wall = time.perf_counter() - t0
    kb = None
    if stats.exists():
        text = stats.read_text()
        for line in text.splitlines():
            if "Maximum resident set size" in line:
                kb = int(line.split(":")[1])
        if kb is None and text.strip().isdigit():
            kb = int(text.strip())
    tail = log.read_text(errors="replace").strip().splitlines()[-8:] if rc else []
    return {"rc": rc, "wall_s": wall, "peak_rss_gb": kb * 1024 / 1e9 if kb else None,
            "load_avg_1m_before": load_before, "log_tail": tail}


def warm_page_cache(folders: list[Path]) -> float:
    t0 = time.perf_counter()
    for folder in folders:
        for f in sorted(folder.iterdir()):
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass
    return time.perf_counter() - t0


# --- one scenario -------------------------------------------------------------------------

def commands(tool: str, scenario: str, base: Path, fts: list[Path], out: Path, work: Path, args,
             hf_cmd: list[str], mk_yaml: Path | None) -> list[str] | str:
    """The command for a (tool, scenario), or a string saying why it cannot run."""
    if tool == "floor":
        return [sys.executable, str(HERE / "io_floor.py"), str(base), *map(str, fts), "-o", str(out),
                "--overwrite", "--reader", args.floor_reader]
    if tool == "hf-lines":
        device = ["--device", args.device] if args.device else []
        if scenario == "single":
            return [*hf_cmd, "scale", str(base), str(fts[0]), "-o", str(out),
                    "--alpha", str(args.alpha), "--beta", str(args.beta), "--overwrite", *device]
        recipe = work / f"hf-lines-{scenario}.yaml"
        recipe.write_text(yaml.safe_dump(hf_lines_recipe(scenario, base, fts, args.alpha, args.beta, args.density),
                                         sort_keys=False))
        return [*hf_cmd, "merge", str(recipe), "-o", str(out), "--overwrite", *device]
    if tool == "mergekit":
        if scenario == "ties4-global":
            return "mergekit trims per tensor only"
        cfg = work / f"mergekit-{scenario}.yaml"
        cfg.write_text(yaml.safe_dump(mergekit_env.mergekit_config(scenario, base, fts, args.alpha, args.beta,
                                                                   args.density, args.mergekit_dtype), sort_keys=False))
        return mergekit_env.mergekit_command(mk_yaml, cfg, out, args.mergekit_shard_size)
    raise ValueError(tool)


def run_scenario(scenario: str, tools: dict[str, str | None], base: Path, all_fts: list[Path], work: Path,
                 args, hf_cmd, mk_yaml, num_blocks: int) -> tuple[list[dict], dict]:
    fts = all_fts[: SCENARIOS[scenario]]
    rows, outputs, runnable = [], {}, {}
    for tool in TOOLS:
        if tool not in tools:
            continue
        row = {"scenario": scenario, "tool": tool}
        rows.append(row)
        if tools[tool]:
            row.update(status="unavailable", note=tools[tool])
            continue
        out = work / f"out-{scenario}-{tool}"
        cmd = commands(tool, scenario, base, fts, out, work, args, hf_cmd, mk_yaml)
        if isinstance(cmd, str):
            row.update(status="n/a", note=cmd)
            continue
        row.update(command=" ".join(cmd), samples=[])
        runnable[tool] = (row, cmd, out)
    # Repeats are interleaved across tools so that drifting load on the machine hits them alike.
    for rep in range(args.repeat):
        for tool, (row, cmd, out) in runnable.items():
            if row["samples"] and row["samples"][-1]["rc"] != 0:
                continue
            if out.exists():
                shutil.rmtree(out)
            os.sync()  # the previous run's dirty pages must not be flushed on this run's clock
            if not args.no_warm:
                warm_page_cache([base, *fts])
            sample = measure(cmd, work / f"{scenario}-{tool}-{rep}.log")
            row["samples"].append(sample)
            print(f"  {scenario:<12} {tool:<9} run {rep + 1}: rc {sample['rc']}  {sample['wall_s']:8.2f}s  "
                  f"{sample['peak_rss_gb'] or float('nan'):6.2f} GB", file=sys.stderr)
            if tool == "floor" or rep < args.repeat - 1:  # keep only the last output, and not the floor's
                shutil.rmtree(out, ignore_errors=True)
    for tool, (row, cmd, out) in runnable.items():
        samples = row["samples"]
        if all(s["rc"] == 0 for s in samples):
            walls = [s["wall_s"] for s in samples]
            rss = [s["peak_rss_gb"] for s in samples if s["peak_rss_gb"] is not None]
            row.update(status="ok", wall_s=min(walls) if args.stat == "min" else statistics.median(walls),
                       wall_s_min=min(walls), wall_s_median=statistics.median(walls),
                       peak_rss_gb=max(rss) if rss else None)
            if tool != "floor":
                outputs[tool] = out
        else:
            row.update(status="failed", note=" | ".join(samples[-1]["log_tail"][-3:])[-400:])
    by_tool = {r["tool"]: r for r in rows if r["status"] == "ok"}
    for r in rows:
        if r["status"] != "ok":
            continue
        if "floor" in by_tool:
            r["x_floor"] = r["wall_s"] / by_tool["floor"]["wall_s"]
        if "hf-lines" in by_tool:
            r["x_hf_lines"] = r["wall_s"] / by_tool["hf-lines"]["wall_s"]
            if r.get("peak_rss_gb") and by_tool["hf-lines"].get("peak_rss_gb"):
                r["rss_x_hf_lines"] = r["peak_rss_gb"] / by_tool["hf-lines"]["peak_rss_gb"]
    numerics = {}
    with_ref = scenario in ("single", "ta4")
    if outputs and (len(outputs) > 1 or with_ref) and not args.no_compare:
        t0 = time.perf_counter()
        numerics = compare_outputs(outputs, base, fts, alpha=args.alpha, beta=args.beta,
                                   num_blocks=num_blocks, with_reference=with_ref)
        print(f"  compared outputs in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    for out in outputs.values():
        shutil.rmtree(out, ignore_errors=True)
    for tool in TOOLS:
        shutil.rmtree(work / f"out-{scenario}-{tool}", ignore_errors=True)
    return rows, numerics


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
    ap.add_argument("--floor-reader", choices=["pread", "safe_open"], default="pread")
    ap.add_argument("--device", default=None, help="hf-lines --device (cuda, auto; default: the CPU); "
                    "benchmarks/cuda_check.py compares the CPU and CUDA paths")
    ap.add_argument("--mergekit-venv", default=str(mergekit_env.DEFAULT_VENV))
    ap.add_argument("--mergekit-shard-size", default=None, help="mergekit --out-shard-size (its default: 5B bytes)")
    ap.add_argument("--mergekit-dtype", default="bfloat16",
                    help="mergekit's compute dtype (float32 matches hf-lines' accuracy; output stays bf16)")
    ap.add_argument("--no-install", action="store_true", help="skip mergekit if its venv is not there yet")
    ap.add_argument("--no-compare", action="store_true")
    ap.add_argument("--no-warm", action="store_true", help="do not read the inputs into the page cache before each run")
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

    rows, numerics = [], {}
    for scenario in scenarios:
        sub = "scale" if scenario == "single" else "merge"
        scenario_tools = {**tools, **({"hf-lines": hf_missing[sub]} if "hf-lines" in tools and sub in hf_missing else {})}
        r, n = run_scenario(scenario, scenario_tools, base, fts, work, args, hf_cmd, mk_yaml, num_blocks)
        rows += r
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
                   "mergekit_flags": mergekit_env.MERGEKIT_FLAGS,
                   "mergekit_shard_size": args.mergekit_shard_size, "mergekit_dtype": args.mergekit_dtype},
        "rows": rows,
        "numerics": numerics,
    }
    md = markdown(result)
    print(md)
    results_dir = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{result['name']}.json").write_text(json.dumps(result, indent=2) + "\n")
    (results_dir / f"{result['name']}.md").write_text(md)
    print(f"wrote {results_dir / result['name']}.json and .md", file=sys.stderr)

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
