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


class ModelFailedError(InputSpecError):
    """The model's own code failed: its factory raised, or its forward raised on the input given.

    Worded by :func:`model_failed` everywhere (count, time, train, predict, the study's workers)."""


def model_failed(name: str, cause: BaseException, *, module: tuple[str, str] | None = None,
                 shapes: str | None = None, building: bool = False) -> ModelFailedError:
    """The one wording of a model's own failure: "model X failed in module Y (Kind) on an input of
    shape Z: <first line of the cause>". ``module`` is (path, class name), path '' for the model's
    own forward; ``building`` says the factory (constructor) failed instead."""
    reason = _first_line(cause)
    if building:
        return ModelFailedError(f"building model '{name}' failed: {type(cause).__name__}: {reason}")
    where = ""
    if module is not None:
        path, kind = module
        where = f" in module '{path}' ({kind})" if path else f" in its own forward ({kind})"
    on = f" on an input of shape {shapes} (batch first)" if shapes else ""
    return ModelFailedError(f"model '{name}' failed{where}{on}: {reason}")


def inputs_failed(name: str, cause: BaseException, *, batch_size: int) -> InputSpecError:
    """The wording of a user's input factory that raised, as :func:`model_failed` words a model
    factory's: "building the inputs 'file.py:inputs' (batch size N) failed: Kind: <first line>"."""
    return InputSpecError(f"building the inputs '{name}' (batch size {batch_size}) failed: "
                          f"{type(cause).__name__}: {_first_line(cause)}")


def _first_line(cause: BaseException) -> str:
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


class DatasetError(DnncostError, ValueError):
    """A dataset spec that is unknown, or a local dataset path that is missing or malformed."""


class DeviceError(DnncostError, ValueError):
    """An unknown device, or a device this machine does not have."""


class StoreError(DnncostError):
    """An unreadable, foreign or too-new results database."""


class CalibrationError(DnncostError):
    """An unreadable, malformed or older-schema calibration file of this machine."""


class OutputError(DnncostError):
    """A file or folder that results cannot be written to (e.g. a report folder that is a file)."""


class TrainingDivergedError(DnncostError, ArithmeticError):
    """The loss became NaN or infinite during training."""


def suggest(name: str, choices: Iterable[str], *, n: int = 5) -> str:
    """' Did you mean: a, b?' for the closest of ``choices`` to ``name``, or '' when none is close.

    ``choices`` gathered from several sources may repeat a name (a zoo and a torchvision resnet50);
    each is offered once."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(choices)), n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""
