"""Where this machine's per-kernel model is kept: the ``kernels`` section of its calibration file
(:mod:`dnncost.measuring.calibrate`), as plain data. :func:`model_in` is the one reader of that
section; :func:`load_operator_model` and :func:`read_operator_model` find the file, and
:func:`save_operator_model` writes it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from dnncost.core.errors import InputSpecError
from dnncost.prediction import reading
from dnncost.prediction.errors import (
    CALIBRATE_COMMAND,
    REFIT_COMMAND,
    ModelFormatError,
    NotCalibratedError,
    OldModelFormatError,
)
from dnncost.prediction.model import OperatorModel
from dnncost.prediction.samples import samples_path

if TYPE_CHECKING:
    from dnncost.measuring.calibrate import Calibration

SECTION = "kernels"  # the calibration section holding the fitted per-kernel model


def save_operator_model(model: OperatorModel) -> str:
    """Store ``model`` in this machine's calibration file (its fingerprint's)."""
    from dnncost.core.environment import current_environment
    from dnncost.measuring.calibrate import Calibration, save_calibration

    env = current_environment("cpu", threads=model.threads)
    base = Calibration(fingerprint=model.fingerprint, device="cpu", threads=model.threads,
                       created=model.created, environment=env.to_dict())
    return str(save_calibration(base.with_section(SECTION, {"model": model.to_dict()})))


def model_in(calibration: Calibration) -> OperatorModel | None:
    """The per-kernel model a calibration file holds (its kernel section): the one reader of that
    section. None when the calibration has none; NotCalibratedError naming the command that makes
    a readable one when the section is malformed or in the old pickled format (never unpickled):
    the refit where the calibration's timed samples are kept beside it, else a new calibration."""
    section = calibration.sections.get(SECTION)
    if section is None:
        return None
    try:
        return OperatorModel.from_dict(reading.mapping(section, SECTION, required=("model",))["model"])
    except OldModelFormatError as exc:
        if samples_path(calibration.fingerprint).is_file():
            raise NotCalibratedError(f"{exc}; run `{REFIT_COMMAND}` to refit it in the new format "
                                     "from the timed samples kept beside it (seconds)") from None
        raise NotCalibratedError(f"{exc}, and no timed samples to refit it from are kept beside "
                                 f"it: run `{CALIBRATE_COMMAND}` again") from None
    except ModelFormatError as exc:
        raise NotCalibratedError(f"the stored per-kernel model is unreadable ({exc}); run "
                                 f"`{CALIBRATE_COMMAND}` again") from None


def read_operator_model(path: str) -> OperatorModel:
    """The per-kernel model stored in the calibration file at ``path`` (any machine's)."""
    from pathlib import Path

    from dnncost.core.errors import CalibrationError
    from dnncost.measuring.calibrate import read_calibration

    if not Path(path).is_file():
        raise NotCalibratedError(f"no calibration file at '{path}'")
    try:
        model = model_in(read_calibration(Path(path)))
    except CalibrationError as exc:
        raise NotCalibratedError(str(exc)) from None
    except NotCalibratedError as exc:
        raise NotCalibratedError(f"'{path}': {exc}") from None
    if model is None:
        raise NotCalibratedError(f"'{path}' holds no per-kernel model; run `{CALIBRATE_COMMAND}`")
    return model


def load_operator_model(device: str = "cpu", *, threads: int | None = None) -> OperatorModel:
    """This machine's fitted model; NotCalibratedError (naming the command to run) when absent."""
    from dnncost.measuring.calibrate import calibration_path, load_calibration

    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise InputSpecError(f"thread count must be a positive integer, got {threads}")
    cal = load_calibration(device, threads=threads)
    model = model_in(cal) if cal is not None else None
    if model is None:
        raise NotCalibratedError(
            f"this machine has no per-kernel calibration ({calibration_path(device, threads=threads)} "
            f"{'has none' if cal is not None else 'does not exist'}): run `{CALIBRATE_COMMAND}` "
            "first (about 5 minutes on 2 cores; --quick for a rough one in about a minute)")
    return model


__all__ = ["SECTION", "load_operator_model", "model_in", "read_operator_model", "save_operator_model"]
