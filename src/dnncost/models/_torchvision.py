"""Builders that wrap torchvision's model constructors, always with random weights."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torchvision
from torch import nn


def torchvision_builder(name: str, **defaults: object) -> Callable[..., nn.Module]:
    """A zoo builder for torchvision model ``name`` (``weights=None``: nothing is downloaded);
    ``defaults`` are keyword arguments the caller may override."""
    def build(**kwargs: Any) -> nn.Module:
        return torchvision.models.get_model(name, weights=None, **{**defaults, **kwargs})
    build.__name__ = name
    build.__doc__ = f"torchvision's {name}, random weights."
    return build
