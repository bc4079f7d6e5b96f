"""How many full-model outputs one read pass may write, from the free disk space.

Writing every output of a sweep in one pass reads the inputs once. That needs room for
all of them at once; a sweep that keeps its outputs needs that room anyway, so it is
refused before anything is written when the disk is too small. A sweep whose outputs
are consumed and deleted one by one (evaluated, uploaded) runs in groups that fit: one
read pass per group, down to one pass per output.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from hf_lines.errors import LinesError, OptionError

Passes = Literal["auto", "single", "per_output"]
PASSES: tuple[str, ...] = ("auto", "single", "per_output")
DEFAULT_RESERVE = 1 << 30  # bytes left free for the card, support files, logs and everyone else


class InsufficientDiskError(LinesError):
    """The outputs of a sweep do not fit on the disk that should hold them."""


def free_bytes(folder: str | Path) -> int:
    """Free bytes on the file system of ``folder`` (or of its nearest existing parent)."""
    path = Path(folder).expanduser().resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_passes(passes: str) -> None:
    """Refuse an unknown ``passes`` (``--passes``) before any work."""
    if passes not in PASSES:
        raise OptionError(f"passes (--passes) must be one of {', '.join(PASSES)}, got {passes!r}")


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def plan_groups(
    n_outputs: int,
    output_bytes: int,
    free: int,
    *,
    keep: bool = True,
    passes: Passes = "auto",
    reserve: int = DEFAULT_RESERVE,
) -> list[list[int]]:
    """Output indices per read pass.

    Args:
        n_outputs: outputs to write.
        output_bytes: bytes of one output.
        free: free bytes where they go.
        keep: whether every output stays on disk (False: each is deleted once consumed).
        passes: ``auto`` (one pass when everything fits, else the largest groups that fit),
            ``single`` (one pass, refused if it does not fit) or ``per_output``.
        reserve: bytes to leave free.
    """
    check_passes(passes)
    if n_outputs == 0:
        return []
    room = free - reserve
    total = n_outputs * output_bytes
    fits_one = output_bytes <= room
    if keep and total > room:
        raise InsufficientDiskError(
            f"the sweep writes {n_outputs} outputs of {_gb(output_bytes)} ({_gb(total)}) but only {_gb(max(room, 0))} "
            f"are free (leaving {_gb(reserve)}); use fewer lambdas, LoRA policies (adapter outputs are megabytes), "
            "another output disk, or evaluate and delete each output as it is written (CLI: --eval --discard-models)"
        )
    if not fits_one:
        raise InsufficientDiskError(
            f"one output needs {_gb(output_bytes)} but only {_gb(max(room, 0))} are free (leaving {_gb(reserve)}); "
            "free some space or write to another disk"
        )
    if passes == "per_output":
        return [[i] for i in range(n_outputs)]
    if passes == "single":
        if total > room:
            raise InsufficientDiskError(
                f"passes='single' writes {n_outputs} outputs ({_gb(total)}) at once but only {_gb(room)} are free; "
                "use passes='auto'"
            )
        return [list(range(n_outputs))]
    size = max(1, min(n_outputs, room // max(output_bytes, 1)))
    return [list(range(i, min(i + size, n_outputs))) for i in range(0, n_outputs, size)]
