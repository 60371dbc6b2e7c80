"""The zoo's one registry: model name -> builder and metadata, filled by :func:`register_model`.

Each entry carries what the paper prints about the network (params, MACs, where it says so) so that
counted figures can be checked against it; an entry whose count is allowed to differ by more than the
default tolerance must say why in ``notes``. Registering a name twice raises.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from enum import Enum

from torch import nn

from dnncost.core.errors import ModelNotFoundError, suggest

#: The seven families of the study, then the later networks it is compared with.
STUDY_FAMILIES = ("lenet", "alexnet", "vgg", "googlenet", "resnet", "mobilenet", "shufflenet")
LATER_FAMILIES = ("mobilenet_v2", "shufflenet_v2", "squeezenet", "densenet")
FAMILIES = STUDY_FAMILIES + LATER_FAMILIES
OTHER_FAMILY = "other"  # the family of a network from outside the zoo (torchvision, timm, a file)

# source: issue 3 ("within 3% wherever the paper prints them").
DEFAULT_TOLERANCE = 0.03


class Size(str, Enum):
    """The input an entry is built for: ImageNet (224-ish RGB), CIFAR (32x32x3) or MNIST (32x32x1)."""

    IMAGENET = "imagenet"
    CIFAR = "cifar"
    MNIST = "mnist"


SIZES = tuple(s.value for s in Size)

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about one network besides how to build it.

    ``paper_params`` / ``paper_macs`` are the figures as the paper prints them (None where it prints
    none), cited by ``source``. A counted figure must lie within ``params_tolerance`` /
    ``macs_tolerance`` (relative) of them; a tolerance wider than 3% is an exception explained in
    ``notes``. ``heavy`` marks CIFAR-sized entries too slow to train in the default study
    (:func:`default_study_models` leaves them out); they are built and counted like any other.
    Every field but ``name`` is keyword-only: ``ModelInfo("lenet5", family="lenet", ...)``.
    """

    name: str
    _: KW_ONLY
    family: str
    paper: str
    year: int
    input_shape: tuple[int, ...]
    num_classes: int
    size: str
    paper_params: int | None = None
    paper_macs: int | None = None
    source: str = ""
    notes: str = ""
    params_tolerance: float = DEFAULT_TOLERANCE
    macs_tolerance: float = DEFAULT_TOLERANCE
    heavy: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "size", Size(self.size).value)


_BUILDERS: dict[str, Builder] = {}
_INFOS: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> Callable[[Builder], Builder]:
    """Decorator: register ``fn(**kwargs) -> nn.Module`` under ``info.name`` with its metadata::

        @register_model(ModelInfo("lenet5", family="lenet", paper="LeCun et al.", year=1998,
                                  input_shape=(1, 32, 32), num_classes=10, size="mnist"))
        def lenet5(**kwargs): ...
    """
    _check(info)

    def decorate(fn: Builder) -> Builder:
        if info.name in _BUILDERS:
            raise ValueError(f"model {info.name!r} is already registered; pick another name")
        _BUILDERS[info.name] = fn
        _INFOS[info.name] = info
        return fn

    return decorate


def _check(info: ModelInfo) -> None:
    """Refuse metadata that would make the zoo's checks meaningless."""
    if info.family not in FAMILIES:
        raise ValueError(f"model {info.name!r}: unknown family {info.family!r}; "
                         f"expected one of {', '.join(FAMILIES)}")
    if (info.paper_params or info.paper_macs) and not info.source:
        raise ValueError(f"model {info.name!r}: paper figures need a source (paper, table/section)")
    loosened = max(info.params_tolerance, info.macs_tolerance) > DEFAULT_TOLERANCE
    if loosened and not info.notes:
        raise ValueError(f"model {info.name!r}: a tolerance above {DEFAULT_TOLERANCE:.0%} "
                         f"is an exception and needs its reason in notes")
    if info.heavy and info.size == Size.IMAGENET.value:
        raise ValueError(f"model {info.name!r}: 'heavy' marks CIFAR/MNIST-sized entries only")


def list_models(pattern: str | None = None, *, family: str | None = None,
                size: str | None = None, heavy: bool | None = None) -> list[str]:
    """Sorted zoo names matching the fnmatch ``pattern``, ``family``, ``size`` and, when given,
    ``heavy`` (see :class:`ModelInfo`); unknown families or sizes raise ModelNotFoundError."""
    if family is not None and family not in FAMILIES:
        raise ModelNotFoundError(f"unknown model family {family!r}; expected one of "
                                 f"{', '.join(FAMILIES)}.{suggest(family, FAMILIES)}")
    if size is not None and size not in SIZES:
        raise ModelNotFoundError(f"unknown model size {size!r}; expected one of {', '.join(SIZES)}")
    return sorted(
        name for name, info in _INFOS.items()
        if (pattern is None or fnmatch.fnmatchcase(name, pattern))
        and (family is None or info.family == family)
        and (size is None or info.size == size)
        and (heavy is None or info.heavy == heavy)
    )


def default_study_models() -> list[str]:
    """The networks the default study trains on a 2-core CPU: LeNet-5 and every CIFAR-sized entry
    not marked heavy (one or two per family of the seven)."""
    return ["lenet5", *list_models(size=Size.CIFAR.value, heavy=False)]


def get_model_info(name: str) -> ModelInfo:
    """The metadata of zoo model ``name``; raises ModelNotFoundError for an unknown name."""
    try:
        return _INFOS[name]
    except KeyError:
        raise _not_found(name) from None


def family_of(name: str) -> str:
    """The zoo family of network ``name`` (its recipe, its line in the study); OTHER_FAMILY for a
    network from outside the zoo."""
    info = _INFOS.get(name)
    return info.family if info is not None else OTHER_FAMILY


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build zoo model ``name`` (random weights; never downloads); kwargs go to its builder."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise _not_found(name) from None
    return builder(**kwargs)


def _not_found(name: str) -> ModelNotFoundError:
    return ModelNotFoundError(f"unknown zoo model {name!r} (see `dnncost zoo` for the list)."
                              f"{suggest(name, _INFOS)}")
