"""``hf-lines demo [OUT]``: the whole job offline on a tiny model it builds."""
from __future__ import annotations

import argparse

from ..demo import run_demo
from .common import format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="fine-tune a tiny model offline, apply LiNeS and show what it did per layer")
    p.add_argument("output", nargs="?", default="hf-lines-demo", help="where to write the edited model")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("Building a tiny LLaMA (6 blocks) and fine-tuning it on a counting task...")
    r = run_demo(args.output, args.alpha, args.beta, overwrite=args.overwrite)
    print(f"\nLiNeS: lambda(i) = {args.alpha:g} + {args.beta:g} * i / (L - 1), L = {len(r.rows)}\n")
    print(format_table(["block", "lambda", "||tau||", "||lambda*tau||"], [list(x) for x in r.rows]))
    print("\nloss on the fine-tuning task (lower is better):")
    print(format_table(["model", "loss"], [[k, v] for k, v in r.losses.items()]))
    print(f"\nwrote the edited model to {r.output}")
    return 0
