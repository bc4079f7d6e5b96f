"""Arguments shared by several subcommands."""
from __future__ import annotations

import argparse

from ..layers.map import POLICIES


def add_lines_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_argument_group("LiNeS schedule: lambda(i) = alpha + beta * i / (L - 1)")
    g.add_argument("--alpha", type=float, required=required, help="scale of the first block and of non-block tensors")
    g.add_argument("--beta", type=float, required=required, help="extra scale reached at the last block")
    g.add_argument("--policy", choices=POLICIES, default="paper",
                   help="non-block tensors: 'paper' = alpha for all (default); 'depth' = nearest block's scale")
    g.add_argument("--stacks", choices=("chain", "separate"), default="chain",
                   help="'chain' numbers encoder+decoder (or vision+LM) as one stack; 'separate' scales each alone")


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="output folder (written elsewhere first, moved in when complete)")
    p.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 2GB (default 5GB)")
    p.add_argument("--workers", type=int, default=None, help="threads that read and compute ahead (default: cores, max 4)")
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)  # prefer HF_TOKEN or `huggingface-cli login`
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def format_table(header: list[str], rows: list[list[object]]) -> str:
    """A plain aligned text table."""
    cells = [header] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        return f"{c:.4g}"
    return "-" if c is None else str(c)
