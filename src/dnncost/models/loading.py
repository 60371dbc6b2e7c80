"""Resolve a model spec to a builder: zoo names, torchvision names, ``timm:NAME``, ``hf:TYPE``,
``file.py:factory``.

Building is separate from resolving so that the counter can build straight onto the meta device
(no weight initialisation arithmetic, no memory), falling back to CPU for models whose constructor
needs real tensors.
"""
from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from dnncost.core.errors import DnncostError, InputSpecError, ModelNotFoundError, model_failed, suggest
from dnncost.core.inputs import InputSpec, parse_input_spec

DEFAULT_INPUT_SHAPE = (3, 224, 224)  # source: torchvision's ImageNet classifiers
DEFAULT_NUM_CLASSES = 1000  # source: ImageNet-1k


@dataclass(frozen=True)
class LoadedModel:
    """A resolved model: its name, how to build it, and the input it expects (one sample)."""

    name: str
    builder: Callable[[], nn.Module] = field(repr=False, compare=False)
    input_shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE
    num_classes: int = DEFAULT_NUM_CLASSES

    def build(self, device: torch.device | str = "cpu") -> nn.Module:
        """A fresh instance on ``device``; on 'meta' it is built without arithmetic when it can be."""
        device = torch.device(device)
        if device.type == "meta":
            try:
                with torch.device("meta"):
                    return _checked(self.builder(), self.name)
            except Exception:  # some constructors need real tensors (e.g. torchvision's RegNet)
                pass
        try:
            built = self.builder()
        except DnncostError:
            raise
        except Exception as exc:  # the user's factory or constructor raised: its own failure
            raise model_failed(self.name, exc, building=True) from exc
        return _checked(built, self.name).to(device)

    @cached_property
    def module(self) -> nn.Module:
        """One instance built on CPU, for callers that want a ready model."""
        return self.build("cpu")


def _checked(obj: object, name: str) -> nn.Module:
    if not isinstance(obj, nn.Module):
        raise ModelNotFoundError(
            f"'{name}' gave a {type(obj).__name__}, not a torch.nn.Module; "
            "point at a class or factory function that returns an nn.Module")
    return obj


def parse_input_shape(text: str) -> tuple[int, ...]:
    """'3x224x224' (or '3,224,224') -> (3, 224, 224); one sample, without the batch dimension."""
    parts = [p for p in re.split(r"[x,×\s]+", text.strip().lower()) if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InputSpecError(
            f"malformed input shape '{text}': expected positive integers joined by 'x', "
            "one sample without the batch dimension, e.g. 3x224x224 or 1x32x32")
    return tuple(int(p) for p in parts)


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models())


def _from_torchvision(name: str) -> LoadedModel:
    import torchvision.models as tvm

    if name not in tvm.list_models():
        raise ModelNotFoundError(
            f"unknown torchvision model '{name}'.{suggest(name, _torchvision_names())} "
            "See torchvision.models.list_models() for every name.")
    shape: tuple[int, ...] = DEFAULT_INPUT_SHAPE
    if name in tvm.list_models(module=tvm.video):
        shape = (3, 16, 112, 112)  # source: torchvision video models' documented clip size
    elif name.startswith("inception_v3"):
        shape = (3, 299, 299)  # source: torchvision Inception3 docs
    kwargs: dict[str, object] = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    return LoadedModel(name, lambda: tvm.get_model(name, **kwargs), shape)


TIMM_PREFIX = "timm:"  # source: our choice; a spec naming one of timm's networks starts so


def _from_timm(name: str) -> LoadedModel:
    try:
        import timm
    except ImportError:
        raise ModelNotFoundError(
            f"'timm:{name}' needs the timm package, which is not installed: pip install timm"
        ) from None
    if not timm.list_models(name):
        raise ModelNotFoundError(
            f"unknown timm model '{name}'.{suggest(name, timm.list_models())}")
    cfg = timm.get_pretrained_cfg(name, allow_unregistered=True)
    shape = tuple(getattr(cfg, "input_size", None) or DEFAULT_INPUT_SHAPE) if cfg else DEFAULT_INPUT_SHAPE
    return LoadedModel(f"timm:{name}", lambda: timm.create_model(name, pretrained=False), shape)


HF_PREFIX = "hf:"  # source: our choice; a spec naming a Hugging Face image classifier starts so


