"""``hf-lines merge RECIPE.yaml -o OUT``: merge several fine-tunes as a recipe says (schema: ``hf_lines.recipe``)."""
from __future__ import annotations

import argparse

from ..adapters.cli import add_output_format_arg
from ..merger import LinesMerger
from .common import add_allow_large_lambda_arg, add_output_args, add_publish_args, format_table, publish, run_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge fine-tunes with task arithmetic, TIES, DARE, Consensus, soups or WiSE-FT, then LiNeS (YAML recipe)",
        description="Merge the models a YAML recipe lists (schema in the README and hf_lines/recipe.py). "
        "The recipe is saved beside the output as hf_lines_recipe.yaml.",
    )
    p.add_argument("recipe", help="YAML recipe: base_model, models, method, method_options, lines, dtype, output")
    add_allow_large_lambda_arg(p)
    add_output_args(p)
    add_output_format_arg(p)
    add_publish_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    merger = LinesMerger.from_recipe(args.recipe, token=args.token, allow_large_lambda=args.allow_large_lambda)
    out = merger.save_pretrained(args.output, output=args.output_format, **run_options(args))
    print_merge_summary(merger)
    print(f"wrote {out}")
    publish(args, out)
    return 0


def print_merge_summary(merger: LinesMerger) -> None:
    method = merger.method.describe()
    name = method.pop("method")
    options = ", ".join(f"{k}={v}" for k, v in method.items() if v is not None)
    print(f"merged {len(merger.models)} model(s) with {name}" + (f" ({options})" if options else ""))
    lines = merger.lines
    how = "auto" if merger.alpha_setting == "auto" else "given"
    print(f"LiNeS: alpha = {lines.alpha:.6g} ({how}), beta = {lines.beta:g}, non-block policy {lines.policy}")
    rows = [[tower, i, lam] for tower, i, _, lam in merger.block_scales()]
    if rows:
        print(format_table(["tower", "block", "lambda"], rows))
