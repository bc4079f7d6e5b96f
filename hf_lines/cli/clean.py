"""``hf-lines clean OUT``: remove what interrupted runs left beside an output folder."""
from __future__ import annotations

import argparse

from hf_lines.io.staging import clean


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "clean",
        help="remove staging folders that killed runs left beside OUT, and restore an OUT an interrupted --overwrite moved aside",
        description="Every run on OUT does this by itself first; this does it by hand (for a soup folder, beside each "
        "of its outputs too). It waits for nothing: if a run is writing OUT now, it fails and changes nothing.",
    )
    p.add_argument("output", help="the output folder (-o) of the interrupted run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    done = clean(args.output)
    for line in done:
        print(line)
    if not done:
        print(f"nothing to clean beside {args.output}")
    return 0
