"""``hf-lines scale BASE FINETUNED -o OUT``: the single-task LiNeS edit."""
from __future__ import annotations

import argparse

from hf_lines.adapters import plan_output_format, scale_adapter
from hf_lines.cli.adapters import add_output_format_arg, print_adapter_summary
from hf_lines.pipeline.merger import LinesMerger
from hf_lines.cli.common import add_lines_args, add_output_args, add_publish_args, publish, run_options
from hf_lines.publish.tables import format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scale", help="apply LiNeS to one fine-tuned model: theta_0 + lambda(layer) * tau")
    p.add_argument("base", help="pre-trained model: local folder or Hub repo id[@revision]")
    p.add_argument("finetuned", help="fine-tuned model or PEFT LoRA adapter: local folder or Hub repo id[@revision]")
    add_lines_args(p)
    add_output_args(p)
    add_output_format_arg(p)
    add_publish_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fmt = plan_output_format([args.finetuned], args.output_format, token=args.token)
    if fmt == "adapter":  # reads the base's config and tensor names only
        out = scale_adapter(
            args.base, args.finetuned, args.output, alpha=args.alpha, beta=args.beta, policy=args.policy,
            stacks=args.stacks, token=args.token, overwrite=args.overwrite, card_template=args.card_template,
            allow_large_lambda=args.allow_large_lambda,
        )
        print_adapter_summary(out)
        publish(args, out)
        return 0
    merger = LinesMerger.from_pretrained(
        args.base, [args.finetuned], alpha=args.alpha, beta=args.beta, policy=args.policy,
        stacks=args.stacks, token=args.token, allow_large_lambda=args.allow_large_lambda,
    )
    out = merger.save_pretrained(args.output, output="model", **run_options(args))
    print_summary(merger, out)
    publish(args, out)
    return 0


def print_summary(merger: LinesMerger, out) -> None:
    rows = [[tower, i, lam] for tower, i, _, lam in merger.block_scales()]
    print(format_table(["tower", "block", "lambda"], rows))
    print(f"non-block tensors: {merger.lines.policy} policy (alpha = {merger.lines.alpha:g})")
    print(f"wrote {out}")
