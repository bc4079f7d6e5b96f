"""The ``hf-lines`` command: a thin layer over the Python API, one module per subcommand."""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

from ..errors import LinesError

# Subcommand modules, each with ``register(subparsers)`` that sets ``func`` on its parser.
COMMANDS = ("layers", "scale", "merge", "demo", "push", "soup", "evaluate", "sweep")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="hf-lines",
        description="LiNeS (Layer-increasing Network Scaling) for Hugging Face checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"hf-lines {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        import_module(f".{name}", __name__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except LinesError as e:
        print(f"hf-lines: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hf-lines: interrupted; no output was left half-written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
