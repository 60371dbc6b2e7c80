"""The one registry of what-if transformations, filled by :func:`register` (a duplicate raises).

A transformation takes a copy of the network (which it may change in place) and returns a
:class:`Variant`: the network to run, plus how to run and count it (autocast dtype, batch size,
thread count, input memory format). One that does not apply raises :class:`NotApplicable` with the
reason. Its :class:`Training` says how ``--train`` finds the transformed network's accuracy.
Adding a transformation is adding one file to this package: :func:`all_transformations` imports
every module here.

A transformation registered with ``on_request`` (a reason) is left out of a run that names none
(:func:`parse_specs` with no text) and runs when named. A variant whose kernels this device emulates
(``Variant.emulated``, a reason) is timed with fewer pairs (the runner's EMULATED_PAIRS).
"""
from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import torch
from torch import nn

from dnncost.core.errors import DnncostError, suggest
from dnncost.core.inputs import InputSpec, ModelInputs, Precision, make_inputs, parse_dtype
from dnncost.core.kinds import Mode
from dnncost.counting.cost import CostReport

_NOT_TRANSFORMATIONS = ("registry", "runner", "accuracy", "applicability")  # modules of this package
# that register nothing


class NotApplicable(Exception):  # noqa: N818 -- a verdict, not a failure
    """The transformation does not apply to this network or machine; ``str()`` is the reason."""


class TransformationError(DnncostError):
    """A transformation that is unknown, badly parameterised, or that broke the network."""


def first_line(exc: BaseException, *, limit: int = 200) -> str:
    """The first line of ``exc``'s message (its type's name when it has none), at most ``limit``
    characters: how a failure is quoted in a one-line reason."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class Parameter(str, Enum):
    """What a transformation's one parameter is."""

    RATIO = "ratio"  # a fraction strictly between 0 and 1
    COUNT = "count"  # a positive integer (batch size, threads)


class Training(str, Enum):
    """How ``--train`` finds a transformed network's validation accuracy (dnncost.whatif.accuracy)."""

    FINE_TUNE = "fine-tune"  # transform the trained original, then train it again with the recipe
    FINE_TUNE_MASKED = "fine-tune, zeros kept"  # the same, with every zero weight held at zero
    EVALUATE = "evaluate"  # transform the trained original and validate it; it cannot be trained
    ORIGINAL = "original's"  # the network and its function are the original's: its accuracy


@dataclass(frozen=True)
class Context:
    """What a transformation may need to know about the run it is part of."""

    inputs: InputSpec  # what the network is called with (one sample's tensors, or a factory)
    batch_size: int
    mode: Mode
    device: torch.device
    threads: int  # the intra-op thread count the original runs with
    precision: Precision = Precision()  # the original's dtype, autocast and memory format
    calibration: tuple[ModelInputs, ...] = ()  # real input batches (training data) to calibrate
    # on; empty: random batches made from ``inputs``

    def make_inputs(self, batch_size: int | None = None, *, seed: int = 0,
                    device: torch.device | str | None = None) -> ModelInputs:
        """A fixed batch of the run's inputs (``batch_size`` samples, default the run's) on
        ``device`` (default the run's), floating tensors in the original's dtype."""
        dtype = parse_dtype(self.precision.dtype) if self.precision.dtype is not None else None
        return make_inputs(self.inputs, batch_size=self.batch_size if batch_size is None else batch_size,
                           device=self.device if device is None else device, dtype=dtype, seed=seed)

    def calibration_batches(self, n: int) -> list[ModelInputs]:
        """``n`` batches to calibrate on (CPU): the real ones when given, else random seeded ones."""
        if self.calibration:
            return list(self.calibration[:n])
        return [self.make_inputs(seed=seed, device="cpu") for seed in range(n)]


@dataclass(frozen=True)
class Variant:
    """A transformed network and how to run it. ``None`` fields mean "as the original"."""

    module: nn.Module
    note: str = ""
    count_module: nn.Module | None = None  # what to count when the counter cannot see ``module``
    count_note: str = ""  # why the count is of something else, or approximate
    autocast: torch.dtype | None = None  # run every step under torch.autocast with this dtype
    count_dtype: torch.dtype | None = None  # count with parameters and input in this dtype
    batch_size: int | None = None
    threads: int | None = None
    channels_last_input: bool = False
    first_call_limit_s: float | None = None  # a slow first call (compilation) is cut off after this
    kernels_may_lack: bool = False  # the machine may lack a kernel the step needs (a dtype, a
    # compiler): a failing first step is then "not applicable" with its reason, not a broken network
    not_trained: str = ""  # why --train validates it as transformed instead of training it again
    # (its training would run, but far slower than the original's on this device); "" trains it
    emulated: str = ""  # why this device emulates the variant's kernels (no native float16, ...):
    # timed with fewer pairs; "" times it as the others
    nominal_flops: Callable[[CostReport], int] | None = field(default=None, compare=False)
    # nominal FLOPs from the counted (executed) report: what sparsity would save on paper


