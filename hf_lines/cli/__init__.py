"""The ``hf-lines`` command: a thin layer over the Python API, one module per subcommand."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from importlib import import_module

from hf_lines.errors import LinesError
from hf_lines.redact import install_log_filter, scrub

# Subcommand modules, each with ``register(subparsers)`` that sets ``func`` on its parser.
COMMANDS = ("layers", "scale", "merge", "demo", "push", "soup", "evaluate", "sweep", "clean")


def build_parser() -> argparse.ArgumentParser:
    from hf_lines.version import __version__

    parser = argparse.ArgumentParser(
        prog="hf-lines",
        description="LiNeS (Layer-increasing Network Scaling) for Hugging Face checkpoints.",
    )
    parser.add_argument("--version", action="version", version=f"hf-lines {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error instead of its message")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        import_module(f".{name}", __name__).register(sub)
    for command in sub.choices.values():  # --debug after the command name works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _terminated(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so staging folders are removed and nothing half-written stays
    raise KeyboardInterrupt


INTERRUPTED = "hf-lines: interrupted; no output was left half-written"


def main(argv: list[str] | None = None) -> int:
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is not _terminated:
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(argv)
    finally:
        if previous is not None:  # a caller's own handler (a test runner, a notebook) comes back
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    install_log_filter()  # no token in any log line, whichever library logs it
    try:
        return int(args.func(args) or 0)
    except LinesError as e:
        # a mistake in the input or the options (or a full disk): its message says what to do, a traceback would not
        if args.debug:
            raise
        print(f"hf-lines: error: {scrub(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def run() -> None:
    """The console script: ``main``, then exit without the interpreter's teardown.

    Every output is written, closed and moved into place when ``main`` returns; tearing down
    an interpreter that has loaded torch then takes another 0.5 to 1 s, a fifth of a 1.1B
    edit on two cores, for nothing.
    """
    # Installed here and kept to the end: a SIGTERM between main's return and the exit must not
    # fall back to the default action (killed by a signal, though the output is complete).
    signal.signal(signal.SIGTERM, _terminated)
    try:
        rc = main()
    except SystemExit as e:  # argparse's --help and usage errors
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:  # a signal just after main finished
        print(INTERRUPTED, file=sys.stderr)
        rc = 130
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()
