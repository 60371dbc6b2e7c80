"""The transfer set: a few standard networks, written here by hand, that every calibration times
beside its random ones and never fits on.

The calibration's held-out error is measured on random networks drawn from the very distribution
it was fitted on (:mod:`dnncost.prediction.sampling`); it says little about networks people build.
These are the common designs, each written from its paper in plain ``torch.nn`` -- not drawn by the
sampler, and not zoo, torchvision or timm code (tests/test_leak.py checks the imports):

- ``plain``: a VGG-style stack of 3x3 convolutions, batch norm and ReLU, max pooling between stages
  (Simonyan & Zisserman 2015);
- ``bottleneck``: ResNet bottleneck blocks, 1x1 reduce, 3x3, 1x1 expand, projection shortcuts
  (He et al. 2016);
- ``inverted_residual``: MobileNetV2 inverted residuals, 1x1 expand, 3x3 depthwise, 1x1 linear
  projection, ReLU6 (Sandler et al. 2018);
- ``attention``: a patch embedding and pre-norm transformer encoder layers over the patches, a
  ViT without the class token (Dosovitskiy et al. 2021);
- ``mbconv``: EfficientNet's MBConv blocks, 1x1 expand, 3x3 or 5x5 depthwise, squeeze-excitation,
  SiLU, down to a 1x1 map at the CIFAR size (Tan & Le 2019);
- ``grouped_bottleneck``: ResNeXt blocks, 32 groups in the 3x3, an ImageNet stem (stride 2, max
  pool) so that the last stage's 1024 channels meet a 1x1 map at the CIFAR size (Xie et al. 2017).

Each comes at a CIFAR-sized input (3x32x32) and, in a full calibration, a larger one (3x96x96);
the calibration picks each one's batch under its FLOPs cap (:mod:`dnncost.prediction.calibration`).
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from torch import nn

CIFAR_SHAPE = (3, 32, 32)  # source: CIFAR-10/100
LARGER_SHAPE = (3, 96, 96)  # source: our choice, STL-10's side: ImageNet-like stages at a cost a
# 2-core calibration can pay
BATCH = 32  # source: the study's batch; the calibration lowers it under its FLOPs cap
CLASSES = 10  # source: CIFAR-10
SEED = 0  # source: our choice; the same weights on every machine


def _conv_bn(cin: int, cout: int, k: int, *, stride: int = 1, groups: int = 1,
             act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def plain() -> nn.Module:
    """VGG-style: stages of two 3x3 convolutions at 32, 64, 128 and 256 channels, a 2x2 max pool
    after each, global average pooling and one linear classifier."""
    layers: list[nn.Module] = []
    cin = 3
    for width in (32, 64, 128, 256):
        layers += [_conv_bn(cin, width, 3), _conv_bn(width, width, 3), nn.MaxPool2d(2)]
        cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, CLASSES))


RESNET_EXPANSION = 4  # source: He et al. 2016, Table 1
RESNEXT_EXPANSION, RESNEXT_GROUPS = 2, 32  # source: Xie et al. 2017, ResNeXt-50 (32x4d)


class Bottleneck(nn.Module):
    """x -> relu(1x1 -> 3x3 in ``groups`` groups (stride) -> 1x1 (``expansion`` x wider) +
    shortcut(x)): ResNet's block, and with groups ResNeXt's."""

    def __init__(self, cin: int, width: int, stride: int, *, expansion: int = RESNET_EXPANSION,
                 groups: int = 1) -> None:
        super().__init__()
        cout = width * expansion
        self.body = nn.Sequential(_conv_bn(cin, width, 1),
                                  _conv_bn(width, width, 3, stride=stride, groups=groups),
                                  _conv_bn(width, cout, 1, act=None))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else _conv_bn(cin, cout, 1, stride=stride, act=None))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def bottleneck() -> nn.Module:
    """ResNet-style: a 3x3 stem of 32 channels, three stages of two bottleneck blocks (widths 16, 32,
    64; 64, 128, 256 channels out), strided at the start of stages 2 and 3."""
    layers: list[nn.Module] = [_conv_bn(3, 32, 3)]
    cin = 32
    for stage, width in enumerate((16, 32, 64)):
        for block in range(2):
            layers.append(Bottleneck(cin, width, 2 if stage and not block else 1))
            cin = width * RESNET_EXPANSION
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, CLASSES))


class InvertedResidual(nn.Module):
    """x -> 1x1 expand (x t) -> 3x3 depthwise (stride) -> 1x1 linear projection (+ x when shapes
    allow)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [_conv_bn(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6),
                   _conv_bn(hidden, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


INVERTED_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 1, 1))
"""(expansion, channels, blocks, stride of the first) per stage; source: MobileNetV2 (Sandler et al.
2018, Table 2), its first five stages, the first stride 1 as for CIFAR inputs."""


