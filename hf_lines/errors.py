"""Exceptions whose messages name the file or tensor at fault and say what to do."""
from __future__ import annotations


class LinesError(Exception):
    """Base class of every error hf-lines raises on bad input."""


class CheckpointError(LinesError):
    """A checkpoint folder, shard or tensor cannot be read."""


class IncompatibleModelsError(LinesError):
    """Inputs that cannot be combined: different tensor sets, shapes or architectures."""


class NonFiniteError(LinesError):
    """A tensor holds NaN or infinity, so its task vector is meaningless."""


class OutputExistsError(LinesError):
    """The output folder already exists and overwriting was not asked for."""


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
