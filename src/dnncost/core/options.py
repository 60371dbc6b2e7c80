"""Option records with keyword overrides, one rule for all of them: ``count(model, optimizer="adam")``
and ``time_model(model, shape, steps=20)`` mean the same as passing an options record with that
field changed, and a misspelt field is a clear TypeError naming the fields there are."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

OptionsT = TypeVar("OptionsT")


def with_overrides(options: OptionsT, overrides: Mapping[str, Any]) -> OptionsT:
    """``options`` (a frozen dataclass) with the fields in ``overrides`` replaced; TypeError naming
    the unknown ones and the fields there are."""
    fields = {f.name for f in dataclasses.fields(options)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; {type(options).__name__} has "
                        f"{', '.join(sorted(fields))}")
    return dataclasses.replace(options, **overrides) if overrides else options  # type: ignore[type-var]


__all__ = ["with_overrides"]
