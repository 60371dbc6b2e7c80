"""MobileNet v1 (Howard et al. 2017, "MobileNets: Efficient convolutional neural networks for mobile
vision applications"): any width multiplier, any input resolution, and a CIFAR-sized form.
torchvision has no MobileNet v1, so it is written here in torchvision's style.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dnncost.models.registry import ModelInfo, register_model

_PAPER = "Howard et al., MobileNets: Efficient convolutional neural networks for mobile vision"

# source: Howard et al. 2017, Table 1: (output channels, stride) of the 13 depthwise-separable
# layers after the 3x3/2 stem with 32 filters. The table's stride 2 on the second-last depthwise
# layer is a known typo (its input and output are both 7x7); it is 1 here, as in the reference code.
_STEM = 32
_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))

# width -> (paper params, paper MACs) at 224x224.
# source: Howard et al. 2017, Table 6 (width multiplier): 1.0: 569M mult-adds, 4.2M params;
# 0.75: 325M, 2.6M; 0.5: 149M, 1.3M; 0.25: 41M, 0.5M. Table 8 repeats 569M / 4.2M for 1.0.
_WIDTHS = {
    1.0: (4_200_000, 569_000_000),
    0.75: (2_600_000, 325_000_000),
    0.5: (1_300_000, 149_000_000),
    0.25: (500_000, 41_000_000),
}


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int,
             groups: int = 1) -> nn.Sequential:
    """Convolution, batch norm, ReLU: every layer of MobileNet v1 (Fig. 3)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNet v1: a 3x3/2 stem, 13 depthwise-separable layers (3x3 depthwise + 1x1 pointwise,
    each followed by BN and ReLU), global average pooling and a fully connected classifier.

    ``width_mult`` (the paper's alpha) scales every layer's channels (truncated to an integer);
    any input resolution works (the paper's rho) since pooling is adaptive. ``cifar`` gives the
    stem stride 1 instead of 2, so a 32x32 input ends on 2x2 maps rather than 1x1.
    """

    def __init__(self, num_classes: int = 1000, *, width_mult: float = 1.0,
                 cifar: bool = False) -> None:
        super().__init__()
        channels = int(_STEM * width_mult)
        layers = [_conv_bn(3, channels, 3, 1 if cifar else 2)]        # 224 -> 112 (32 -> 32)
        for out, stride in _LAYERS:
            out = int(out * width_mult)
            layers.append(nn.Sequential(
                _conv_bn(channels, channels, 3, stride, groups=channels),  # depthwise
                _conv_bn(channels, out, 1, 1),                             # pointwise
            ))
            channels = out
        self.features = nn.Sequential(*layers)                         # -> 1024a x 7x7 (2x2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, num_classes)
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _builder(width_mult: float, *, cifar: bool = False) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        kwargs.setdefault("width_mult", width_mult)
        if cifar:
            kwargs.setdefault("num_classes", 10)
        return MobileNetV1(cifar=cifar, **kwargs)
    build.__doc__ = f"MobileNet v1, width {width_mult}{', CIFAR stem' if cifar else ''}."
    return build


def _suffix(width: float) -> str:
    return "" if width == 1.0 else "_x" + f"{width:g}".replace(".", "_")


_SOURCE = "Howard et al. 2017, Table 6 (width multiplier) and Table 8"
for _width, (_params, _macs) in _WIDTHS.items():
    _exception = _width == 0.25
    register_model(ModelInfo(
        f"mobilenet_v1{_suffix(_width)}", family="mobilenet", paper=_PAPER, year=2017,
        input_shape=(3, 224, 224), num_classes=1000, size="imagenet", paper_params=_params,
        paper_macs=_macs, source=_SOURCE,
        notes=("The paper rounds params to 0.1M: 0.47M counted prints as its 0.5M, -6% of the "
               "rounded figure; tolerance 10% (half a rounding step)." if _exception else ""),
        params_tolerance=0.10 if _exception else 0.03,
    ))(_builder(_width))

for _width in (1.0, 0.5):  # the paper's width multiplier at two values (Table 6)
    register_model(ModelInfo(f"mobilenet_v1{_suffix(_width)}_cifar", family="mobilenet", paper=_PAPER,
                             year=2017, input_shape=(3, 32, 32), num_classes=10, size="cifar",
                             notes="CIFAR adaptation: stem stride 1 (see MobileNetV1).",
                             ))(_builder(_width, cifar=True))
