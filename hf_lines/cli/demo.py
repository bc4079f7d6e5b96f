"""``hf-lines demo [OUT]``: fine-tune a model trained here, apply LiNeS, show the forgetting it removes (offline)."""
from __future__ import annotations

import argparse

from hf_lines.demo import DEMO_TARGET, run_demo
from hf_lines.publish.tables import format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train and fine-tune a small model offline, apply LiNeS, compare forgetting")
    p.add_argument("output", nargs="?", default="hf-lines-demo", help="where to write the LiNeS model (with its card)")
    p.add_argument("--alpha", type=float, default=None, help="skip the validation sweep and use this alpha")
    p.add_argument("--beta", type=float, default=None, help="with --alpha: this beta (default 0)")
    p.add_argument("--target", default=DEMO_TARGET, help=f"the task to fine-tune on (default {DEMO_TARGET})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a 4-block model trained in seconds (for smoke tests)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    blocks = 4 if args.quick else 6
    print(f"hf-lines demo: pre-train a {blocks}-block GPT-2-style classifier on 13 primitive sequence tasks, give 8 new tasks\n"
          f"frozen zero-shot heads, fine-tune on {args.target!r}, then pick LiNeS' gamma on validation data.\n")
    r = run_demo(args.output, args.alpha, args.beta, overwrite=args.overwrite, target=args.target, seed=args.seed,
                 quick=args.quick, log=lambda m: print("  " + m, flush=True))
    print(f"\ntest accuracy (target: {r.target}; control: the other 7 tasks, mean):\n")
    print(format_table(["model", "target acc", "control acc", "target / fine-tuned", "control / zero-shot"],
                       [[a["model"], a["target_acc"], a["control_acc"], a["target_norm"], a["control_norm"]]
                        for a in r.accuracy]))
    print(f"\nLiNeS: lambda(i) = {r.alpha:g} + {r.beta:g} * i / (L - 1), L = {len(r.rows)}\n")
    print(format_table(["block", "lambda", "||tau||", "||lambda*tau||"], [list(x) for x in r.rows]))
    print(f"\nwrote the LiNeS model and its card to {r.output}  ({sum(r.seconds.values()):.0f} s)")
    return 0
