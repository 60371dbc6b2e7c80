"""Errors dnncost raises for bad input: each says what was wrong and what would be right.

The CLI turns any :class:`DnncostError` into one line on stderr and exit code 2.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class DnncostError(Exception):
    """Base class of every user-facing error (bad input, missing data, unusable machine)."""


class ModelNotFoundError(DnncostError, LookupError):
    """A model name or spec that resolves to nothing."""


class InputSpecError(DnncostError, ValueError):
    """A malformed input shape, or an input the model cannot take."""


class DatasetError(DnncostError, ValueError):
    """A dataset spec that is unknown, or a local dataset path that is missing or malformed."""


class DeviceError(DnncostError, ValueError):
    """An unknown device, or a device this machine does not have."""


class StoreError(DnncostError):
    """An unreadable, foreign or too-new results database."""


class TrainingDivergedError(DnncostError, ArithmeticError):
    """The loss became NaN or infinite during training."""


def suggest(name: str, choices: Iterable[str], *, n: int = 5) -> str:
    """' Did you mean: a, b?' for the closest of ``choices`` to ``name``, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""
