"""GoogLeNet (Szegedy et al. 2015, "Going deeper with convolutions"): torchvision's, and a
CIFAR-sized form built from the same inception modules.
"""
from __future__ import annotations

from typing import Any

import torchvision
from torch import nn
from torchvision.models.googlenet import BasicConv2d, GoogLeNet

from dnncost.models.registry import ModelInfo, register_model

_PAPER = "Szegedy et al., Going deeper with convolutions"


@register_model(ModelInfo(
    "googlenet", family="googlenet", paper=_PAPER, year=2015, input_shape=(3, 224, 224),
    num_classes=1000, size="imagenet",
    # source: Szegedy et al. 2015, Table 1: the params column sums to 6.8M and the ops column to
    # 1.5G; Sec. 1: "a computational budget of 1.5 billion multiply-adds at inference time".
    paper_params=6_800_000, paper_macs=1_500_000_000,
    source="Szegedy et al. 2015, Table 1 (params and ops columns) and Sec. 1 (1.5 billion "
           "multiply-adds)",
    notes="torchvision's GoogLeNet uses 3x3 kernels where the paper's inception '5x5' branch has "
          "5x5 (kept for its weights' sake) and adds batch norm; 6.62M params (-2.6%), 1.50G MACs. "
          "Auxiliary classifiers are off unless aux_logits=True.",
))
def googlenet(**kwargs: Any) -> nn.Module:
    """torchvision's GoogLeNet, random weights, auxiliary heads off by default."""
    kwargs.setdefault("aux_logits", False)
    kwargs.setdefault("init_weights", True)
    return torchvision.models.googlenet(weights=None, **kwargs)


@register_model(ModelInfo("googlenet_cifar", family="googlenet", paper=_PAPER, year=2015,
                          input_shape=(3, 32, 32), num_classes=10, size="cifar",
                          notes="CIFAR adaptation; see the builder's docstring."))
def googlenet_cifar(**kwargs: Any) -> nn.Module:
    """torchvision's GoogLeNet on 32x32 inputs.

    One change: the 7x7 stride-2 stem convolution becomes 3x3 stride 1, so the four stride-2 max
    pools take 32x32 maps to 16, 8, 4 and 2 (inception 3 at 8x8, 4 at 4x4, 5 at 2x2; ImageNet
    has 28, 14, 7). Everything else - inception modules, global average pooling, dropout - is
    torchvision's; auxiliary heads are off unless aux_logits=True.
    """
    kwargs.setdefault("num_classes", 10)
    kwargs.setdefault("aux_logits", False)
    kwargs.setdefault("init_weights", True)
    model = GoogLeNet(**kwargs)
    model.conv1 = BasicConv2d(3, 64, kernel_size=3, stride=1, padding=1)  # 32x32 stays 32x32
    return model
