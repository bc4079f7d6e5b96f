"""``hf-lines layers MODEL``: show which block every tensor belongs to."""
from __future__ import annotations

import argparse

from hf_lines.core.layers import LayerMap
from hf_lines.publish.tables import format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="show the layer map of a model (reads config and tensor names only)")
    p.add_argument("model", help="local folder or Hub repo id[@revision]")
    p.add_argument("--json", action="store_true", help="print the map as JSON")
    p.add_argument("--stacks", choices=("chain", "separate"), default="chain")
    p.add_argument("--alpha", type=float, default=None, help="also show each block's lambda for this alpha")
    p.add_argument("--beta", type=float, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    lm = LayerMap.from_pretrained(args.model, stacks=args.stacks)
    if args.json:
        print(lm.to_json(indent=2))
        return 0
    print(f"{args.model}: model_type={lm.model_type}, L={lm.num_blocks}")
    print(format_table(["tower", "L"], [[t.name, t.num_blocks] for t in lm.towers]))
    print()
    show_scale = args.alpha is not None and args.beta is not None
    rows = []
    for (tower, block), names in sorted(lm.block_names().items()):
        row = [lm.towers[tower].name, block, len(names)]
        if show_scale:
            row.append(lm.scale(names[0], args.alpha, args.beta))
        rows.append(row)
    header = ["tower", "block", "tensors"] + (["lambda"] if show_scale else [])
    print(format_table(header, rows))
    outside = [n for n, i in lm.params.items() if i is None]
    print(f"\noutside every block ({len(outside)}): " + ", ".join(outside))
    return 0
