"""ShuffleNet v1 (Zhang, Zhou, Lin & Sun 2018, "ShuffleNet: An extremely efficient convolutional
neural network for mobile devices"): groups 1, 2, 3, 4, 8, widths 0.5x-2x, and a CIFAR-sized form.
torchvision has only ShuffleNet v2, so v1 is written here in torchvision's style.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnncost.models.registry import ModelInfo, register_model

_PAPER = "Zhang et al., ShuffleNet: An extremely efficient CNN for mobile devices"

# source: Zhang et al. 2018, Table 1: output channels of stages 2-4 for ShuffleNet 1x per group
# count, and units per stage (4, 8, 4; the first of each with stride 2).
_STAGE_CHANNELS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                   4: (272, 544, 1088), 8: (384, 768, 1536)}
_STAGE_UNITS = (4, 8, 4)


def _stem_channels(width_mult: float, stage2: int, groups: int) -> int:
    """Stem width: 24 as in Table 1, 12 at 0.5x and 48 at 2x as in the authors' code
    (megvii-model/ShuffleNet-Series), raised until the first unit's branch splits into groups."""
    stem = 12 if width_mult <= 0.5 else 24 if width_mult < 2 else 48
    while (stage2 - stem) % groups:
        stem += 1
    return stem


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (Sec. 3.1, Fig. 1c); moves data, no arithmetic."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """The ShuffleNet unit (Fig. 2b/c): 1x1 group conv -> shuffle -> 3x3 depthwise -> 1x1 group
    conv, with BN throughout and ReLU after the first conv and after the merge. The bottleneck is
    a quarter of the output width (Sec. 3.3). With stride 2 the shortcut is a 3x3/2 average pool
    and the two paths are concatenated, so the residual path makes out - in channels.
    """

    def __init__(self, in_channels: int, out_channels: int, *, groups: int, stride: int,
                 group_first: bool = True) -> None:
        super().__init__()
        self.groups, self.stride = groups, stride
        mid = out_channels // 4
        branch = out_channels - in_channels if stride == 2 else out_channels
        first_groups = groups if group_first else 1  # Sec. 3.3: no groups on stage 2's first conv
        self.compress = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1, groups=first_groups, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.depthwise = nn.Sequential(
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid))
        self.expand = nn.Sequential(
            nn.Conv2d(mid, branch, 1, groups=groups, bias=False), nn.BatchNorm2d(branch))
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()
        self.first_groups = first_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, in, H, W) -> (N, out, H/s, W/s)
        out = self.compress(x)
        if self.first_groups > 1:
            out = channel_shuffle(out, self.groups)
        out = self.expand(self.depthwise(out))
        if self.stride == 2:
            return torch.cat([self.shortcut(x), F.relu(out)], dim=1)
        return F.relu(out + x)


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 (Table 1): 3x3/2 stem conv, 3x3/2 max pool, three stages of ShuffleNet units,
    global average pooling, fully connected classifier.

    ``width_mult`` is the paper's scale factor s ("ShuffleNet s x"): stage widths are Table 1's
    times s, rounded to a multiple of 4 x groups so the bottleneck splits into groups. ``cifar``
    gives the stem stride 1 and drops the max pool, so a 32x32 input runs its stages on 16, 8, 4
    maps (ImageNet: 28, 14, 7). ``zero_init_residual`` starts the last batch norm of each residual
    (stride-1) unit at gamma = 0, so each unit begins as the identity (Goyal et al. 2017 for
    ResNet's residual blocks; torchvision's zero_init_residual); the stride-2 units concatenate
    rather than add and keep gamma = 1. Other weights keep PyTorch's defaults (the paper gives
    no init).
    """

    def __init__(self, num_classes: int = 1000, *, groups: int = 3, width_mult: float = 1.0,
                 cifar: bool = False, zero_init_residual: bool = True) -> None:
        super().__init__()
        if groups not in _STAGE_CHANNELS:
            raise ValueError(f"ShuffleNet v1 groups must be one of {sorted(_STAGE_CHANNELS)}, "
                             f"not {groups}")
        step = 4 * groups
        widths = [max(step, round(c * width_mult / step) * step) for c in _STAGE_CHANNELS[groups]]
        channels = _stem_channels(width_mult, widths[0], groups)
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, 1 if cifar else 2, 1, bias=False),  # 224 -> 112 (32 -> 32)
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1),             # -> 56
        )
        units = []
        for stage, (width, repeats) in enumerate(zip(widths, _STAGE_UNITS, strict=True)):
            for i in range(repeats):                                       # 28, 14, 7 (16, 8, 4)
                units.append(ShuffleUnit(channels, width, groups=groups, stride=2 if i == 0 else 1,
                                         group_first=not (stage == 0 and i == 0)))
                channels = width
        self.stages = nn.Sequential(*units)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        # source: Goyal et al. 2017 (zero gamma in each residual block's last BN). On digits it
        # let ShuffleNet v1 take lr 0.05 and reach 96% after 3 epochs, against 72-89% at lr 0.02
        # without it, where lr 0.05 had failed (issue 13)
        if zero_init_residual:
            for unit in units:
                last_bn = unit.expand[-1]  # expand = (group conv, BN)
                if unit.stride == 1 and isinstance(last_bn, nn.BatchNorm2d):
                    nn.init.zeros_(last_bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, num_classes)
        x = self.stages(self.stem(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


def _builder(groups: int, width_mult: float, *, cifar: bool = False) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        kwargs.setdefault("groups", groups)
        kwargs.setdefault("width_mult", width_mult)
        if cifar:
            kwargs.setdefault("num_classes", 10)
        return ShuffleNetV1(cifar=cifar, **kwargs)
    build.__doc__ = f"ShuffleNet v1 {width_mult}x, g={groups}{', CIFAR stem' if cifar else ''}."
    return build


# (groups, width) -> paper MACs ("MFLOPs" in the paper, which counts multiply-adds, Sec. 4).
# source: Zhang et al. 2018, Table 1, "Complexity" row for 1x (g = 1, 2, 3, 4, 8: 143M, 140M,
# 137M, 133M, 137M); Table 2 (0.5x: 38 MFLOPs); Table 5 (1.5x (g=3): 292; 2x (g=3): 524 MFLOPs).
# The paper prints no parameter counts.
_ENTRIES = {
    (1, 1.0): 143_000_000, (2, 1.0): 140_000_000, (3, 1.0): 137_000_000,
    (4, 1.0): 133_000_000, (8, 1.0): 137_000_000,
    (3, 0.5): 38_000_000, (3, 1.5): 292_000_000, (3, 2.0): 524_000_000,
}
for (_groups, _width), _macs in _ENTRIES.items():
    _suffix = "" if _width == 1.0 else "_x" + f"{_width:.1f}".replace(".", "_")
    register_model(ModelInfo(f"shufflenet_v1_g{_groups}{_suffix}", family="shufflenet", paper=_PAPER,
                             year=2018, input_shape=(3, 224, 224), num_classes=1000, size="imagenet",
                             paper_macs=_macs, source="Zhang et al. 2018, Tables 1, 2 and 5 (MFLOPs = "
                                                      "multiply-adds)"))(_builder(_groups, _width))

# Two group counts at 1x: the paper's comparison (Table 1) at about the same multiply-adds, the
# wider g = 8 network moving more data per multiply-add.
for _groups in (3, 8):
    register_model(ModelInfo(f"shufflenet_v1_g{_groups}_cifar", family="shufflenet", paper=_PAPER, year=2018,
                             input_shape=(3, 32, 32), num_classes=10, size="cifar",
                             notes="CIFAR adaptation: stem stride 1, no stem max pool (see ShuffleNetV1).",
                             ))(_builder(_groups, 1.0, cifar=True))