def _from_hf(name: str) -> LoadedModel:
    """A Hugging Face image classifier built from a config, never downloaded: a model type
    (``hf:convnext``: its config class's defaults, with ImageNet's 1000 classes) or a local
    ``config.json`` (or a folder holding one). The config is JSON; code it names is never run."""
    try:
        from transformers import AutoConfig, AutoModelForImageClassification
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES as IMAGE_CLASSIFIERS,
        )
    except ImportError:
        raise ModelNotFoundError(
            f"'hf:{name}' needs the transformers package, which is not installed: "
            "pip install transformers") from None
    path = Path(name)
    if path.suffix == ".json" or path.is_dir():
        if not path.exists():
            raise ModelNotFoundError(f"Hugging Face config '{path}' does not exist; expected "
                                     "hf:path/to/config.json or hf:MODEL_TYPE (e.g. hf:convnext)")
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot read the Hugging Face config '{path}': "
                                     f"{str(exc).splitlines()[0]}") from exc
    elif name in IMAGE_CLASSIFIERS:
        config = AutoConfig.for_model(name, num_labels=DEFAULT_NUM_CLASSES)
    else:
        raise ModelNotFoundError(
            f"unknown Hugging Face image-classification model type '{name}'."
            f"{suggest(name, sorted(IMAGE_CLASSIFIERS))} Give a model type (e.g. hf:convnext) or a "
            "local config.json; hub names are not downloaded")
    if config.model_type not in IMAGE_CLASSIFIERS:
        raise ModelNotFoundError(f"the Hugging Face model type '{config.model_type}' of 'hf:{name}' "
                                 "has no image-classification head; dnncost builds "
                                 "AutoModelForImageClassification")
    side = getattr(config, "image_size", None) or DEFAULT_INPUT_SHAPE[-1]
    height, width = (side, side) if isinstance(side, int) else tuple(side)[-2:]
    shape = (int(getattr(config, "num_channels", None) or 3), int(height), int(width))
    return LoadedModel(f"hf:{name}", lambda: AutoModelForImageClassification.from_config(config),
                       shape, int(config.num_labels))


def load_attribute(path_text: str, attr: str) -> object:
    """``attr`` of the Python file at ``path_text`` (imported once per call): a model factory or an
    input factory named as ``path/to/file.py:attr``."""
    path = Path(path_text)
    if not path.is_file():
        raise ModelNotFoundError(f"file '{path}' does not exist; expected path/to/file.py:name")
    module_name = f"dnncost_user_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    user_module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = user_module
    try:
        spec.loader.exec_module(user_module)
    except Exception as exc:
        raise ModelNotFoundError(f"importing '{path}' failed: {type(exc).__name__}: {exc}") from exc
    value = getattr(user_module, attr, None)
    if value is None:
        names = [n for n, v in vars(user_module).items() if callable(v) and not n.startswith("_")]
        raise ModelNotFoundError(f"'{path}' has no '{attr}'.{suggest(attr, names)}")
    return value


def parse_inputs(text: str) -> InputSpec:
    """An input spec ('3x224x224', '16:int64,16:int64', 'file.py:inputs'; see
    dnncost.core.inputs), with ``file.py:name`` factories loaded from their file."""
    return parse_input_spec(text, load_factory=load_attribute)


def _from_file(path_text: str, attr: str) -> LoadedModel:
    path = Path(path_text)
    factory = load_attribute(path_text, attr)
    if isinstance(factory, nn.Module):
        return LoadedModel(f"{path.name}:{attr}", lambda: factory)
    if not callable(factory) or (inspect.isclass(factory) and not issubclass(factory, nn.Module)):
        raise ModelNotFoundError(
            f"'{attr}' in '{path}' is a {type(factory).__name__}, not an nn.Module class or a "
            "factory returning one")
    return LoadedModel(f"{path.name}:{attr}", factory)


def load_model(spec: str, **kwargs: object) -> LoadedModel:
    """Resolve ``spec``: a zoo name (first), a torchvision name or ``torchvision:NAME``,
    ``timm:NAME``, ``hf:MODEL_TYPE`` or ``hf:path/to/config.json``, or ``path/to/file.py:factory``.
    ``kwargs`` go to zoo builders."""
    spec = spec.strip()
    if spec.startswith("torchvision:"):
        return _from_torchvision(spec.split(":", 1)[1])
    if spec.startswith(TIMM_PREFIX):
        return _from_timm(spec.removeprefix(TIMM_PREFIX))
    if spec.startswith(HF_PREFIX):
        return _from_hf(spec.removeprefix(HF_PREFIX))
    if ".py:" in spec or spec.endswith(".py"):
        path, _, attr = spec.rpartition(":") if ".py:" in spec else (spec, "", "")
        if not attr:
            raise ModelNotFoundError(f"'{spec}' names a file but no factory; write {spec}:factory")
        return _from_file(path, attr)
    zoo = _zoo_entry(spec, kwargs)
    if zoo is not None:
        return zoo
    try:
        return _from_torchvision(spec)
    except ModelNotFoundError:
        raise ModelNotFoundError(
            f"unknown model '{spec}'.{suggest(spec, _known_names())} "
            "Use a zoo name (dnncost zoo), a torchvision name, timm:NAME, hf:MODEL_TYPE or "
            "path/to/file.py:factory."
        ) from None


def _zoo_entry(name: str, kwargs: dict[str, object]) -> LoadedModel | None:
    try:
        from dnncost import models
    except ImportError:  # the zoo is optional for resolution
        return None
    if name not in models.list_models():
        return None
    info = models.get_model_info(name)
    return LoadedModel(name, lambda: models.create_model(name, **kwargs),
                       tuple(info.input_shape), info.num_classes)


def _known_names() -> list[str]:
    names = _torchvision_names()
    try:
        from dnncost import models
        names += models.list_models()
    except ImportError:
        pass
    return names
