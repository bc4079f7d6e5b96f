"""Output folders that appear only when complete, and the small files a model needs."""
from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError
from .sources.checkpoint import BIN_INDEX, SAFE_INDEX, WEIGHT_SUFFIXES

# Files of the base folder that are not carried over: weights (rewritten), the card (regenerated).
_SKIP_NAMES = {SAFE_INDEX, BIN_INDEX, "README.md", ".gitattributes"}


@contextlib.contextmanager
def staged_folder(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``out`` that replaces it only if the block finishes."""
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; choose another output folder or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{tmp.name.rsplit('-', 1)[-1]}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def copy_support_files(src: Path, dst: Path) -> list[str]:
    """Copy config, tokenizer and other small files of a model folder (not weights, not the card)."""
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_dir() or f.name in _SKIP_NAMES or f.name.endswith(WEIGHT_SUFFIXES) or f.name.startswith("."):
            continue
        shutil.copy2(f, dst / f.name)
        copied.append(f.name)
    return copied
