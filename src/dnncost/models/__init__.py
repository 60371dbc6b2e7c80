"""The zoo: the study's classical networks (LeNet-5, AlexNet, VGG, GoogLeNet, ResNet, MobileNet v1,
ShuffleNet v1) in ImageNet- and CIFAR-sized forms, plus later networks for comparison.

``list_models()`` names them, ``create_model(name)`` builds one (random weights, never downloaded),
``get_model_info(name)`` gives its paper, default input and the params / MACs the paper prints.
"""
from __future__ import annotations

# Importing the family modules fills the registry.
from dnncost.models import alexnet, googlenet, later, lenet, mobilenet, resnet, shufflenet, vgg  # noqa: F401
from dnncost.models.registry import (
    FAMILIES,
    LATER_FAMILIES,
    OTHER_FAMILY,
    STUDY_FAMILIES,
    ModelInfo,
    Size,
    create_model,
    default_study_models,
    family_of,
    get_model_info,
    list_models,
    register_model,
)

__all__ = ["FAMILIES", "LATER_FAMILIES", "OTHER_FAMILY", "STUDY_FAMILIES", "ModelInfo", "Size",
           "create_model", "default_study_models", "family_of", "get_model_info", "list_models",
           "register_model"]
