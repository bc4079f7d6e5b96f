"""The small files a model needs besides its weights (staging and placement: ``hf_lines.io.staging``)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hf_lines.errors import CheckpointError
from hf_lines.io.checkpoint import BIN_INDEX, SAFE_INDEX, WEIGHT_SUFFIXES
from hf_lines.io.confine import confined_file

# Files of the base folder that are not carried over: weights (rewritten), the card (regenerated).
_SKIP_NAMES = {SAFE_INDEX, BIN_INDEX, "README.md", ".gitattributes"}


def copy_support_files(src: Path, dst: Path) -> list[str]:
    """Copy config, tokenizer and other small files of a model folder (not weights, not the card).

    Only regular files inside the folder are read (the rule of ``sources.confine``; in a Hub
    cache snapshot, links into the repo's blobs are inside). A link that leads outside, a FIFO,
    a device or a socket is skipped with a warning that names it, rather than refused: these
    files are optional extras copied after the weights are written, so refusing would throw
    away a finished run, while skipping reads nothing outside the inputs and nothing of it can
    reach a Hub push. Returns the names copied.
    """
    copied = []
    for f in sorted(src.iterdir()):
        if f.is_dir() or f.name in _SKIP_NAMES or f.name.endswith(WEIGHT_SUFFIXES) or f.name.startswith("."):
            continue
        try:
            source = confined_file(src, f.name)
        except CheckpointError as e:
            logging.getLogger(__name__).warning("not copied to the output: %s", e)
            continue
        if source is None:  # a dangling link: nothing to copy
            continue
        shutil.copy2(source, dst / f.name)
        copied.append(f.name)
    return copied
