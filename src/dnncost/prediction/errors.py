"""What can go wrong when predicting, and the commands that put it right (named in the messages)."""
from __future__ import annotations

from dnncost.core.errors import DnncostError

CALIBRATE_COMMAND = "dnncost calibrate --ops"
REFIT_COMMAND = "dnncost calibrate --ops --refit"


class NotCalibratedError(DnncostError):
    """This machine has no usable per-kernel calibration: none yet, or one that cannot be read."""


class UncoveredOperatorError(DnncostError):
    """A network uses operators the time model cannot time (no cost formula: kind unknown)."""


class ModelFormatError(DnncostError):
    """A stored per-kernel model whose plain data is malformed: a field of the wrong type or shape."""


class OldModelFormatError(ModelFormatError):
    """A stored per-kernel model in an older format, which is never loaded: the pickled one
    (unpickling data someone else wrote can run any code), or an earlier version, whose trees take
    other features than this version computes."""


__all__ = ["CALIBRATE_COMMAND", "REFIT_COMMAND", "ModelFormatError", "NotCalibratedError",
           "OldModelFormatError", "UncoveredOperatorError"]
