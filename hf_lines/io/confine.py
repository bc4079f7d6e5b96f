"""Reads that stay inside the inputs: the one rule for every file that an input's metadata names.

An index (``weight_map``), an adapter folder or a Hub snapshot names files by relative path. A
crafted or broken entry (``../../x``, an absolute path, a symlink or a symlinked folder leading
elsewhere) must not make hf-lines read, and then publish, a file that is not part of the model;
and a FIFO or a device must never be opened, since opening one blocks forever or streams without
end. So a file is read only if, after following every symlink, it is a regular file inside its
model folder, or, for a Hub cache snapshot, inside that repo's cache folder: snapshot files are
symlinks to ``../../blobs/<hash>``.

The check runs just before the read; a file swapped between the two by someone who can already
write the model folder is outside what this guards against (bad metadata, not a local attacker).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from hf_lines.errors import CheckpointError, LinesError

# Cache folders that huggingface_hub names ``<type>s--<org>--<name>``, holding snapshots/<rev>/ and blobs/.
_CACHE_PREFIXES = ("models--", "datasets--", "spaces--")


def read_root(folder: Path) -> Path:
    """Where reads from the resolved ``folder`` must stay: itself, or for a Hub snapshot its repo cache folder."""
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith(_CACHE_PREFIXES):
        return folder.parent.parent
    return folder


def is_confined(target: Path, folder: Path) -> bool:
    """The rule, on paths already resolved (symlinks followed): ``target`` lies under ``read_root(folder)``."""
    return target.is_relative_to(read_root(folder))


def confined_file(
    folder: str | Path, entry: str | os.PathLike, *, what: str | None = None, error: type[LinesError] = CheckpointError
) -> Path | None:
    """``folder / entry`` if it is a regular file within the folder's read root; None if nothing is there.

    Raises ``error`` naming ``what`` (default: the path) for an entry that leads outside the
    folder, or that is a FIFO, a device, a socket or a folder. It stats and never opens.
    """
    folder = Path(folder)
    what = what or str(folder / entry)
    try:
        path = folder / entry
        target = path.resolve()
        root = folder.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # symlink loops, NUL bytes in the name
        raise error(f"{what}: the path cannot be resolved ({e}); fix the entry or re-download the model") from None
    if not is_confined(target, root):
        raise error(
            f"{what} leads outside the model folder {folder} (to {target}); hf-lines reads only files inside "
            "the model folder (or, for a Hub cache snapshot, its repo's blobs): fix the entry, or copy the file "
            "into the folder in place of the link"
        )
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        raise error(f"{what}: cannot stat {target} ({e}); check its permissions") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise error(f"{what} is {kind}, not a regular file, so it is not read; replace it with the file itself")
    return path


def read_confined_text(folder: str | Path, name: str, *, error: type[LinesError] = CheckpointError) -> str | None:
    """The text of the small file ``folder / name`` (config.json, an index) under the same rule; None if absent."""
    path = confined_file(folder, name, error=error)
    if path is None:
        return None
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read it ({e}); re-download the model") from None
