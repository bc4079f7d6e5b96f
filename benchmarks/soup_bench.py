"""Rewarded soups at LLaMA-7B scale: a lambda sweep over full-weight and LoRA policies, wall time and peak RSS.

    python benchmarks/soup_bench.py lora                                  # rank-16 LoRA policies, 11 lambdas x 2 variants
    python benchmarks/soup_bench.py full --layers 4 --lambdas 0:1:3       # every output from one read pass
    python benchmarks/soup_bench.py full --lambdas 0,0.5,1 --discard      # 32 layers; outputs checked, then deleted

``full``: ``benchmarks/synthetic.py`` writes a LLaMA-7B-shaped bf16 SFT model and two
policies (SFT + 1e-2 relative noise; ``--layers`` for fewer layers) into ``--workdir``
(never inside the repo; reused across runs, removed with ``--cleanup``). The sweep runs in a
fresh process under ``RewardedSoup.save_pretrained``: every output of a pass from one read
of the three inputs, as many outputs per pass as the free disk holds (minus ``--reserve``).
Each output is spot-checked against theta_SFT + lambda(l) (lam tau_1 + (1 - lam) tau_2) in
float64 on a few tensors; with ``--discard`` it is deleted right after (the sweep then runs
in groups that fit the disk). The I/O floor is the same pipeline with no arithmetic (every
output tensor is the SFT tensor): read the inputs once per pass, write the outputs.

``lora``: the SFT model is a 7B-shaped folder of real safetensors headers over sparse holes
(no weights on disk) and every ``Checkpoint.get`` raises, so the run proves adapter outputs
never read a base weight. The two policies are random rank-16 LoRA adapters on q, k, v, o,
gate, up and down of every layer. The sweep writes 11 lambdas of the LiNeS soup and of the
plain soup (22 concatenated-rank adapters); a few modules are checked against
lam lambda(l) s B_1 A_1 + (1 - lam) lambda(l) s B_2 A_2 in float64.

Results go to benchmarks/results/soup_bench.json (one entry per case and configuration).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
RESULTS = HERE / "results" / "soup_bench.json"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALPHA, BETA = 0.5, 0.5
SPOT = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.layers.{last}.mlp.down_proj.weight",
        "model.norm.weight", "lm_head.weight"]


# ------------------------------------------------------------------------------------------ inputs
def make_lora(folder: Path, rank: int, seed: int) -> int:
    """A random rank-``rank`` float32 LoRA adapter on every projection of a LLaMA-7B; returns its size."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from synthetic import SHAPES, tensor_layout

    folder.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, task_type="CAUSAL_LM").save_pretrained(str(folder))
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (out_f, in_f) in ((n, s) for n, s in tensor_layout(SHAPES["7b"]) if n.split(".")[-2] in TARGETS):
        module = "base_model.model." + name.removesuffix(".weight")
        tensors[f"{module}.lora_A.weight"] = torch.randn(rank, in_f, generator=g) * 0.01
        tensors[f"{module}.lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.01
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return (folder / "adapter_model.safetensors").stat().st_size


def checkpoint_bytes(layers: int) -> int:
    from safetensors_stream import nbytes
    from synthetic import SHAPES, tensor_layout
    from dataclasses import replace

    return sum(nbytes("BF16", s) for _, s in tensor_layout(replace(SHAPES["7b"], layers=layers)))


# ------------------------------------------------------------------------------------------ child
def child(spec: dict) -> dict:
    """The timed part, in its own process: the sweep (or the floor), with spot checks as outputs appear."""
    t0 = time.perf_counter()
    import torch

    import hf_lines
    from hf_lines.soups import RewardedSoup
    from hf_lines.soups.disk import free_bytes, plan_groups

    t1 = time.perf_counter()
    checks: list[dict] = []
    check_s = 0.0
    if spec["case"] == "lora":
        from hf_lines.io.checkpoint import Checkpoint

        def refuse(self, name):
            raise AssertionError(f"an adapter output read the base tensor {name}")

        Checkpoint.get = refuse
    soup = RewardedSoup.from_pretrained(spec["sft"], spec["policies"], alpha=ALPHA, beta=BETA)
    outs = soup.outputs(spec["lambdas"], include_plain=spec["include_plain"])
    groups = None
    if spec["case"] != "lora":
        size = sum(i.nbytes for i in soup.inputs.infos().values())
        groups = plan_groups(len(outs), size, free_bytes(spec["out"]), keep=not spec["discard"], reserve=spec["reserve"],
                             passes=spec.get("passes", "auto"))

    def on_output(entry: dict) -> None:
        nonlocal check_s
        start = time.perf_counter()
        checks.append(spot_check(soup, entry))
        check_s += time.perf_counter() - start

    if spec["case"] == "floor":
        floor(soup, outs, spec, groups)
    else:
        soup.save_pretrained(spec["out"], lambdas=spec["lambdas"], include_plain=spec["include_plain"], overwrite=True,
                             progress=False, keep=not spec["discard"], disk_reserve=spec["reserve"],
                             passes=spec.get("passes", "auto"),
                             on_output=on_output if spec["case"] == "full" else None,
                             norms=spec.get("norms", True))
    t2 = time.perf_counter()
    return {"import_s": t1 - t0, "run_s": t2 - t1 - check_s, "check_s": check_s, "outputs": len(outs),
            "passes": len(groups) if groups else None, "outputs_per_pass": len(groups[0]) if groups else None,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "checks": checks,
            "torch_threads": torch.get_num_threads(), "hf_lines": hf_lines.__version__}


def _rows(ckpt, name: str, rows: int):
    """The first ``rows`` rows of a tensor, read by slice (the check must not add to the sweep's memory)."""
    from safetensors import safe_open

    with safe_open(str(ckpt.file_of(name)), "pt") as f:
        return f.get_slice(name)[:rows]


def spot_check(soup, entry: dict, rows: int = 16) -> dict:
    """Largest error of the first rows of a few output tensors against the float64 formula, in bf16 rounding steps
    at the operands' scale."""
    import torch
    from hf_lines.io import Checkpoint

    out = Checkpoint(entry["path"])
    last = soup.layer_map.num_blocks - 1
    scales = soup.layer_map.scales(entry["alpha"], entry["beta"])
    worst = 0.0
    for name in (n.format(last=last) for n in SPOT):
        base = _rows(soup.inputs.sft.checkpoint, name, rows).double()
        models = [_rows(p.checkpoint, name, rows).double() for p in soup.inputs.policies]
        want = base + scales[name] * sum(w * (m - base) for w, m in zip(entry["weights"], models))
        got = _rows(out, name, rows)
        assert got.dtype == torch.bfloat16
        # One bf16 rounding step (relative 2^-8) at the scale of the operands: where the interpolation cancels to
        # ~0 (want = -1e-20 from inputs of 1e-4), float32 arithmetic is exact only to that scale, as the engine's is.
        scale = torch.stack([want.abs(), base.abs(), *(m.abs() for m in models)]).amax(0)
        step = scale.clamp_min(1e-30) * 2.0 ** -8
        worst = max(worst, float(((got.double() - want).abs() / step).max()))
    return {"name": entry["name"], "max_err_bf16_steps": worst}


def lora_check(folder: Path, policies: list[Path], weights: list[float], scales: dict, probes: int = 4) -> float:
    """Largest relative error of B (A x) of every output module against sum_k w_k lambda(l) s_k B_k (A_k x), x random."""
    import torch
    from safetensors import safe_open

    g = torch.Generator().manual_seed(0)
    worst = 0.0
    handles = [safe_open(str(p / "adapter_model.safetensors"), "pt") for p in policies]
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        for key in (k for k in f.keys() if k.endswith("lora_A.weight")):
            module = key.removesuffix(".lora_A.weight")
            a, b = f.get_tensor(key).double(), f.get_tensor(f"{module}.lora_B.weight").double()
            x = torch.randn(a.shape[1], probes, generator=g, dtype=torch.float64)
            got = b @ (a @ x)
            lam = scales[module.removeprefix("base_model.model.") + ".weight"]
            want = sum(w * lam * 2.0 * (h.get_tensor(f"{module}.lora_B.weight").double()
                                        @ (h.get_tensor(key).double() @ x)) for h, w in zip(handles, weights))
            worst = max(worst, float((got - want).abs().max() / want.abs().max().clamp_min(1e-30)))
    return worst


def floor(soup, outs, spec: dict, groups) -> None:
    """The I/O floor: same reads, writers and passes, no arithmetic (each output tensor is the SFT tensor)."""
    import contextlib

    from hf_lines.pipeline.multi_stream import stream_many
    from hf_lines.io.support_files import staged_folder
    from hf_lines.io.writer import ShardedWriter

    infos = soup.inputs.infos()
    out = Path(spec["out"])
    for group in groups:
        with contextlib.ExitStack() as stack:
            tmps = [stack.enter_context(staged_folder(out / f"floor-{i}", True)) for i in group]
            writers = [ShardedWriter(t, infos, "5GB") for t in tmps]
            stream_many(writers[0].order, soup.inputs.read, lambda k, n, data: data[0], [w.write for w in writers],
                        sizes={n: i.nbytes for n, i in infos.items()}, progress=False)
            for w in writers:
                w.close()
        for i in group:
            shutil.rmtree(out / f"floor-{i}", ignore_errors=True)


def run_child(spec: dict) -> dict:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, __file__, "_child", json.dumps(spec)], capture_output=True, text=True, env=env)
    if res.returncode:
        sys.stderr.write(res.stderr[-5000:])
        raise SystemExit(f"the timed process failed ({res.returncode})")
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - start}


