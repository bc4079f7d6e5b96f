"""CPU against CUDA on a synthetic LLaMA checkpoint: wall time, peak memory, and whether the bytes agree.

    python benchmarks/cuda_check.py --out results.json                  # 1.1B: single edit, 2-model TA, 2-model TIES
    python benchmarks/cuda_check.py --smoke --devices cpu --out x.json  # seconds; runs where no GPU is

Each run is the ``hf-lines`` CLI in its own process (imports included), the inputs read into the
page cache right before it; the child reports its own wall time, peak RSS and peak CUDA memory.
The I/O floor (``io_floor.py``: read every input, write one checkpoint) is measured once per
scenario, for ratios. Every weights file of the CUDA output is compared with the CPU output's
(sha256; where they differ, the number of differing values). Results are written after every
run, so a run stopped by a time limit still leaves what it measured. ``benchmarks/cuda_check.sh``
runs this with the tests on the GPU machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_report import machine  # noqa: E402
from compare import output_digest  # noqa: E402
from synthetic import make_checkpoint_set  # noqa: E402

SCENARIOS = {"single": 1, "ta2": 2, "ties2": 2}  # name -> fine-tuned inputs
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
       "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def child(stats: str, argv: list[str]) -> int:
    """Run the CLI in this process and write its wall time and peak memory to ``stats``."""
    import torch

    from hf_lines.cli import main

    t0 = time.perf_counter()
    rc = main(argv)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(stats).write_text(json.dumps({"rc": rc, "main_s": wall, "peak_rss_gb": rss / 1e9,
                                       "peak_cuda_gb": None if peak is None else peak / 1e9}))
    return rc


def warm(folders: list[Path]) -> None:
    for folder in folders:
        for f in sorted(folder.glob("*.safetensors")):
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass


def count_differences(a: Path, b: Path) -> dict:
    """Values whose bits differ between two outputs, and the largest distance in ulps."""
    import torch
    from safetensors import safe_open

    differ = total = worst = 0
    for fa in sorted(a.glob("*.safetensors")):
        with safe_open(fa, "pt") as x, safe_open(b / fa.name, "pt") as y:
            for name in x.keys():
                s, t = x.get_tensor(name), y.get_tensor(name)
                ints = {2: torch.int16, 4: torch.int32}.get(s.element_size())
                total += s.numel()
                if ints is None:
                    differ += int((s != t).sum())
                    continue
                i, j = s.view(ints).to(torch.int64), t.view(ints).to(torch.int64)
                differ += int((i != j).sum())
                mask = (1 << (8 * s.element_size() - 1)) - 1
                oi, oj = torch.where(i < 0, -(i & mask), i), torch.where(j < 0, -(j & mask), j)
                if s.numel():
                    worst = max(worst, int((oi - oj).abs().max()))
    return {"values": total, "differing": differ, "max_ulp": worst}


def fma_probe() -> dict:
    """Which of torch's elementwise forms fuse a multiply-add, on each device (the arithmetic avoids them)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1 << 20, generator=g), torch.randn(1 << 20, generator=g)
    w = 0.3712345
    probe = {}
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        x, y = a.to(dev), b.to(dev)
        separate = (x + y * w).cpu()
        probe[dev] = {
            "add(alpha=w) differs from a + (b * w)": int((torch.add(x, y, alpha=w).cpu() != separate).sum()),
            "add(alpha=1) differs from a + b": int((torch.add(x, y, alpha=1).cpu() != (x + y).cpu()).sum()),
            "sub(alpha=1) differs from a - b": int((torch.sub(x, y).cpu() != (x + (-y)).cpu()).sum()),
            "values": a.numel(),
        }
    return probe


def hf_lines_args(scenario: str, base: Path, fts: list[Path], out: Path, device: str, work: Path) -> list[str]:
    common = ["-o", str(out), "--overwrite", "-q", "--device", device]
    if scenario == "single":
        return ["scale", str(base), str(fts[0]), "--alpha", "0.5", "--beta", "0.5", *common]
    recipe = {"base_model": str(base), "models": [{"model": str(m)} for m in fts], "lines": {"alpha": 0.5, "beta": 0.5},
              "method": "task_arithmetic" if scenario == "ta2" else "ties",
              # zero_sign: tensor keeps TIES to the merge pass (the default counts the whole model's signs too)
              "method_options": {} if scenario == "ta2" else {"density": 0.2, "zero_sign": "tensor"}}
    path = work / f"{scenario}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return ["merge", str(path), *common]


