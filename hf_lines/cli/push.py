"""``hf-lines push FOLDER REPO_ID``: upload an output folder (model or adapter) to the Hub."""
from __future__ import annotations

import argparse

from hf_lines.publish.hub import push_folder
from hf_lines.cli.common import repo_id_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="upload an output folder to a Hub model repo (created if needed), in one commit")
    p.add_argument("folder", help="the folder that `hf-lines scale`, `hf-lines merge` or save_pretrained wrote")
    p.add_argument("repo_id", type=repo_id_arg, help="Hub model repo, e.g. your-name/model-name")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    p.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request against main instead of committing")
    p.add_argument("--commit-message", default=None, help="the commit title")
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)  # prefer HF_TOKEN or `hf auth login`
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = push_folder(args.folder, args.repo_id, private=args.private or None, revision=args.revision,
                       create_pr=args.create_pr, commit_message=args.commit_message, token=args.token)
    print(f"pushed {args.folder} to {info.pr_url or info.commit_url}")
    return 0
