"""``hf-lines merge RECIPE.yaml -o OUT``: merge several fine-tunes as a recipe says (schema: ``hf_lines.pipeline.recipe``)."""
from __future__ import annotations

import argparse

from hf_lines.cli.adapters import add_output_format_arg
from hf_lines.pipeline.merger import LinesMerger
from hf_lines.cli.common import add_allow_large_lambda_arg, add_output_args, add_publish_args, publish, run_options
from hf_lines.publish.tables import format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="merge fine-tunes with task arithmetic, TIES, DARE, Consensus, soups or WiSE-FT, then LiNeS (YAML recipe)",
        description="Merge the models a YAML recipe lists (schema in docs/merging.md and hf_lines/pipeline/recipe.py). "
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
