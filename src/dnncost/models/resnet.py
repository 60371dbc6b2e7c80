"""ResNet (He, Zhang, Ren & Sun 2016, "Deep residual learning for image recognition"): the ImageNet
ResNet-18/34/50/101/152 from torchvision, the paper's CIFAR-10 ResNet-20/32/44/56/110 (Sec. 4.2),
and a CIFAR-sized ResNet-18.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from dnncost.models._torchvision import torchvision_builder
from dnncost.models.registry import DEFAULT_TOLERANCE, ModelInfo, register_model

_PAPER = "He et al., Deep residual learning for image recognition"

# source: He et al. 2016, Table 1, last row ("FLOPs": 1.8, 3.6, 3.8, 7.6, 11.3 x 10^9), which the
# paper counts as multiply-adds (Sec. 3.3). The paper prints no parameter counts for these.
_IMAGENET_MACS = {
    "resnet18": 1_800_000_000,
    "resnet34": 3_600_000_000,
    "resnet50": 3_800_000_000,
    "resnet101": 7_600_000_000,
    "resnet152": 11_300_000_000,
}
_V15 = ("torchvision's bottleneck ResNets are 'v1.5': the stride-2 of each stage's first block "
        "sits on the 3x3 convolution, not on the first 1x1 as in the paper, so that 3x3 runs at "
        "twice the resolution.")
# name -> (notes, MACs tolerance). Only ResNet-50 leaves 3%: +7.6% (4.09G vs 3.8G); moving the
# stride back to the 1x1 gives 3.86G (+1.6%), see tests/test_models.py.
_IMAGENET_NOTES = {
    "resnet50": (_V15 + " 4.09G MACs vs the paper's 3.8G (+7.6%); tolerance 8%.", 0.08),
    "resnet101": (_V15 + " 7.80G vs 7.6G: +2.6%.", DEFAULT_TOLERANCE),
    "resnet152": (_V15 + " 11.51G vs 11.3G: +1.9%.", DEFAULT_TOLERANCE),
}

# source: He et al. 2016, Table 6 ("# params": 0.27M, 0.46M, 0.66M, 0.85M, 1.7M).
_CIFAR_PARAMS = {20: 270_000, 32: 460_000, 44: 660_000, 56: 850_000, 110: 1_700_000}
# The default study trains every non-heavy CIFAR net; ResNet-20, -32 and -56 give the family's
# depth series (ResNet-110, twice ResNet-56's work, would not fit the default study's 10 minutes
# on 2 cores beside the other networks; issue 13).
_CIFAR_DEFAULT = (20, 32, 56)


class ShortcutA(nn.Module):
    """The paper's option A shortcut (Sec. 4.1/4.2): identity, subsampled by 2 and zero-padded to
    the new width where the shape changes - no parameters."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) -> (N, C + pad, H/s, W/s)
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x


class BasicBlockA(nn.Module):
    """Two 3x3 conv-BN layers with a ReLU between and after the addition (Sec. 4.2)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ShortcutA(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """The paper's CIFAR-10 ResNet of depth 6n+2 (Sec. 4.2): a 3x3 conv with 16 filters, then three
    stages of n basic blocks with 16, 32, 64 filters on 32x32, 16x16, 8x8 maps (stride-2 convs
    subsample), global average pooling and a 10-way fully connected layer; option A shortcuts.
    """

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), not {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)        # 3x32x32 -> 16x32x32
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):            # 32x32, 16x16, 8x8
            for i in range(n):
                layers.append(BasicBlockA(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # source: He et al. 2016, Sec. 3.4 (init of He et al. 2015)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 32, 32) -> (N, num_classes)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)                                              # -> (N, 64, 8, 8)
        return self.fc(torch.flatten(self.pool(x), 1))


def _cifar(depth: int) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        return ResNetCifar(depth, **kwargs)
    build.__doc__ = f"The ResNet paper's CIFAR-10 ResNet-{depth} (see ResNetCifar)."
    return build


for _name, _macs in _IMAGENET_MACS.items():
    _notes, _tol = _IMAGENET_NOTES.get(_name, ("", DEFAULT_TOLERANCE))
    register_model(ModelInfo(
        _name, family="resnet", paper=_PAPER, year=2016, input_shape=(3, 224, 224),
        num_classes=1000, size="imagenet", paper_macs=_macs,
        source="He et al. 2016, Table 1 (FLOPs = multiply-adds, Sec. 3.3)",
        notes=_notes, macs_tolerance=_tol))(torchvision_builder(_name))

for _depth, _params in _CIFAR_PARAMS.items():
    register_model(ModelInfo(
        f"resnet{_depth}", family="resnet", paper=_PAPER, year=2016,
        input_shape=(3, 32, 32), num_classes=10, size="cifar", paper_params=_params,
        source="He et al. 2016, Table 6 (params); Sec. 4.2 (architecture)",
        notes="Option A (parameter-free) shortcuts, as in the paper's CIFAR section.",
        heavy=_depth not in _CIFAR_DEFAULT))(_cifar(_depth))


@register_model(ModelInfo("resnet18_cifar", family="resnet", paper=_PAPER, year=2016,
                          input_shape=(3, 32, 32), num_classes=10, size="cifar", heavy=True,
                          notes="CIFAR adaptation of the ImageNet ResNet-18; see the builder's docstring."))
def resnet18_cifar(**kwargs: Any) -> nn.Module:
    """torchvision's ResNet-18 on 32x32 inputs: the 7x7 stride-2 stem becomes 3x3 stride 1 and the
    stem max pool is dropped, so the four stages run on 32, 16, 8, 4 maps (ImageNet: 56 to 7)."""
    kwargs.setdefault("num_classes", 10)
    model = torchvision.models.resnet18(weights=None, **kwargs)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)  # 32x32 stays 32x32
    model.maxpool = nn.Identity()
    return model
