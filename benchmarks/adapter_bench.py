"""LiNeS on a rank-16 LoRA adapter of a 7B LLaMA, adapter out: wall time and peak RSS.

    python benchmarks/adapter_bench.py [--workdir /tmp/hf-lines-adapter-bench] [--rank 16] [--dtype float32]

The base is a LLaMA-7B-shaped folder (config.json, index, three safetensors shards) whose
shards hold real safetensors headers followed by a *sparse* hole where the 13.5 GB of
weights would be: the header reader sees a normal checkpoint, and the disk holds a few kB.
Reading any base weight would hit the hole (zeros, no error), so the timed run also
replaces ``Checkpoint.get`` with a function that raises: the run proves that adapter-out
mode reads only the base's config and tensor names.

The adapter has random factors on q, k, v, o, gate, up, down of all 32 layers. The timed
part runs in a fresh process, so its peak RSS (``ru_maxrss``) is its own; import time
(torch, transformers and peft, which peft's config classes pull in) is shown apart from
the scaling itself. Results go to benchmarks/results/adapter_bench.json and a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from synthetic import SHAPES, config_dict, split_shards, tensor_layout  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CODE = {"bfloat16": "BF16", "float32": "F32"}


def write_sparse_base(folder: Path) -> tuple[int, int]:
    """A 7B LLaMA folder whose shards are headers plus a sparse hole; returns (apparent, allocated) bytes."""
    shape = SHAPES["7b"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config_dict(shape), indent=2))
    groups = split_shards(tensor_layout(shape), shape.default_shards)
    weight_map, total = {}, 0
    for i, group in enumerate(groups, 1):
        fname = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, s in group:
            size = 2
            for d in s:
                size *= d
            header[name] = {"dtype": "BF16", "shape": list(s), "data_offsets": [offset, offset + size]}
            offset += size
            weight_map[name] = fname
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-(len(raw) + 8) % 8)
        with open(folder / fname, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            f.truncate(8 + len(raw) + offset)  # the data: a hole, no blocks allocated
        total += offset
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    files = list(folder.glob("*.safetensors"))
    return sum(f.stat().st_size for f in files), sum(f.stat().st_blocks * 512 for f in files)


def write_adapter(folder: Path, rank: int, dtype: str) -> int:
    """A rank-``rank`` LoRA adapter with random factors on every attention and MLP projection."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    shape = SHAPES["7b"]
    folder.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, base_model_name_or_path="synthetic-llama-7b",
               task_type="CAUSAL_LM").save_pretrained(str(folder))
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (out_f, in_f) in ((n, s) for n, s in tensor_layout(shape) if n.split(".")[-2] in TARGETS):
        module = name.removesuffix(".weight")
        tensors[f"base_model.model.{module}.lora_A.weight"] = (torch.randn(rank, in_f, generator=g) * 0.01).to(getattr(torch, dtype))
        tensors[f"base_model.model.{module}.lora_B.weight"] = (torch.randn(out_f, rank, generator=g) * 0.01).to(getattr(torch, dtype))
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return (folder / "adapter_model.safetensors").stat().st_size


TIMED = textwrap.dedent(r"""
    import json, resource, sys, time
    t0 = time.perf_counter()
    import torch, peft, hf_lines
    from hf_lines.io.checkpoint import Checkpoint
    t1 = time.perf_counter()

    def refuse(self, name):
        raise AssertionError(f"adapter-out mode read the base tensor {name}")

    Checkpoint.get = refuse
    base, adapter, out = sys.argv[1:4]
    hf_lines.scale_adapter(base, adapter, out, alpha=0.2, beta=0.8, overwrite=True)
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"import_s": t1 - t0, "scale_s": t2 - t1, "peak_rss_bytes": peak}))
""")


def check_output(adapter: Path, out: Path) -> float:
    """Largest relative error of the written B against lambda(layer) * B (lambda = 0.2 + 0.8 i / 31)."""
    from safetensors import safe_open

    worst = 0.0
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as a, safe_open(str(out / "adapter_model.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for layer in (0, 15, 31):
            key = f"base_model.model.model.layers.{layer}.mlp.down_proj.lora_B.weight"
            want = a.get_tensor(key).double() * (0.2 + 0.8 * layer / 31)
            got = b.get_tensor(key).double()
            worst = max(worst, float(((got - want).abs() / want.abs().clamp_min(1e-30)).max()))
    return worst


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/hf-lines-adapter-bench")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--dtype", choices=sorted(CODE), default="float32", help="dtype of the adapter factors")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    work = Path(args.workdir)
    base, adapter, out = work / "base-7b-sparse", work / f"lora-r{args.rank}-{args.dtype}", work / "scaled"
    apparent, allocated = write_sparse_base(base)
    adapter_bytes = write_adapter(adapter, args.rank, args.dtype)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    runs = []
    for _ in range(args.runs):
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", TIMED, str(base), str(adapter), str(out)],
                             capture_output=True, text=True, env=env)
        if res.returncode:
            print(res.stderr, file=sys.stderr)
            return res.returncode
        runs.append({**json.loads(res.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - start})
    best = min(runs, key=lambda r: r["scale_s"])
    result = {
        "base": {"shape": "llama-7b", "apparent_bytes": apparent, "allocated_bytes": allocated},
        "adapter": {"rank": args.rank, "dtype": args.dtype, "modules": 32 * len(TARGETS), "bytes": adapter_bytes},
        "runs": runs,
        "best": best,
        "max_rel_error_B": check_output(adapter, out),
        "limits": {"scale_s": 5.0, "peak_rss_bytes": 1 << 30},
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "adapter_bench.json").write_text(json.dumps(result, indent=2) + "\n")

    mb = 1 / (1 << 20)
    print(f"base: LLaMA-7B shape, {apparent / 1e9:.1f} GB of weights declared, {allocated * mb:.2f} MiB on disk (sparse)")
    print(f"adapter: rank {args.rank}, {32 * len(TARGETS)} modules, {args.dtype}, {adapter_bytes * mb:.0f} MiB")
    print(f"{'run':>4} {'imports s':>10} {'scale s':>8} {'process s':>10} {'peak RSS MiB':>13}")
    for i, r in enumerate(runs, 1):
        print(f"{i:>4} {r['import_s']:>10.2f} {r['scale_s']:>8.2f} {r['process_s']:>10.2f} {r['peak_rss_bytes'] * mb:>13.0f}")
    ok = best["scale_s"] < 5 and max(r["peak_rss_bytes"] for r in runs) < (1 << 30)
    print(f"scaled B vs lambda*B: max relative error {result['max_rel_error_B']:.1e}")
    print(f"limits (scale < 5 s, peak RSS < 1 GiB): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