def inverted_residual() -> nn.Module:
    """MobileNetV2-style: a 3x3 stem of 32 channels, INVERTED_STAGES, a 1x1 convolution to 320
    channels, global average pooling and a linear classifier."""
    layers: list[nn.Module] = [_conv_bn(3, 32, 3, act=nn.ReLU6)]
    cin = 32
    for expand, cout, blocks, stride in INVERTED_STAGES:
        for block in range(blocks):
            layers.append(InvertedResidual(cin, cout, stride if block == 0 else 1, expand))
            cin = cout
    return nn.Sequential(*layers, _conv_bn(cin, 320, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(320, CLASSES))


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: t + attention(norm(t)), then t + MLP(norm(t))."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # t: (B, tokens, dim)
        y = self.norm1(t)
        t = t + self.attention(y, y, y, need_weights=False)[0]
        return t + self.mlp(self.norm2(t))


class PatchTransformer(nn.Module):
    """ViT-style: non-overlapping patches embedded by a strided convolution, a learned position
    embedding, encoder layers, a final norm, the mean over the tokens and a linear classifier."""

    def __init__(self, side: int, *, patch: int = 4, dim: int = 96, depth: int = 4,
                 heads: int = 3) -> None:
        super().__init__()
        tokens = (side // patch) ** 2
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.position = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.normal_(self.position, std=0.02)  # source: ViT's position embedding init
        self.layers = nn.Sequential(*[EncoderLayer(dim, heads, 4 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2) + self.position  # (B, tokens, dim)
        return self.head(self.norm(self.layers(t)).mean(dim=1))


def attention(side: int) -> nn.Module:
    """The patch transformer for inputs of ``side`` x ``side``: 4x4 patches at 32 (64 tokens), 8x8
    at larger sides (144 tokens at 96); width 96, 3 heads, 4 layers (a ViT-Tiny-like width, halved
    in depth: source, Touvron et al. 2021, DeiT-Ti is 192 wide, 3 heads, 12 layers)."""
    return PatchTransformer(side, patch=4 if side <= 32 else 8)


class MBConv(nn.Module):
    """x -> 1x1 expand (x t, SiLU) -> k x k depthwise (stride, SiLU) -> squeeze-excitation (a
    quarter of the block's input channels, SiLU, sigmoid gate) -> 1x1 projection (+ x when shapes
    allow)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1, act=nn.SiLU)]
        layers.append(_conv_bn(hidden, hidden, k, stride=stride, groups=hidden, act=nn.SiLU))
        self.expand_dw = nn.Sequential(*layers)
        squeezed = max(1, cin // 4)  # source: Tan & Le 2019, SE ratio 0.25 of the block's input
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, squeezed, 1), nn.SiLU(),
                                nn.Conv2d(squeezed, hidden, 1), nn.Sigmoid())
        self.project = _conv_bn(hidden, cout, 1, act=None)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand_dw(x)
        y = self.project(y * self.se(y))
        return x + y if self.residual else y


MBCONV_STAGES = ((1, 16, 3, 1, 1), (6, 24, 3, 1, 2), (6, 40, 5, 1, 2), (6, 80, 3, 2, 2),
                 (6, 112, 5, 1, 1), (6, 192, 5, 2, 2), (6, 320, 3, 1, 1))
"""(expansion, channels, kernel, blocks, stride of the first) per stage; source: EfficientNet-B0
(Tan & Le 2019, Table 1), its seven stages with at most two blocks each."""


def mbconv() -> nn.Module:
    """EfficientNet-style: a strided 3x3 stem of 32 channels, MBCONV_STAGES, a 1x1 convolution to
    1280 channels, global average pooling and a linear classifier."""
    layers: list[nn.Module] = [_conv_bn(3, 32, 3, stride=2, act=nn.SiLU)]
    cin = 32
    for expand, cout, k, blocks, stride in MBCONV_STAGES:
        for block in range(blocks):
            layers.append(MBConv(cin, cout, k, stride if block == 0 else 1, expand))
            cin = cout
    return nn.Sequential(*layers, _conv_bn(cin, 1280, 1, act=nn.SiLU), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(1280, CLASSES))


def grouped_bottleneck() -> nn.Module:
    """ResNeXt-style: a 7x7 stride-2 stem of 64 channels and a 3x3 stride-2 max pool, four stages
    of one block each (widths 128, 256, 512, 1024 in 32 groups), strided from the second on."""
    layers: list[nn.Module] = [_conv_bn(3, 64, 7, stride=2), nn.MaxPool2d(3, 2, padding=1)]
    cin = 64
    for stage, width in enumerate((128, 256, 512, 1024)):
        layers.append(Bottleneck(cin, width, 2 if stage else 1, expansion=RESNEXT_EXPANSION,
                                 groups=RESNEXT_GROUPS))
        cin = RESNEXT_EXPANSION * width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, CLASSES))


NETWORKS: dict[str, Callable[[int], nn.Module]] = {
    "plain": lambda side: plain(), "bottleneck": lambda side: bottleneck(),
    "inverted_residual": lambda side: inverted_residual(), "attention": attention,
    "mbconv": lambda side: mbconv(), "grouped_bottleneck": lambda side: grouped_bottleneck()}
"""Each standard network by name, built for a square input of the given side."""


@dataclass(frozen=True)
class TransferNet:
    """One standard network at one input: its module (CPU, float32, seeded weights), one sample's
    input shape and the batch it is drawn at (the calibration may lower it)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, int, int]
    batch_size: int


def transfer_networks(*, larger: bool, designs: Collection[str] | None = None) -> list[TransferNet]:
    """Every standard network (of ``designs``, when given: NETWORKS' names) at the CIFAR-sized
    input, and at LARGER_SHAPE too when ``larger``."""
    shapes = (CIFAR_SHAPE, LARGER_SHAPE) if larger else (CIFAR_SHAPE,)
    out = []
    for shape in shapes:
        for name, build in NETWORKS.items():
            if designs is not None and name not in designs:
                continue
            torch.manual_seed(SEED)
            out.append(TransferNet(f"transfer:{name}@{shape[-1]}", build(shape[-1]), shape, BATCH))
    return out


def transfer_network(name: str) -> TransferNet | None:
    """The standard network a :class:`TransferNet`'s name names ('transfer:plain@32'), built
    alone (its design at its sizes, not every design); None when no standard network has it."""
    design = name.removeprefix("transfer:").partition("@")[0]
    if design not in NETWORKS:
        return None
    return next((net for net in transfer_networks(larger=True, designs=(design,))
                 if net.name == name), None)


__all__ = ["BATCH", "CIFAR_SHAPE", "LARGER_SHAPE", "NETWORKS", "TransferNet", "transfer_network",
           "transfer_networks"]