def timed(cmd: list[str], log: Path) -> tuple[int, float]:
    with open(log, "w") as out:
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV})
        return rc, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1.1b")
    ap.add_argument("--smoke", action="store_true", help="the tiny 'smoke' shape")
    ap.add_argument("--scenarios", default="single,ta2,ties2")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="inputs and outputs (default: a temporary folder, removed)")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # one timed run: --child STATS CLI-ARGS...
        return child(argv[1], argv[2:])
    args = ap.parse_args(argv)

    import torch

    shape = "smoke" if args.smoke else args.shape
    scenarios = [s for s in args.scenarios.split(",") if s]
    devices = [d for d in args.devices.split(",") if d]
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="hf-lines-cuda-check-"))
    work = root / "runs"
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": machine(), "shape": shape, "runs": [], "comparisons": {}, "floor": {}}
    if torch.cuda.is_available():
        result["machine"]["gpu"] = torch.cuda.get_device_name(0)
        result["machine"]["torch_cuda"] = torch.version.cuda

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    result["fma_probe"] = fma_probe()
    t0 = time.perf_counter()
    base, all_fts = make_checkpoint_set(root / "inputs", shape, max(SCENARIOS[s] for s in scenarios))
    result["inputs_s"] = time.perf_counter() - t0
    result["checkpoint_gb"] = sum(f.stat().st_size for f in base.glob("*.safetensors")) / 1e9
    print(f"inputs ready in {result['inputs_s']:.1f}s ({result['checkpoint_gb']:.2f} GB each)", file=sys.stderr)
    save()
    try:
        for scenario in scenarios:
            fts = all_fts[: SCENARIOS[scenario]]
            floor_out = work / "floor"
            warm([base, *fts])
            rc, wall = timed([sys.executable, str(HERE / "io_floor.py"), str(base), *map(str, fts), "-o", str(floor_out),
                              "--overwrite"], work / f"{scenario}-floor.log")
            shutil.rmtree(floor_out, ignore_errors=True)
            result["floor"][scenario] = {"rc": rc, "wall_s": wall}
            print(f"{scenario:<7} floor  {wall:7.2f}s rc {rc}", file=sys.stderr)
            outs = {}
            for rep in range(args.repeat):
                for device in devices:
                    out = work / f"out-{scenario}-{device}"
                    stats = work / f"{scenario}-{device}-{rep}.json"
                    cli = hf_lines_args(scenario, base, fts, out, device, work)
                    os.sync()
                    warm([base, *fts])
                    rc, wall = timed([sys.executable, __file__, "--child", str(stats), *cli],
                                     work / f"{scenario}-{device}-{rep}.log")
                    row = {"scenario": scenario, "device": device, "repeat": rep, "rc": rc, "wall_s": wall,
                           **(json.loads(stats.read_text()) if stats.exists() else {})}
                    if rc:
                        row["log_tail"] = (work / f"{scenario}-{device}-{rep}.log").read_text(errors="replace")[-1500:]
                    if result["floor"][scenario]["rc"] == 0:
                        row["x_floor"] = wall / result["floor"][scenario]["wall_s"]
                    result["runs"].append(row)
                    print(f"{scenario:<7} {device:<5}  {wall:7.2f}s rc {rc}  peak cuda {row.get('peak_cuda_gb')} GB  "
                          f"rss {row.get('peak_rss_gb', float('nan')):.2f} GB", file=sys.stderr)
                    save()
                    if rc == 0:
                        outs[device] = out
            if len(outs) > 1:
                names = list(outs)
                ref = output_digest(outs[names[0]])
                for other in names[1:]:
                    same = output_digest(outs[other]) == ref
                    cmp = {"identical_bytes": same}
                    if not same:
                        cmp.update(count_differences(outs[names[0]], outs[other]))
                    result["comparisons"][f"{scenario}: {names[0]} vs {other}"] = cmp
                    print(f"{scenario:<7} {names[0]} vs {other}: {cmp}", file=sys.stderr)
            for out in outs.values():
                shutil.rmtree(out, ignore_errors=True)
            save()
    finally:
        save()
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"runs": [{k: r.get(k) for k in ("scenario", "device", "rc", "wall_s", "x_floor", "peak_cuda_gb")}
                               for r in result["runs"]], "comparisons": result["comparisons"],
                      "floor": result["floor"], "fma_probe": result["fma_probe"]}, indent=1))
    return 1 if any(r["rc"] for r in result["runs"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