# ------------------------------------------------------------------------------------------ cases
def bench_lora(args) -> dict:
    from adapter_bench import write_sparse_base

    work = Path(args.workdir) / "lora"
    sft, p1, p2 = work / "sft-7b-sparse", work / "policy-1-r16", work / "policy-2-r16"
    apparent, allocated = write_sparse_base(sft)
    sizes = [make_lora(p, args.rank, seed) for p, seed in ((p1, 1), (p2, 2))]
    spec = {"case": "lora", "sft": str(sft), "policies": [str(p1), str(p2)], "lambdas": args.lambdas,
            "include_plain": True, "out": str(work / "soup"), "discard": False, "reserve": 0}
    runs = [run_child(spec) for _ in range(args.repeat)]
    out_bytes = sum(f.stat().st_size for f in (work / "soup").rglob("*.safetensors"))
    best = min(runs, key=lambda r: r["run_s"])
    from hf_lines.core.layers import LayerMap
    from hf_lines.soups import SoupIndex

    index = SoupIndex.load(work / "soup")
    layer_map = LayerMap.from_pretrained(sft)
    err = max(lora_check(work / "soup" / e["name"], [p1, p2], e["weights"], layer_map.scales(e["alpha"], e["beta"]))
              for e in index.outputs)
    shutil.rmtree(work / "soup", ignore_errors=True)  # 22 adapters of ~300 MB (float32 factors)
    return {"case": "lora", "shape": "llama-7b", "rank": args.rank, "policy_adapter_bytes": sizes,
            "sft": {"apparent_bytes": apparent, "allocated_bytes": allocated}, "lambdas": args.lambdas,
            "outputs": best["outputs"], "output_adapter_bytes_total": out_bytes, "runs": runs, "best": best,
            "max_rel_err": err}


