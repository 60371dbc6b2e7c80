"""What can go wrong when predicting, and the commands that put it right (named in the messages)."""
from __future__ import annotations

from dnncost.core.errors import DnncostError

CALIBRATE_COMMAND = "dnncost calibrate --ops"
REFIT_COMMAND = "dnncost calibrate --ops --refit"


class ModelFormatError(DnncostError):
    """A stored per-kernel model whose plain data is malformed: a field of the wrong type or shape."""


class OldModelFormatError(ModelFormatError):
    """A stored per-kernel model in the old pickled format, which is never loaded: unpickling
    data someone else wrote can run any code."""


__all__ = ["CALIBRATE_COMMAND", "REFIT_COMMAND", "ModelFormatError", "OldModelFormatError"]
