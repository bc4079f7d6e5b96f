"""Exceptions whose messages name the file or tensor at fault and say what to do."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


class LinesError(Exception):
    """Base class of every error hf-lines raises on bad input."""


class CheckpointError(LinesError):
    """A checkpoint folder, shard or tensor cannot be read."""


class IncompatibleModelsError(LinesError):
    """Inputs that cannot be combined: different tensor sets, shapes or architectures."""


class NonFiniteError(LinesError):
    """A tensor holds NaN or infinity, so its task vector is meaningless."""


class OptionError(LinesError, ValueError):
    """An option or argument with a value that cannot work (a ValueError too, for code that catches those)."""


class OutputExistsError(LinesError):
    """The output folder already exists and overwriting was not asked for."""


class OutputLockedError(LinesError):
    """Another run is writing the same output folder right now."""


class UnsafeOutputError(LinesError):
    """The output folder is, holds or lies inside one of the inputs, which are never modified."""


class OutputWriteError(LinesError):
    """Writing the output failed (a full disk, a vanished folder); nothing half-written is left."""


class RecipeError(LinesError):
    """A merge recipe does not follow the schema."""


class AdapterError(LinesError):
    """A PEFT adapter that cannot be used as asked."""


class CardError(LinesError):
    """Model card metadata that the Hub would refuse, or a card template that cannot be rendered."""


class PushError(LinesError):
    """Uploading an output folder to the Hub failed; the local folder is kept and the message says how to retry."""


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """OS errors (a full disk) while writing ``path`` into an output, as OutputWriteError naming the file.

    Cards, plots, recipes and support files are written after the weights: a full disk there
    must read like one during the weights, not as a traceback from matplotlib or yaml.
    """
    try:
        yield
    except OSError as e:
        # open() names the file; shutil's copies name the source first and the file they were writing second
        raise OutputWriteError(_write_failed(e.filename2 or e.filename or path, e.strerror or str(e))) from e
    except Exception as e:
        # safetensors reports its own write errors (a full disk too) as SafetensorError("... I/O error ...")
        if type(e).__name__ != "SafetensorError" or "I/O error" not in str(e):
            raise
        raise OutputWriteError(_write_failed(path, str(e))) from e


def _write_failed(where: object, reason: str) -> str:
    return (f"writing {where} failed: {reason}; free space there or choose another output folder "
            "(the partial output is removed, inputs are untouched)")