def bench_full(args) -> dict:
    from synthetic import make_checkpoint_set

    work = Path(args.workdir) / f"full-{args.layers}"
    ckpt = checkpoint_bytes(args.layers)
    free = shutil.disk_usage(Path(args.workdir).parent if not Path(args.workdir).exists() else args.workdir).free
    have = (work / "inputs" / "synthetic.json").exists()
    need = (0 if have else 3 * ckpt) + ckpt + args.reserve
    print(f"checkpoints of {ckpt / 1e9:.2f} GB; free {free / 1e9:.1f} GB; need {need / 1e9:.1f} GB "
          f"({'inputs exist, ' if have else '3 inputs + '}one output + {args.reserve / 1e9:.0f} GB reserve)")
    if free < need:
        raise SystemExit("not enough free disk for this configuration; use --layers N or free some space")
    t = time.perf_counter()
    sft, policies = make_checkpoint_set(work / "inputs", "7b", n_finetunes=2, layers=args.layers, verbose=True)
    gen_s = time.perf_counter() - t
    spec = {"case": "full", "sft": str(sft), "policies": [str(p) for p in policies], "lambdas": args.lambdas,
            "include_plain": args.include_plain, "out": str(work / "soup"), "discard": args.discard,
            "reserve": args.reserve, "norms": not args.no_norms, "passes": args.passes}
    result = {"case": "full", "shape": "llama-7b", "layers": args.layers, "checkpoint_bytes": ckpt,
              "input_generation_s": gen_s, "lambdas": args.lambdas, "include_plain": args.include_plain,
              "discard": args.discard, "passes_setting": args.passes, "free_disk_bytes_before": free}
    _drop_outputs(work)
    result["sweep"] = run_child(spec)
    _drop_outputs(work)
    if args.floor:
        result["floor"] = run_child({**spec, "case": "floor"})
        result["sweep_vs_floor"] = result["sweep"]["run_s"] / result["floor"]["run_s"]
    _drop_outputs(work)
    result["max_err_bf16_steps"] = max(c["max_err_bf16_steps"] for c in result["sweep"]["checks"])
    if args.cleanup:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _drop_outputs(work: Path) -> None:
    shutil.rmtree(work / "soup", ignore_errors=True)


