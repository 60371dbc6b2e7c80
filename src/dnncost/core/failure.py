"""A model's own failure, named: which module of the network raised, on which input.

Every command runs a user's network somewhere (the counter on meta tensors, the timer, the trainer,
the data-parallel workers). When the network's code raises -- a layer that cannot take the input's
shape, a forward that raises -- :func:`named_model_failure` turns that into one
:class:`~dnncost.core.errors.ModelFailedError` worded by :func:`~dnncost.core.errors.model_failed`.
It finds the failing module after the fact, from the traceback (the innermost frame whose ``self``
is one of the network's modules), so it costs nothing while the network runs, and an error that
did not come from the network's code (a data loader, the loss, running out of memory) passes
through unchanged.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import nn

from dnncost.core.device import is_out_of_memory
from dnncost.core.errors import DnncostError, model_failed


def failing_module(model: nn.Module, tb: TracebackType | None) -> tuple[str, str] | None:
    """(path, class name) of the innermost module of ``model`` on traceback ``tb`` ('' for
    ``model`` itself), or None when the traceback never enters ``model``'s code."""
    paths = {id(m): path for path, m in model.named_modules()}
    found = None
    while tb is not None:  # outermost frame first
        owner = tb.tb_frame.f_locals.get("self")
        if owner is not None and id(owner) in paths:
            found = (paths[id(owner)], type(owner).__name__)
        tb = tb.tb_next
    return found


def shapes_of(inputs: Sequence[Any]) -> str:
    """'1x3x32x32' (tensors' shapes joined by ', ') for the message."""
    return ", ".join("x".join(map(str, t.shape)) for t in inputs if isinstance(t, torch.Tensor))


@contextlib.contextmanager
def named_model_failure(model: nn.Module, *, name: str, inputs: Sequence[Any] = (),
                        shape: str | None = None) -> Iterator[None]:
    """Run a block that calls ``model``; a failure raised inside ``model``'s code becomes a
    ModelFailedError naming ``name``, the module and the input: the shapes of ``inputs`` (the
    batch), or ``shape`` ('32x1x32x32') when the block draws its own batches.

    dnncost's own errors, out-of-memory failures (see dnncost.core.device) and errors raised
    outside the model's code are re-raised unchanged."""
    try:
        yield
    except DnncostError:
        raise
    except Exception as exc:
        if isinstance(exc, MemoryError) or is_out_of_memory(exc):
            raise
        module = failing_module(model, exc.__traceback__)
        if module is None:
            raise
        raise model_failed(name, exc, module=module, shapes=shapes_of(inputs) or shape) from exc


__all__ = ["failing_module", "named_model_failure", "shapes_of"]
