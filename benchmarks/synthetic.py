"""Synthetic LLaMA-shaped checkpoints with random bf16 weights, for benchmarks.

    python benchmarks/synthetic.py /tmp/hf-lines-bench/set --shape 1.1b --finetunes 4

writes ``base/`` and ``ft1/`` .. ``ftN/`` (config.json, generation_config.json, sharded
safetensors with an index). Each fine-tune is base + Gaussian noise of ``noise`` times
the tensor's own scale, so its delta is small and dense like a real fine-tune's.

The default noise is 1e-2 relative, not 1e-3: bf16 resolves about 2^-8 = 3.9e-3 of a
value, so a 1e-3 relative change rounds away in most elements and the "delta" would be
mostly zeros, which is unlike real fine-tunes and degenerate for TIES trimming.

Every tensor is generated once and written to all N+1 checkpoints before the next one,
so the generator holds one tensor (plus its float32 draft) at a time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from safetensors_stream import StreamingSafetensorsWriter, nbytes  # noqa: E402


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    default_shards: int
    max_positions: int = 2048


SHAPES = {
    # TinyLlama-1.1B
    "1.1b": LlamaShape(hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4, vocab=32000, default_shards=3),
    # LLaMA-7B
    "7b": LlamaShape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32, vocab=32000, default_shards=3),
    # For CI: a few hundred kB per checkpoint, but still two shards so the index path is exercised.
    "smoke": LlamaShape(hidden=64, intermediate=176, layers=2, heads=4, kv_heads=2, vocab=512, default_shards=2,
                        max_positions=128),
}


def tensor_layout(shape: LlamaShape) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) in transformers' LlamaForCausalLM order."""
    h, inter = shape.hidden, shape.intermediate
    head_dim = h // shape.heads
    kv = shape.kv_heads * head_dim
    out = [("model.embed_tokens.weight", (shape.vocab, h))]
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (shape.vocab, h))]
    return out


def split_shards(layout: list[tuple[str, tuple[int, ...]]], shards: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Contiguous groups of roughly equal byte size (never splitting a tensor)."""
    sizes = [nbytes("BF16", s) for _, s in layout]
    total = sum(sizes)
    groups: list[list] = [[]]
    acc = 0
    for (name, s), size in zip(layout, sizes):
        boundary = total * len(groups) / shards
        if groups[-1] and acc + size / 2 > boundary and len(groups) < shards:
            groups.append([])
        groups[-1].append((name, s))
        acc += size
    return groups


def config_dict(shape: LlamaShape) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.hidden // shape.heads,
        "vocab_size": shape.vocab,
        "max_position_embeddings": shape.max_positions,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        # transformers >= 4.56 reads "dtype"; older versions read "torch_dtype".
        "dtype": "bfloat16",
        "torch_dtype": "bfloat16",
    }


GENERATION_CONFIG = {"bos_token_id": 1, "eos_token_id": 2, "max_length": 2048, "pad_token_id": 0}


def _draw(numel_shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(numel_shape, generator=g, dtype=torch.float32)


def make_checkpoint_set(root: str | Path, shape: str | LlamaShape = "1.1b", n_finetunes: int = 1,
                        layers: int | None = None, shards: int | None = None, seed: int = 0,
                        noise: float = 1e-2, verbose: bool = False) -> tuple[Path, list[Path]]:
    """Write root/base and root/ft1..ftN; return (base_path, [ft_paths]).

    An existing set with the same generation parameters is reused (see ``synthetic.json``).
    """
    root = Path(root)
    spec = SHAPES[shape] if isinstance(shape, str) else shape
    if layers is not None:
        spec = replace(spec, layers=layers)
    n_shards = shards or spec.default_shards
    names = ["base"] + [f"ft{k}" for k in range(1, n_finetunes + 1)]
    folders = [root / n for n in names]
    stamp = {"shape": spec.__dict__, "n_finetunes": n_finetunes, "shards": n_shards, "seed": seed, "noise": noise}
    stamp_file = root / "synthetic.json"
    if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
        return folders[0], folders[1:]
    if stamp_file.exists():
        stamp_file.unlink()

    layout = tensor_layout(spec)
    groups = split_shards(layout, n_shards)
    fnames = (["model.safetensors"] if len(groups) == 1 else
              [f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors" for k in range(len(groups))])
    total = sum(nbytes("BF16", s) for _, s in layout)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config_dict(spec), indent=2) + "\n")
        (folder / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
        if len(groups) > 1:
            weight_map = {name: fn for fn, group in zip(fnames, groups) for name, _ in group}
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        else:
            stale = folder / "model.safetensors.index.json"
            if stale.exists():
                stale.unlink()

    t0 = time.perf_counter()
    tensor_id = 0
    for fn, group in zip(fnames, groups):
        specs = [(name, "BF16", s) for name, s in group]
        writers = [StreamingSafetensorsWriter(folder / fn, specs) for folder in folders]
        try:
            for name, s in group:
                tensor_id += 1
                # Seeds derive from (seed, tensor, checkpoint) so the set does not depend on sharding.
                if name.endswith("norm.weight"):
                    scale = 1.0
                    base32 = torch.ones(s) + 0.05 * _draw(s, seed * 1_000_003 + tensor_id * 64)
                else:
                    scale = 0.02
                    base32 = _draw(s, seed * 1_000_003 + tensor_id * 64).mul_(scale)
                base = base32.to(torch.bfloat16)
                writers[0].write(name, base)
                for k in range(1, len(folders)):
                    ft = _draw(s, seed * 1_000_003 + tensor_id * 64 + k).mul_(noise * scale).add_(base32)
                    writers[k].write(name, ft.to(torch.bfloat16))
                    del ft
                del base32, base
        finally:
            for w in writers:
                w.close()
        if verbose:
            print(f"  wrote {fn} x{len(folders)} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n")
    return folders[0], folders[1:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", help="folder to write base/ and ft1..ftN/ into (keep it outside the repo)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1.1b")
    ap.add_argument("--layers", type=int, default=None, help="override the number of decoder layers")
    ap.add_argument("--shards", type=int, default=None, help="number of safetensors shards (default per shape)")
    ap.add_argument("--finetunes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=1e-2, help="fine-tune noise std relative to weight scale")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    base, fts = make_checkpoint_set(args.root, args.shape, args.finetunes, layers=args.layers,
                                    shards=args.shards, seed=args.seed, noise=args.noise, verbose=True)
    print(f"base: {base}")
    for p in fts:
        print(f"finetune: {p}")
    print(f"done in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