Apply = Callable[[nn.Module, float | None, Context], Variant]
Emulation = Callable[[torch.device, Mode], str]  # why a device emulates a transformation's kernels
# in a step of that mode, or ""


@dataclass(frozen=True)
class Transformation:
    """A registered transformation: its name, what it does, its parameter and its defaults."""

    name: str
    summary: str
    apply: Apply = field(repr=False, compare=False)
    parameter: Parameter | None = None
    defaults: tuple[float | None, ...] = (None,)  # the values run when none is given
    modes: frozenset[Mode] = frozenset(Mode)  # the steps it applies to
    training: Training = Training.FINE_TUNE  # how --train finds its accuracy
    on_request: str = ""  # why it runs only when named; "" runs by default
    structural: bool = False  # the variant's shape -- so its count -- does not depend on the weights'
    # values: it can be made from a network on the meta device (no weights; dnncost.whatif.applicability)
    emulation: Emulation | None = field(default=None, repr=False, compare=False)
    # why a device emulates its kernels (for --list; the variant says so for the run itself)

    def emulated_on(self, device: torch.device, mode: Mode) -> str:
        """Why ``device`` emulates this transformation's kernels in a ``mode`` step, or ""
        (native, or not known)."""
        return self.emulation(device, mode) if self.emulation is not None else ""

    def check(self, value: float | None) -> float | None:
        """``value`` if valid for this transformation's parameter; TransformationError otherwise."""
        if value is None:
            return None
        if self.parameter is None:
            raise TransformationError(f"transformation '{self.name}' takes no parameter, "
                                      f"got '{value:g}'")
        if self.parameter is Parameter.RATIO and not (0 < value < 1 and math.isfinite(value)):
            raise TransformationError(f"transformation '{self.name}': ratio must lie strictly "
                                      f"between 0 and 1, got {value:g}")
        if self.parameter is Parameter.COUNT and (value != int(value) or value < 1):
            raise TransformationError(f"transformation '{self.name}': expected a positive "
                                      f"integer, got {value:g}")
        return value


@dataclass(frozen=True)
class Spec:
    """One transformation at one parameter value: what a row of the result is about."""

    transformation: Transformation
    value: float | None = None

    @property
    def label(self) -> str:
        if self.value is None:
            return self.transformation.name
        return f"{self.transformation.name}:{self.value:g}"


_REGISTRY: dict[str, Transformation] = {}


def register(name: str, *, summary: str, parameter: Parameter | None = None,
             defaults: tuple[float | None, ...] = (None,),
             modes: frozenset[Mode] = frozenset(Mode),
             training: Training = Training.FINE_TUNE, on_request: str = "",
             structural: bool = False, emulation: Emulation | None = None
             ) -> Callable[[Apply], Apply]:
    """Register ``fn(module, value, context) -> Variant`` as transformation ``name``."""
    def decorate(fn: Apply) -> Apply:
        if name in _REGISTRY:
            raise ValueError(f"what-if transformation '{name}' is already registered")
        transformation = Transformation(name, summary, fn, parameter, defaults, frozenset(modes),
                                        training, on_request, structural, emulation)
        for value in defaults:
            transformation.check(value)
        _REGISTRY[name] = transformation
        return fn
    return decorate


def all_transformations() -> dict[str, Transformation]:
    """Every registered transformation by name (importing each module of this package once)."""
    package = importlib.import_module(__package__ or "dnncost.whatif")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name not in _NOT_TRANSFORMATIONS:
            importlib.import_module(f"{package.__name__}.{info.name}")
    return dict(sorted(_REGISTRY.items()))


def get_transformation(name: str) -> Transformation:
    """The transformation called ``name``; a TransformationError with suggestions otherwise."""
    known = all_transformations()
    if name not in known:
        raise TransformationError(f"unknown transformation '{name}'.{suggest(name, known)} "
                                  f"Known: {', '.join(known)}")
    return known[name]


def parse_specs(text: str | None) -> list[Spec]:
    """'prune_channels:0.3,bf16' -> specs; None -> every transformation at its defaults, except
    those run on request only. Text that names no transformation ('', ',') is an error.

    A name without a value runs at the transformation's default values."""
    known = all_transformations()
    if text is None:
        return [Spec(t, v) for t in known.values() if not t.on_request for v in t.defaults]
    if not text.replace(",", "").strip():
        raise TransformationError(f"no transformation named in '{text}'; name one or more of "
                                  f"{', '.join(known)} (NAME or NAME:VALUE, comma separated)")
    specs: list[Spec] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, raw = item.partition(":")
        transformation = get_transformation(name.strip())
        if not raw:
            specs += [Spec(transformation, v) for v in transformation.defaults]
            continue
        try:
            value = float(raw)
        except ValueError:
            raise TransformationError(f"transformation '{name}': '{raw}' is not a number") from None
        specs.append(Spec(transformation, transformation.check(value)))
    return specs


__all__ = ["Apply", "Context", "Emulation", "NotApplicable", "Parameter", "Spec", "Training",
           "Transformation", "TransformationError", "Variant", "all_transformations", "first_line",
           "get_transformation", "parse_specs", "register"]
