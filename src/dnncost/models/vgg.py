"""VGG (Simonyan & Zisserman 2015): configurations A, B, D, E (VGG-11/13/16/19), with and without
batch norm, from torchvision; and CIFAR-sized forms of VGG-11 and VGG-16.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from dnncost.models._torchvision import torchvision_builder
from dnncost.models.registry import ModelInfo, register_model

_PAPER = "Simonyan & Zisserman, Very deep convolutional networks for large-scale image recognition"

# name -> (torchvision configuration letter, paper params, paper MACs or None).
# source: Simonyan & Zisserman 2015, Table 2 ("Number of parameters (in millions)": A 133, B 133,
# D 138, E 144). The VGG paper prints no MAC count; He et al. 2016 (Sec. 4.1) gives VGG-16/19 as
# 15.3/19.6 billion FLOPs, which that paper defines as multiply-adds (Sec. 3.3).
_CONFIGS = {
    "vgg11": ("A", 133_000_000, None),
    "vgg13": ("B", 133_000_000, None),
    "vgg16": ("D", 138_000_000, 15_300_000_000),
    "vgg19": ("E", 144_000_000, 19_600_000_000),
}
_SOURCE = "Simonyan & Zisserman 2015, Table 2 (params)"
_MACS_SOURCE = "; He et al. 2016, Sec. 4.1 (VGG-16/19: 15.3/19.6 billion multiply-adds)"


class VGGCifar(nn.Module):
    """A VGG configuration on 32x32 inputs: torchvision's convolutional stack unchanged (five 2x2
    max pools take 32x32 to 1x1x512), then VGG's three fully connected layers narrowed from 4096
    to 512 units for the 512 features, with dropout as in VGG (the usual CIFAR-10 form).
    """

    def __init__(self, config: str, num_classes: int = 10, *, batch_norm: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.features = make_layers(cfgs[config], batch_norm=batch_norm)  # 32 -> 512x1x1
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(512, 512), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(512, 512), nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )
        # Convolutions: He et al. 2015's init, zero biases, as torchvision.models.vgg.VGG.__init__
        # and the usual CIFAR-10 VGG (chengyangfu/pytorch-vgg-cifar10, whose 512-512 dropout
        # classifier this is). The paper's own footnote (Sec. 3.1) trains from scratch with
        # Glorot & Bengio's init; He et al. 2015 (Sec. 2.2, Fig. 3) show theirs is the one that
        # lets deep ReLU VGG-style stacks converge. The fully connected layers keep PyTorch's
        # default, as in that CIFAR-10 form: torchvision's N(0, 0.01) (meant for 4096 units on
        # 25088 features) shrinks the gradient reaching the convolutions through three narrow
        # layers, and left VGG-16-BN at 51-83% on digits after 3 epochs, against 97-99% with
        # the default (the paper's N(0, 0.1) and Glorot's: 12-29%; issue 13).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 32, 32) -> (N, num_classes)
        return self.classifier(self.features(x))


def _cifar(config: str, batch_norm: bool) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        return VGGCifar(config, batch_norm=batch_norm, **kwargs)
    build.__doc__ = f"VGG configuration {config} for 32x32 inputs (see VGGCifar)."
    return build


for _name, (_config, _params, _macs) in _CONFIGS.items():
    for _bn in (False, True):
        _full = f"{_name}_bn" if _bn else _name
        register_model(ModelInfo(
            _full, family="vgg", paper=_PAPER, year=2015, input_shape=(3, 224, 224),
            num_classes=1000, size="imagenet", paper_params=_params, paper_macs=_macs,
            source=_SOURCE + (_MACS_SOURCE if _macs else ""),
            notes="With batch norm after each convolution (not in the paper): a few thousand "
                  "more parameters than the paper's figure." if _bn else "",
        ))(torchvision_builder(_full))

# The default study trains VGG-11 and VGG-16 with batch norm (the usual CIFAR-10 form): without it
# VGG-11 stayed at chance (10%) on digits after 3 epochs at lr 0.05 and 0.02 with warm-up and
# cosine decay, PyTorch's and He et al.'s init alike for the convolutions with the fully connected
# layers at N(0, 0.01), and reached 35.8% (lr 0.02, seed 0) with them at PyTorch's default
# (issue 13); the paper itself trained its
# deeper nets only by starting them from the shallower one's weights (Sec. 3.1). The BN-free
# forms are built and counted like any other but left out of the default study ('heavy').
for _name in ("vgg11", "vgg16"):
    for _bn in (False, True):
        _full = f"{_name}_bn_cifar" if _bn else f"{_name}_cifar"
        register_model(ModelInfo(
            _full, family="vgg", paper=_PAPER, year=2015, input_shape=(3, 32, 32), num_classes=10,
            size="cifar", notes="CIFAR adaptation; see VGGCifar.", heavy=not _bn,
        ))(_cifar(_CONFIGS[_name][0], _bn))
