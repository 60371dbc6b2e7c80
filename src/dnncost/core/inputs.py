"""The input spec: what a model is called with, as users have it.

One text spec serves every command (``count``, ``time``, ``predict``, ``train``):

- ``3x224x224`` -- one float tensor of one sample's shape (the batch dimension is added);
- ``16:int64`` -- a dtype after a colon (token ids); integer tensors hold values in [0, 2) unless a
  bound follows, ``16:int64:30522`` -> [0, 30522);
- ``3x224x224,4`` -- several positional tensors, comma separated (a list of bare integers such as
  ``3,224,224`` stays one shape, as it always meant);
- ``path/to/file.py:inputs`` -- a factory ``inputs(batch_size)`` returning a tensor, a tuple of
  positional tensors or a dict of keyword tensors (attention masks, token type ids, ...).

:func:`make_inputs` turns a spec -- or tensors, a tuple, or a dict of keyword tensors given in
Python -- into :class:`ModelInputs` (positional ``args`` + keyword ``kwargs``) on a device.
"""
from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dnncost.core.errors import DnncostError, InputSpecError, inputs_failed

DEFAULT_INT_HIGH = 2  # source: our choice -- 0/1 are valid token ids, masks and labels for any model

DTYPES: dict[str, torch.dtype] = {  # source: torch dtype names, with the usual short aliases
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64,
    "int64": torch.int64, "long": torch.int64, "int32": torch.int32, "int": torch.int32,
    "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}


def parse_dtype(text: str | torch.dtype) -> torch.dtype:
    """'bfloat16' (or torch.bfloat16) -> torch.bfloat16; a clear error for an unknown name."""
    if isinstance(text, torch.dtype):
        return text
    name = str(text).strip().lower().removeprefix("torch.")
    if name not in DTYPES:
        raise InputSpecError(f"unknown dtype '{text}'; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


@dataclass(frozen=True)
class Precision:
    """How a network's tensors are represented while it trains: parameters and floating inputs cast
    to ``dtype``, the forward (and loss) under ``torch.autocast(autocast)``, 4-d tensors in the
    channels_last memory format. The default changes nothing."""

    dtype: str | None = None  # bfloat16, float16, float32; None: as built
    autocast: str | None = None  # bfloat16 or float16; None: no autocast
    channels_last: bool = False

    def __post_init__(self) -> None:
        for name in (self.dtype, self.autocast):
            if name is not None:
                parse_dtype(name)  # a clear error for an unknown dtype name

    def apply(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in this precision and memory format (in place, as ``Module.to`` does)."""
        if self.dtype is not None:
            model.to(parse_dtype(self.dtype))
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch in this precision (floating tensors only) and memory format."""
        if self.dtype is not None and x.is_floating_point():
            x = x.to(parse_dtype(self.dtype))
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward_context(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` for the forward and loss, or nothing."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=parse_dtype(self.autocast))


@dataclass(frozen=True)
class TensorInput:
    """One input tensor of one sample: shape without the batch dimension, dtype, and for integer
    tensors the exclusive upper bound of its random values."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    high: int = DEFAULT_INT_HIGH

    def __str__(self) -> str:
        text = "x".join(map(str, self.shape))
        if self.dtype is not torch.float32:
            text += ":" + str(self.dtype).removeprefix("torch.")
            if self.high != DEFAULT_INT_HIGH:
                text += f":{self.high}"
        return text


InputFactory = Callable[[int], Any]


@dataclass(frozen=True)
class InputSpec:
    """Positional tensors made at random, or a factory called with the batch size."""

    tensors: tuple[TensorInput, ...] = ()
    factory: InputFactory | None = field(default=None, compare=False)
    name: str = ""  # how the spec was written, for reports

    def __post_init__(self) -> None:
        if not self.tensors and self.factory is None:
            raise InputSpecError("an input spec needs at least one tensor shape or a factory")

    def batch_bytes(self, batch_size: int) -> int | None:
        """Bytes of the random input tensors of ``batch_size`` samples (None for a factory's,
        unknown until it runs): what a batch takes before the model touches it."""
        if self.factory is not None:
            return None
        return sum(batch_size * math.prod(t.shape) * t.dtype.itemsize for t in self.tensors)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The first tensor's shape (one sample): what single-input reports show; () for a factory."""
        return self.tensors[0].shape if self.tensors else ()

    def __str__(self) -> str:
        return self.name or ",".join(map(str, self.tensors))


@dataclass(frozen=True)
class ModelInputs:
    """What a model is called with: ``model(*args, **kwargs)``."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def tensors(self) -> list[torch.Tensor]:
        """Every input tensor, positional first."""
        return [t for t in (*self.args, *self.kwargs.values()) if isinstance(t, torch.Tensor)]

    def describe(self) -> str:
        """'2x16:int64, attention_mask=2x16:int64' (batch first)."""
        def one(t: Any) -> str:
            if not isinstance(t, torch.Tensor):
                return type(t).__name__
            text = "x".join(map(str, t.shape))
            return text if t.dtype is torch.float32 else f"{text}:{str(t.dtype).removeprefix('torch.')}"
        return ", ".join([one(a) for a in self.args] + [f"{k}={one(v)}" for k, v in self.kwargs.items()])

    @property
    def batch_size(self) -> int:
        """The first dimension of the first input tensor (1 when there is none)."""
        tensors = [t for t in self.tensors() if t.dim() > 0]
        return int(tensors[0].shape[0]) if tensors else 1


_SHAPE = re.compile(r"^\d+(?:[x×]\d+)*$")


def _parse_tensor(text: str, whole: str) -> TensorInput:
    parts = text.strip().lower().split(":")
    dims = parts[0].strip()
    if not _SHAPE.match(dims) or any(int(d) <= 0 for d in re.split(r"[x×]", dims)) or len(parts) > 3:
        raise InputSpecError(
            f"malformed input shape '{whole}': expected positive integers joined by 'x', one sample "
            "without the batch dimension, optionally ':dtype' (e.g. 3x224x224, 16:int64, "
            "3x224x224,4 for two inputs, or path/to/file.py:inputs)")
    dtype = parse_dtype(parts[1]) if len(parts) > 1 else torch.float32
    high = DEFAULT_INT_HIGH
    if len(parts) == 3:
        if not parts[2].isdigit() or int(parts[2]) <= 0 or dtype.is_floating_point:
            raise InputSpecError(f"malformed input '{text}': a value bound follows an integer dtype "
                                 "as a positive integer, e.g. 16:int64:30522")
        high = int(parts[2])
    return TensorInput(tuple(int(d) for d in re.split(r"[x×]", dims)), dtype, high)


def parse_input_spec(text: str, *, load_factory: Callable[[str, str], Any] | None = None) -> InputSpec:
    """Parse an input spec (see the module docstring). ``load_factory(path, name)`` resolves a
    ``file.py:name`` factory (dnncost.models.loading.load_attribute)."""
    text = text.strip()
    if ".py:" in text:
        if load_factory is None:
            raise InputSpecError(f"'{text}' names an input factory, which needs a loader")
        path, _, attr = text.rpartition(":")
        factory = load_factory(path, attr)
        if not callable(factory):
            raise InputSpecError(f"'{attr}' in '{path}' is a {type(factory).__name__}, not a function "
                                 "inputs(batch_size) returning tensors")
        return InputSpec(factory=factory, name=text)
    parts = [p for p in re.split(r"[,;\s]+", text) if p]
    if len(parts) > 1 and all(p.isdigit() for p in parts):  # '3,224,224': one shape, as before
        parts = ["x".join(parts)]
    if not parts:
        raise InputSpecError("empty input shape: expected e.g. 3x224x224 or 16:int64")
    return InputSpec(tuple(_parse_tensor(p, text) for p in parts), name=text)


def _random(spec: TensorInput, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    shape = (batch_size, *spec.shape)
    if spec.dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(spec.dtype)
    if spec.dtype is torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    return torch.randint(0, spec.high, shape, generator=generator, dtype=spec.dtype)


def _place(value: Any, device: torch.device, dtype: torch.dtype | None, channels_last: bool) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if dtype is not None and value.is_floating_point():
        value = value.to(dtype)
    value = torch.empty_like(value, device="meta") if device.type == "meta" else value.to(device)
    if channels_last and value.dim() == 4:
        value = value.contiguous(memory_format=torch.channels_last)
    return value


def make_inputs(inputs: InputSpec | str | torch.Tensor | Sequence[Any] | Mapping[str, Any], *,
                batch_size: int = 1, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                channels_last: bool = False, seed: int = 0) -> ModelInputs:
    """The tensors a model is called with, on ``device``.

    ``inputs``: an :class:`InputSpec` or its text (random tensors of ``batch_size`` samples, or the
    factory's), a shape (a sequence of ints: one sample), a tensor, a tuple/list of positional
    tensors, or a dict of keyword tensors. Given tensors are used as they are (their batch size is
    theirs). ``dtype`` casts floating tensors; on 'meta' only shapes and dtypes are kept.
    """
    device = torch.device(device)
    if isinstance(inputs, str):
        inputs = parse_input_spec(inputs)
    if isinstance(inputs, Sequence) and inputs and all(isinstance(i, int) for i in inputs):
        inputs = InputSpec((TensorInput(tuple(int(i) for i in inputs)),))
    generator = torch.Generator().manual_seed(seed)
    if isinstance(inputs, InputSpec):
        if inputs.factory is not None:
            try:
                made = inputs.factory(batch_size)
            except DnncostError:
                raise
            except Exception as exc:  # the user's factory raised: its own failure, one line
                raise inputs_failed(str(inputs), exc, batch_size=batch_size) from exc
            if not isinstance(made, (torch.Tensor, tuple, list, Mapping)):
                raise InputSpecError(f"input factory '{inputs}' returned a {type(made).__name__}; "
                                     "return a tensor, a tuple of tensors or a dict of keyword tensors")
            return make_inputs(made, device=device, dtype=dtype, channels_last=channels_last)
        if device.type == "meta":
            args: tuple[Any, ...] = tuple(
                torch.empty((batch_size, *t.shape), dtype=t.dtype if not t.dtype.is_floating_point
                            else (dtype or t.dtype), device="meta") for t in inputs.tensors)
            return ModelInputs(tuple(_place(a, device, None, channels_last) for a in args))
        args = tuple(_random(t, batch_size, generator) for t in inputs.tensors)
        return ModelInputs(tuple(_place(a, device, dtype, channels_last) for a in args))
    if isinstance(inputs, torch.Tensor):
        return ModelInputs((_place(inputs, device, dtype, channels_last),))
    if isinstance(inputs, Mapping):
        if not all(isinstance(k, str) for k in inputs):
            raise InputSpecError("a dict of inputs is passed as keyword arguments: its keys must be "
                                 "the forward's parameter names (strings)")
        return ModelInputs((), {k: _place(v, device, dtype, channels_last) for k, v in inputs.items()})
    if isinstance(inputs, (tuple, list)):
        if not inputs:
            raise InputSpecError("no inputs given: an empty tuple")
        return ModelInputs(tuple(_place(v, device, dtype, channels_last) for v in inputs))
    raise InputSpecError(f"cannot make model inputs from a {type(inputs).__name__}: pass an input "
                         "spec ('3x224x224', '16:int64'), tensors, a tuple of tensors or a dict of "
                         "keyword tensors")


__all__ = ["DTYPES", "InputSpec", "ModelInputs", "TensorInput", "make_inputs", "parse_dtype",
           "parse_input_spec"]
