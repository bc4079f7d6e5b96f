"""``hf-lines soup SFT POLICY [POLICY ...] --lambdas 0:1:11 -o OUTDIR``: a rewarded-soup sweep, with or without LiNeS."""
from __future__ import annotations

import argparse

from hf_lines.core.layers.map import POLICIES
from hf_lines.errors import OptionError
from hf_lines.options import check_device
from hf_lines.cli.common import add_allow_large_lambda_arg
from hf_lines.publish.tables import format_table
from hf_lines.cli.evaluate import add_eval_args, build_evaluator, print_results


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "soup",
        help="rewarded soups: interpolate policies trained from one SFT model, optionally LiNeS-scaled, one output per lambda",
        description="theta(lam) = theta_SFT + lambda(l) * (lam tau_1 + (1 - lam) tau_2), tau_k = theta_k - theta_SFT; "
        "lambda(l) = alpha + beta * l / (L - 1) with --alpha/--beta (LiNeS), 1 without (plain rewarded soup). "
        "Writes OUTDIR/<name>/ per output (lam0.30, ...; plain-lam0.30 for the plain baseline of a LiNeS sweep) and "
        "OUTDIR/soup.json. LoRA policies give exact LoRA outputs; full policies are streamed, every output of a "
        "pass from one read of the inputs.",
    )
    p.add_argument("sft", nargs="?", help="SFT model: folder or Hub id[@revision]; a full model or a LoRA adapter on --sft-base")
    p.add_argument("policies", nargs="*", help="policies: full models or LoRA adapters over the SFT model")
    p.add_argument("--recipe", default=None, help="a soup recipe (hf_lines_soup.yaml) instead of SFT, POLICY and the sweep")
    sweep = p.add_mutually_exclusive_group()
    sweep.add_argument("--lambdas", default=None,
                       help="weights (lam, 1 - lam) of two policies: '0,0.5,1', '0,0.1,...,1' or '0:1:11' (start:stop:count)")
    sweep.add_argument("--weights", default=None, help="one weight vector per output, any number of policies: '0.2,0.3,0.5;0.5,0.5,0'")
    g = p.add_argument_group("LiNeS (give both, or neither for the plain rewarded soup)")
    g.add_argument("--alpha", type=float, default=None, help="scale of the first block and of non-block tensors")
    g.add_argument("--beta", type=float, default=None, help="extra scale reached at the last block")
    g.add_argument("--policy", choices=POLICIES, default="paper", help="non-block tensors: 'paper' (alpha) or 'depth'")
    g.add_argument("--stacks", choices=("chain", "separate"), default="chain")
    add_allow_large_lambda_arg(g)
    p.add_argument("--include-plain", action=argparse.BooleanOptionalAction, default=None,
                   help="with LiNeS, also write the plain rewarded soup of every lambda as plain-<name> "
                        "(default: on with --eval, off otherwise)")
    p.add_argument("--sft-base", default=None, help="base model under an adapter SFT model (default: its adapter_config's)")
    p.add_argument("--output-format", choices=("auto", "adapter", "model"), default=None,
                   help="auto (default): LoRA adapters when every policy is a LoRA adapter, else full models")
    p.add_argument("-o", "--output", required=True, help="output folder: one sub-folder per output, plus soup.json")
    p.add_argument("--overwrite", action="store_true", help="replace output folders that exist")
    p.add_argument("--max-shard-size", default=None, help="largest safetensors shard (default 5GB)")
    p.add_argument("--workers", type=int, default=None, help="threads that read and compute ahead (default: cores, max 4)")
    p.add_argument("--passes", choices=("auto", "single", "per_output"), default="auto",
                   help="full outputs: 'auto' writes all in one read pass when the disk holds them")
    p.add_argument("--card-template", metavar="PATH", default=None, help="Jinja template for each output's README.md")
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--eval", action="store_true", help="score every output with --reward-model on --prompts afterwards")
    p.add_argument("--discard-models", action="store_true",
                   help="with --eval: delete each full output once its responses are generated (sweeps larger than the disk)")
    add_eval_args(p, required=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_lines.soups import RewardedSoup

    # usage mistakes first, before any input is opened
    if args.recipe and (args.sft or args.policies):
        raise OptionError("soup: give a --recipe or SFT and POLICY, not both")
    if not args.recipe:
        if not args.sft or not args.policies:
            raise OptionError("soup: give the SFT model and at least one POLICY (or --recipe)")
        if args.lambdas is None and args.weights is None:
            raise OptionError("soup: give --lambdas (e.g. 0:1:11) or --weights")
        if (args.alpha is None) != (args.beta is None):
            raise OptionError("soup: give both --alpha and --beta for the LiNeS soup, or neither for the plain soup")
    if args.eval and not (args.reward_model and args.prompts):
        raise OptionError("soup: --eval needs --reward-model and --prompts")
    if args.discard_models and not args.eval:
        raise OptionError("soup: --discard-models only makes sense with --eval")
    if args.recipe:
        soup = RewardedSoup.from_recipe(args.recipe, token=args.token, allow_large_lambda=args.allow_large_lambda)
    else:
        soup = RewardedSoup.from_pretrained(args.sft, args.policies, alpha=args.alpha, beta=args.beta, policy=args.policy,
                                            stacks=args.stacks, sft_base=args.sft_base, token=args.token,
                                            allow_large_lambda=args.allow_large_lambda)
    include_plain = args.include_plain
    if include_plain is None and not args.recipe:
        include_plain = bool(args.eval and soup.lines is not None)  # evaluate both sweeps: plain and LiNeS
    if args.eval:  # a bad sweep or device fails before the reward model is loaded
        soup.weight_vectors(args.lambdas, args.weights)
        check_device(args.device)
    evaluator = build_evaluator(args, args.output) if args.eval else None
    index = soup.save_pretrained(
        args.output, lambdas=args.lambdas, weights=args.weights, include_plain=include_plain,
        output=args.output_format, overwrite=args.overwrite, max_shard_size=args.max_shard_size, workers=args.workers,
        progress=not args.quiet, passes=args.passes, keep=not args.discard_models,
        on_output=evaluator.add_output if evaluator is not None else None, card_template=args.card_template,
    )
    rows = [[o["name"], o["variant"], o["lambda"], " ".join(f"{w:g}" for w in o["weights"]), o["format"],
             _size(o.get("bytes")) if o.get("kept", True) else "deleted"] for o in index.outputs]
    print(format_table(["output", "variant", "lambda", "weights", "format", "size"], rows))
    print(f"wrote {index.folder}/soup.json")
    if evaluator is not None:
        table = evaluator.score()
        print()
        print_results(table, evaluator.eval_dir)
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.2f} MB"
