"""Arguments shared by several subcommands."""
from __future__ import annotations

import argparse

from hf_lines.core.layers.map import POLICIES


def add_lines_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_argument_group("LiNeS schedule: lambda(i) = alpha + beta * i / (L - 1)")
    g.add_argument("--alpha", type=float, required=required, help="scale of the first block and of non-block tensors")
    g.add_argument("--beta", type=float, required=required, help="extra scale reached at the last block")
    g.add_argument("--policy", choices=POLICIES, default="paper",
                   help="non-block tensors: 'paper' = alpha for all (default); 'depth' = nearest block's scale")
    g.add_argument("--stacks", choices=("chain", "separate"), default="chain",
                   help="'chain' numbers encoder+decoder (or vision+LM) as one stack; 'separate' scales each alone")
    add_allow_large_lambda_arg(g)


def add_allow_large_lambda_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    from hf_lines.options import MAX_LAMBDA

    p.add_argument("--allow-large-lambda", action="store_true",
                   help=f"accept a schedule with |lambda| above {MAX_LAMBDA:g} (alpha and beta must still be finite)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="output folder (written elsewhere first, moved in when complete)")
    p.add_argument("--overwrite", action="store_true", help="replace the output folder if it exists")
    p.add_argument("--max-shard-size", default=None, help="largest safetensors shard, e.g. 2GB (default: a recipe's, else 5GB)")
    p.add_argument("--workers", type=int, default=None, help="threads that read and compute ahead (default: cores, max 4)")
    p.add_argument("--memory-budget", type=_size, default=None, metavar="SIZE",
                   help="memory that tensors in flight may hold, e.g. 512MB (default); one tensor always runs")
    p.add_argument("--device", default=None,
                   help="where to compute: cpu (default), cuda, cuda:1, or auto (accelerate's choice)")
    p.add_argument("--write-mode", choices=("auto", "direct", "buffered"), default="auto",
                   help="weights files: 'auto' writes with direct I/O where the filesystem allows it (default), "
                        "'buffered' through the page cache, 'direct' or fail")
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)  # prefer HF_TOKEN or `huggingface-cli login`
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _size(text: str) -> int:
    from hf_lines.errors import OptionError
    from hf_lines.options import parse_size

    try:
        return parse_size(text, "memory_budget", minimum=None)  # save_pretrained says what the value must be
    except OptionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run_options(args: argparse.Namespace) -> dict:
    """The ``save_pretrained`` keywords that add_output_args and add_publish_args collect."""
    options = dict(
        overwrite=args.overwrite, max_shard_size=args.max_shard_size, progress=not args.quiet,
        workers=args.workers, device=args.device, card_template=getattr(args, "card_template", None),
        write_mode=args.write_mode,
    )
    if args.memory_budget is not None:
        options["memory_budget"] = args.memory_budget
    return options


def add_publish_args(p: argparse.ArgumentParser) -> None:
    """--card-template and --push-to-hub REPO_ID (with its options), for every command that writes an output."""
    g = p.add_argument_group("model card and Hub")
    g.add_argument("--card-template", metavar="PATH", default=None,
                   help="Jinja template for the output's README.md (default: model_cards/lines_model_card.md.jinja)")
    g.add_argument("--push-to-hub", metavar="REPO_ID", type=repo_id_arg, default=None,
                   help="upload the finished output folder to this Hub model repo (created if needed)")
    g.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    g.add_argument("--push-revision", metavar="BRANCH", default=None, help="with --push-to-hub: branch to commit to")
    g.add_argument("--create-pr", action="store_true", help="with --push-to-hub: open a pull request against main instead")
    g.add_argument("--commit-message", default=None, help="with --push-to-hub: the commit title")


def publish(args: argparse.Namespace, folder) -> None:
    """After a command wrote ``folder``: push it when --push-to-hub was given (as `hf-lines push` does)."""
    if not getattr(args, "push_to_hub", None):
        return
    from hf_lines.publish.hub import push_folder

    info = push_folder(folder, args.push_to_hub, private=args.private or None, revision=args.push_revision,
                       create_pr=args.create_pr, commit_message=args.commit_message, token=getattr(args, "token", None))
    print(f"pushed to {info.pr_url or info.commit_url}")


def repo_id_arg(value: str) -> str:
    """argparse type: a Hub repo id, checked before any work starts."""
    from hf_lines.errors import PushError
    from hf_lines.publish.hub import check_push_request

    try:
        check_push_request(value)
    except PushError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value