# ------------------------------------------------------------------------------------------ main
def machine() -> dict:
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "load_avg": os.getloadavg(),
            "python": platform.python_version(), "torch": torch.__version__}


def save(entry: dict) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": {}}
    key = entry["case"] if entry["case"] == "lora" else f"full-{entry['layers']}L-{entry['lambdas']}-{entry['passes_setting']}"
    data["runs"][key] = entry
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def report(entry: dict) -> None:
    gib = 1 / (1 << 30)
    if entry["case"] == "lora":
        b = entry["best"]
        print(f"LoRA soup, 7B shape, rank {entry['rank']} x 2 policies, {b['outputs']} adapters "
              f"({entry['output_adapter_bytes_total'] / 1e6:.0f} MB in all)")
        for r in entry["runs"]:
            print(f"  sweep {r['run_s']:.2f} s  (imports {r['import_s']:.1f} s, process {r['process_s']:.1f} s)  "
                  f"peak RSS {r['peak_rss_bytes'] * gib:.2f} GiB")
        print(f"  B (A x) vs float64 interpolation, every module of every output: max relative error {entry['max_rel_err']:.1e}")
        return
    s = entry["sweep"]
    print(f"full soup, 7B shape with {entry['layers']} layers ({entry['checkpoint_bytes'] / 1e9:.2f} GB per checkpoint), "
          f"{s['outputs']} outputs in {s['passes']} read pass(es) of up to {s['outputs_per_pass']}")
    print(f"  sweep {s['run_s']:.1f} s (+{s['check_s']:.1f} s spot checks), process {s['process_s']:.1f} s, "
          f"peak RSS {s['peak_rss_bytes'] * gib:.2f} GiB")
    if "floor" in entry:
        f = entry["floor"]
        print(f"  I/O floor {f['run_s']:.1f} s, peak RSS {f['peak_rss_bytes'] * gib:.2f} GiB; sweep / floor = {entry['sweep_vs_floor']:.2f}")
    print(f"  spot checks: max error {entry['max_err_bf16_steps']:.2f} bf16 rounding steps")


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "_child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", choices=["lora", "full"])
    p.add_argument("--workdir", default="/tmp/hf-lines-soup-bench", help="inputs and outputs (never inside the repo)")
    p.add_argument("--lambdas", default=None, help="default: 0:1:11 for lora, 0,0.5,1 for full")
    p.add_argument("--layers", type=int, default=32, help="full: decoder layers of the 7B shape (default 32)")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3, help="lora: timed runs")
    p.add_argument("--include-plain", action="store_true", help="full: also the plain soup of every lambda")
    p.add_argument("--discard", action="store_true", help="full: delete each output after its check (groups that fit)")
    p.add_argument("--reserve", type=float, default=4.0, help="GB of disk to leave free (default 4)")
    p.add_argument("--floor", action="store_true", help="full: also time the I/O floor")
    p.add_argument("--passes", choices=["auto", "single", "per_output"], default="auto",
                   help="full: read passes (auto: one when the disk holds every output)")
    p.add_argument("--no-norms", action="store_true", help="full: skip the per-tensor norms for the model cards")
    p.add_argument("--cleanup", action="store_true", help="full: delete the synthetic inputs afterwards")
    args = p.parse_args()
    args.lambdas = args.lambdas or ("0:1:11" if args.case == "lora" else "0,0.5,1")
    args.reserve = int(args.reserve * 1e9)
    entry = bench_lora(args) if args.case == "lora" else bench_full(args)
    entry["machine"] = machine()
    entry["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save(entry)
    report(entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
