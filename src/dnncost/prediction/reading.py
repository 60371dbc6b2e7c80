"""Strict readers of a stored model's plain data (what ``json.loads`` gives: dicts, lists, numbers,
strings, booleans, None).

Each reader returns the value with its type checked -- a bool is never taken for a number, an int
never for a bool, a list never for a dict -- or raises :class:`ModelFormatError` naming where in the
data it went wrong (``kinds.conv.trees.trees[3].left``). Nothing read is ever called, imported or
evaluated: the readers only look at types and values.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from dnncost.prediction.errors import ModelFormatError


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def mapping(value: object, where: str, *, required: Collection[str] = (),
            optional: Collection[str] = ()) -> Mapping[str, Any]:
    """``value`` as a dict with string keys holding every ``required`` key and, when ``required``
    or ``optional`` is given, no key outside the two."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ModelFormatError(f"{where} must be an object with string keys, got {_kind(value)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise ModelFormatError(f"{where} lacks {', '.join(missing)}")
    if required or optional:
        extra = sorted(set(value) - set(required) - set(optional))
        if extra:
            raise ModelFormatError(f"{where} has unknown fields: {', '.join(extra)}")
    return value


def sequence(value: object, where: str, *, length: int | None = None) -> Sequence[Any]:
    """``value`` as a list (of ``length`` items when given)."""
    if not isinstance(value, list):
        raise ModelFormatError(f"{where} must be a list, got {_kind(value)}")
    if length is not None and len(value) != length:
        raise ModelFormatError(f"{where} has {len(value)} items, expected {length}")
    return value


def number(value: object, where: str, *, finite: bool = True) -> float:
    """``value`` as a float (an int or a float, never a bool); finite unless ``finite`` is False."""
    if type(value) not in (int, float):
        raise ModelFormatError(f"{where} must be a number, got {_kind(value)}")
    out = float(value)  # type: ignore[arg-type]
    if finite and not math.isfinite(out):
        raise ModelFormatError(f"{where} must be a finite number, got {out}")
    return out


def integer(value: object, where: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int (never a bool or a float) in [``low``, ``high``]."""
    if type(value) is not int:
        raise ModelFormatError(f"{where} must be an integer, got {_kind(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ModelFormatError(f"{where} must lie in [{low}, {high}], got {value}")
    return value


def boolean(value: object, where: str) -> bool:
    """``value`` as a bool (true or false, never 0 or 1)."""
    if type(value) is not bool:
        raise ModelFormatError(f"{where} must be true or false, got {_kind(value)}")
    return value


def text(value: object, where: str) -> str:
    """``value`` as a string."""
    if not isinstance(value, str):
        raise ModelFormatError(f"{where} must be a string, got {_kind(value)}")
    return value


def numbers(value: object, where: str, *, length: int | None = None, finite: bool = True
            ) -> np.ndarray:
    """A list of numbers as a float64 array (one type check per item, no per-item error path)."""
    items = sequence(value, where, length=length)
    if not all(type(v) is float or type(v) is int for v in items):
        bad = next(v for v in items if type(v) not in (int, float))
        raise ModelFormatError(f"{where} must hold numbers only, found {_kind(bad)}")
    out = np.array(items, dtype=np.float64)
    if finite and not np.all(np.isfinite(out)):
        raise ModelFormatError(f"{where} must hold finite numbers only")
    return out


def integers(value: object, where: str, *, length: int | None = None) -> np.ndarray:
    """A list of integers as an int64 array."""
    items = sequence(value, where, length=length)
    if not all(type(v) is int for v in items):
        bad = next(v for v in items if type(v) is not int)
        raise ModelFormatError(f"{where} must hold integers only, found {_kind(bad)}")
    try:
        return np.array(items, dtype=np.int64)
    except OverflowError:
        raise ModelFormatError(f"{where} holds an integer out of range") from None


def booleans(value: object, where: str, *, length: int | None = None) -> np.ndarray:
    """A list of true/false as a bool array."""
    items = sequence(value, where, length=length)
    if not all(type(v) is bool for v in items):
        bad = next(v for v in items if type(v) is not bool)
        raise ModelFormatError(f"{where} must hold true/false only, found {_kind(bad)}")
    return np.array(items, dtype=bool)


__all__ = ["boolean", "booleans", "integer", "integers", "mapping", "number", "numbers", "sequence",
           "text"]
