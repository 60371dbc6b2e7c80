"""Random networks drawn from stated distributions: what the time predictor learns from.

Calibration never builds a published network (torchvision's, timm's or dnncost's zoo): it draws
networks here, from the layer distributions below, and times their kernels and steps. Each network
is a stem, a few stages of randomly chosen blocks and a classifier head, so that its kernels meet
the shapes and neighbours they meet in real CNNs and attention models:

- blocks: plain conv-norm-act, residual basic (3x3, 3x3), bottleneck (1x1, 3x3 grouped or not,
  1x1), inverted residual (1x1 expand, k x k depthwise, optional squeeze-excitation, 1x1 project),
  two-branch concatenation, dense concatenation, channel shuffle with grouped 1x1 convolutions,
  transformer encoder on the flattened map (layer norm, multi-head attention, MLP), pooling, and
  ConvNeXt's (k x k depthwise, then layer norm and MLP on the channels-last permutation, whose
  output leaves every later convolution a channels-last input);
- kernel 1/3/5/7, stride 1/2, groups 1 to depthwise (many groups), widths 8 to 2048 (wide layers
  on tiny maps in late stages; in one network of four not rounded to 8), spatial sides 1 to 224,
  batch 1 to 64;
- depth: most networks are short (1-3 blocks a stage), about a third deep and narrow (3-8 blocks a
  stage: hundreds of small kernels a step, narrow where the maps are large); half of the small
  inputs meet an ImageNet-style stride-2 stem (often a max pool, then 3-5 stages), so that late,
  wide stages run on 1x1 or 2x2 maps;
- a tail, in about two networks of five: one or two wide blocks on the last 1x1-4x4 map, as
  ImageNet networks on CIFAR-sized inputs end;
- activations ReLU (in place or not), ReLU6, SiLU, Hardswish, GELU, sigmoid, tanh, LeakyReLU;
  batch norm, group norm or none; dropout and wide MLP heads.

Beside them, :func:`kernel_probes` lists the one-convolution kernel probes a calibration without a
focus times too, kernels no draw above meets often enough: those on oneDNN's padded slow path
(:func:`padded_probes`), wide 1x1 convolutions on 1x1-4x4 maps (:func:`pointwise_probes`), wide
strided 1x1 and 3x3 ones there (:func:`wide_probes`) and per-sample convolutions
(:func:`dynamic_probes`).

All draws come from ``random.Random(seed)``: the same seed gives the same network on every machine.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

SIDES = (32, 32, 32, 64, 96, 128, 160, 224)  # source: CIFAR-sized (most often) to ImageNet-sized inputs
BATCHES = (1, 2, 4, 8, 8, 16, 32, 32, 64)  # source: our choice, around the study's 32 and 224's 8
STEM_WIDTHS = (8, 16, 24, 32, 48, 64)  # source: stems of common CNNs (16 to 64)
STAGES = (2, 3, 4, 5)  # source: CIFAR ResNets have 3 stages, ImageNet CNNs 4-5
IMAGENET_STAGES = (3, 4, 4, 5)  # source: ImageNet CNNs (stride-2 stem) have 4-5 stages, some 3
BLOCKS_PER_STAGE = (1, 1, 2, 3)  # source: our choice, short networks keep calibration fast
DEEP_BLOCKS_PER_STAGE = (3, 4, 6, 8)  # source: our choice, the depth of CIFAR ResNets (3-18) and
# MobileNet/EfficientNet stages (2-6): a step of hundreds of small kernels, where per-call costs add up
DEEP_SHARE = 0.3  # source: our choice; about one network in three is deep (and narrow, below)
STRIDED_STEM_SHARE = 0.5  # source: our choice; ImageNet-style networks (stride-2 stem, pooling)
# are often run on small inputs too, which leaves late stages at 1x1 or 2x2 with many channels
GROWTH = (1.0, 1.5, 2.0, 2.0)  # source: width growth per stage of common CNNs
MAX_WIDTH = 2048  # source: ResNet-50's last stage
KERNELS = (1, 3, 3, 3, 5, 7)  # source: our choice; 3x3 most often, 5x5/7x7 of stems and MBConv
DEPTHWISE_KERNELS = (3, 3, 5, 5, 7)  # source: MobileNet/EfficientNet/ConvNeXt depthwise kernels
GROUP_WIDTHS = (1, 2, 4, 8, 16, 32, 64)  # source: ResNeXt/RegNet channels per group (1: depthwise)
EXPANSIONS = (1, 3, 4, 6)  # source: MobileNetV2/V3, EfficientNet expansion ratios
MAX_TOKENS = 256  # source: our choice; attention only on maps of at most 16x16
CLASSES = (10, 100, 1000)  # source: CIFAR-10, CIFAR-100, ImageNet
UNROUNDED_SHARE = 0.25  # source: our choice; a network in four keeps its widths unrounded (ReXNet's
# 91, 125, 149 ..., a pruned network's), the others round them to 8 as most designs do
TAIL_SHARE = 0.4  # source: measured; ImageNet networks run at CIFAR sizes end in stages of 960-2048
# channels on 1x1-2x2 maps (EfficientNet, MobileNet v3, ResNeXt), where oneDNN's kernels leave their
# fast paths (a depthwise 5x5 with a one-pixel output ran 25x slower than predicted, a 1x1
# convolution's backward from 1024 to 2048 channels 3x): about two networks in five end so
TAIL_BLOCKS = (1, 2)  # source: our choice; EfficientNet-B0 has 1 block at 1x1 on a 32x32 input, 4
# at 2x2


def _act(name: str) -> nn.Module:
    return {"relu": lambda: nn.ReLU(), "relu_inplace": lambda: nn.ReLU(inplace=True),
            "relu6": lambda: nn.ReLU6(inplace=True), "silu": lambda: nn.SiLU(inplace=True),
            "hardswish": lambda: nn.Hardswish(), "gelu": lambda: nn.GELU(),
            "sigmoid": lambda: nn.Sigmoid(), "tanh": lambda: nn.Tanh(),
            "leaky_relu": lambda: nn.LeakyReLU(0.1)}[name]()


ACTIVATIONS = ("relu", "relu", "relu_inplace", "relu_inplace", "relu6", "silu", "silu",
               "hardswish", "gelu", "sigmoid", "tanh", "leaky_relu")
"""source: our choice, ReLU most often as in published CNNs; a network draws one (or two)."""
NORMS = ("batch", "batch", "batch", "batch", "group", "none")  # source: our choice, BN dominant


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(_divisor(channels, 8), channels)
    return nn.Identity()


def _divisor(n: int, at_most: int) -> int:
    """The largest divisor of n that is at most ``at_most``."""
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def _conv(cin: int, cout: int, k: int, *, stride: int = 1, groups: int = 1, norm: str = "batch",
          act: str | None = "relu") -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups,
                                         bias=norm == "none")]
    layers.append(_norm(norm, cout))
    if act is not None:
        layers.append(_act(act))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, body: nn.Module, shortcut: nn.Module | None, act: str | None) -> None:
        super().__init__()
        self.body, self.shortcut = body, shortcut or nn.Identity()
        self.act = _act(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, gate: str) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce, self.expand = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)
        self.act = nn.SiLU() if gate == "sigmoid" else nn.ReLU()
        self.gate = nn.Sigmoid() if gate == "sigmoid" else nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class _Concat(nn.Module):
    def __init__(self, branches: list[nn.Module], keep_input: bool) -> None:
        super().__init__()
        self.branches, self.keep_input = nn.ModuleList(branches), keep_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(([x] if self.keep_input else []) + [b(x) for b in self.branches], 1)


class _Shuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class _GlobalResponseNorm(nn.Module):
    """ConvNeXt V2's global response norm (Woo et al. 2023; timm's GlobalResponseNorm): each
    channel scaled by its L2 norm over the map relative to that norm's mean over the channels. On
    a tensor stored channels-last, the norm over the spatial dimensions runs on a slow path of
    PyTorch's CPU reductions: 8.2 ms on 32x768x2x2, against 0.10 ms contiguous and 0.03 ms for a
    mean over the same dimensions (source: measured, 2-core Xeon, torch 2.14); in convnextv2_femto
    at 32x32 such norms were half the validation step."""

    def __init__(self, channels: int, channel_dim: int) -> None:
        super().__init__()
        self.channel_dim = channel_dim  # 1: on (B, C, H, W), -1: on (B, H, W, C)
        self.spatial = (2, 3) if channel_dim == 1 else (1, 2)
        shape = (1, channels, 1, 1) if channel_dim == 1 else (1, 1, 1, channels)
        self.weight, self.bias = nn.Parameter(torch.zeros(shape)), nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.norm(p=2, dim=self.spatial, keepdim=True)
        return x + torch.addcmul(self.bias, self.weight,
                                 x * (g / (g.mean(dim=self.channel_dim, keepdim=True) + 1e-6)))


class _ChannelsLastMLP(nn.Module):
    """The rest of a ConvNeXt block after its depthwise convolution: layer norm and an MLP on the
    (B, H, W, C) permutation, permuted back -- which leaves its output stored channels-last, so
    that the convolutions after it run on oneDNN's NHWC kernels, as in ConvNeXt and MambaOut --
    and, as in ConvNeXt V2, a global response norm after the MLP's activation (``grn``: on the
    permutation, 'bhwc', or on its (B, C, H, W) view, 'bchw', as timm's smallest V2s; None: none)."""

    def __init__(self, channels: int, hidden: int, act: str, grn: str | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc1, self.act, self.fc2 = nn.Linear(channels, hidden), _act(act), nn.Linear(hidden, channels)
        self.grn = _GlobalResponseNorm(hidden, 1 if grn == "bchw" else -1) if grn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(self.norm(x.permute(0, 2, 3, 1))))
        if self.grn is not None:
            h = self.grn(h) if self.grn.channel_dim == -1 else \
                self.grn(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(h).permute(0, 3, 1, 2)


class _Encoder(nn.Module):
    """A transformer encoder layer on the (B, H*W, C) tokens of a feature map."""

    def __init__(self, channels: int, heads: int, mlp: int, act: str) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(channels, mlp), _act(act), nn.Linear(mlp, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        y = self.norm1(t)
        t = t + self.attn(y, y, y, need_weights=False)[0]
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)


@dataclass(frozen=True)
class RandomNet:
    """A drawn network: its module, one sample's input shape, its batch size and a description."""

    seed: int
    module: nn.Module
    input_shape: tuple[int, int, int]
    batch_size: int
    blocks: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"random{self.seed}"


Block = Callable[[random.Random, int, int, int, str, str], tuple[nn.Module, int]]


def _plain(rng: random.Random, cin: int, cout: int, stride: int, act: str, norm: str
           ) -> tuple[nn.Module, int]:
    return _conv(cin, cout, rng.choice(KERNELS), stride=stride, norm=norm, act=act), cout


def _basic(rng: random.Random, cin: int, cout: int, stride: int, act: str, norm: str
           ) -> tuple[nn.Module, int]:
    body = nn.Sequential(_conv(cin, cout, 3, stride=stride, norm=norm, act=act),
                         _conv(cout, cout, 3, norm=norm, act=None))
    short = None if stride == 1 and cin == cout else _conv(cin, cout, 1, stride=stride, norm=norm,
                                                           act=None)
    return _Residual(body, short, act), cout


def _bottleneck(rng: random.Random, cin: int, cout: int, stride: int, act: str, norm: str
                ) -> tuple[nn.Module, int]:
    width = max(8, cout // rng.choice((1, 2, 4)))
    per_group = rng.choice(GROUP_WIDTHS[1:] + (width,))
    groups = _divisor(width, max(1, width // per_group))
    body = nn.Sequential(_conv(cin, width, 1, norm=norm, act=act),
                         _conv(width, width, 3, stride=stride, groups=groups, norm=norm, act=act),
                         _conv(width, cout, 1, norm=norm, act=None))
    short = None if stride == 1 and cin == cout else _conv(cin, cout, 1, stride=stride, norm=norm,
                                                           act=None)
    return _Residual(body, short, act), cout


def _inverted(rng: random.Random, cin: int, cout: int, stride: int, act: str, norm: str
              ) -> tuple[nn.Module, int]:
    hidden = min(MAX_WIDTH, cin * rng.choice(EXPANSIONS))
    layers: list[nn.Module] = [] if hidden == cin else [_conv(cin, hidden, 1, norm=norm, act=act)]
    k = rng.choice(DEPTHWISE_KERNELS)
    layers.append(_conv(hidden, hidden, k, stride=stride, groups=hidden, norm=norm, act=act))
    if rng.random() < 0.5:
        layers.append(_SqueezeExcite(hidden, max(8, hidden // 4), rng.choice(("sigmoid", "hard"))))
    layers.append(_conv(hidden, cout, 1, norm=norm, act=None))
    body = nn.Sequential(*layers)
    return (_Residual(body, None, None) if stride == 1 and cin == cout else body), cout


def _branches(rng: random.Random, cin: int, cout: int, stride: int, act: str, norm: str
              ) -> tuple[nn.Module, int]:
    half = max(4, cout // 2)
    return _Concat([_conv(cin, half, 1, stride=stride, norm=norm, act=act),
                    _conv(cin, half, rng.choice((3, 5)), stride=stride, norm=norm, act=act)],
                   keep_input=False), 2 * half


def _dense(rng: random.Random, cin: int, cout: int, stride: int, act: str, norm: str
           ) -> tuple[nn.Module, int]:
    growth = rng.choice((12, 16, 32, 48))
    layer = nn.Sequential(_norm(norm, cin), _act(act), nn.Conv2d(cin, growth, 3, padding=1, bias=False))
    block: nn.Module = _Concat([layer], keep_input=True)
    if stride == 2:
        block = nn.Sequential(block, nn.AvgPool2d(2))
    return block, cin + growth


def _shuffle(rng: random.Random, cin: int, cout: int, stride: int, act: str, norm: str
             ) -> tuple[nn.Module, int]:
    g = rng.choice((2, 3, 4, 8))
    cin_g, cout_g = g * max(1, cin // g), g * max(2, cout // g)
    mid = g * max(1, cout_g // (4 * g))
    layers: list[nn.Module] = [nn.Conv2d(cin, cin_g, 1, bias=False)] if cin_g != cin else []
    layers += [_conv(cin_g, mid, 1, groups=g, norm=norm, act=act), _Shuffle(g),
               _conv(mid, mid, 3, stride=stride, groups=mid, norm=norm, act=None),
               _conv(mid, cout_g, 1, groups=g, norm=norm, act=act)]
    return nn.Sequential(*layers), cout_g


CONVNEXT_GRN = (None, None, "bhwc", "bchw")  # source: our choice; half the ConvNeXt blocks are V2's,
# their response norm on either view of the channels-last tensor


def _convnext(rng: random.Random, cin: int, cout: int, stride: int, act: str, norm: str
              ) -> tuple[nn.Module, int]:
    k = rng.choice(DEPTHWISE_KERNELS)
    body = nn.Sequential(nn.Conv2d(cout, cout, k, padding=k // 2, groups=cout),
                         _ChannelsLastMLP(cout, cout * rng.choice((2, 4)), act,
                                          rng.choice(CONVNEXT_GRN)))
    block = _Residual(body, None, None)
    if stride == 1 and cin == cout:
        return block, cout
    # ConvNeXt's downsampling between stages: a stride x stride convolution (1x1 without a stride)
    return nn.Sequential(nn.Conv2d(cin, cout, stride, stride=stride), block), cout


def _pool(rng: random.Random, cin: int, cout: int, stride: int, act: str, norm: str
          ) -> tuple[nn.Module, int]:
    pool = rng.choice((nn.MaxPool2d(3, 2, padding=1), nn.MaxPool2d(2), nn.AvgPool2d(2)))
    return nn.Sequential(pool, _conv(cin, cout, 1, norm=norm, act=act)), cout


BLOCKS: dict[str, Block] = {"plain": _plain, "basic": _basic, "bottleneck": _bottleneck,
                            "inverted": _inverted, "branches": _branches, "dense": _dense,
                            "shuffle": _shuffle, "pool": _pool, "convnext": _convnext}
BLOCK_WEIGHTS = (3, 3, 2, 3, 1, 1, 1, 1, 2)  # source: our choice, the common blocks more often


class _Net(nn.Module):
    def __init__(self, features: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.features, self.head = features, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def random_network(seed: int, *, max_side: int = 224, side: int | None = None,
                   batch: int | None = None, stages: int | None = None) -> RandomNet:
    """Draw network number ``seed`` (an ordinary nn.Module, CPU, float32, seeded weights); ``side``
    and ``batch``, when given, replace the drawn input side and batch (a calibration focused on
    one configuration), the rest of the network drawn as ever. ``stages``, when given, keeps only
    that many stages at most, none of them deep and narrow: the first stages of an ImageNet
    network, whose maps (tens of MiB at 224x224, batch 8) whole networks under a calibration's
    FLOPs cap never reach (calibration.MAP_ANCHOR)."""
    rng = random.Random(seed)
    widths = random.Random(f"widths{seed}")  # apart from rng: the rounded networks draw as before
    unrounded = widths.random() < UNROUNDED_SHARE
    torch.manual_seed(seed)
    drawn_side = rng.choice([s for s in SIDES if s <= max_side] or [max_side])
    drawn_batch = rng.choice(BATCHES)
    side = drawn_side if side is None else side
    batch = drawn_batch if batch is None else batch
    acts = [rng.choice(ACTIVATIONS) for _ in range(2)]
    norm = rng.choice(NORMS)
    width = rng.choice(STEM_WIDTHS)
    deep = rng.random() < DEEP_SHARE and stages is None
    strided = side > 64 or rng.random() < STRIDED_STEM_SHARE
    if stages is not None:  # the first stages of ImageNet networks are 32-64 wide (a wider stem
        width = rng.choice(STEM_WIDTHS[3:])  # than a whole network under the cap can afford)
    if deep and (side > 64 or not strided):  # narrow, so that many blocks on large maps still
        width = min(width, rng.choice(STEM_WIDTHS[:4]))  # fit MAX_TRAIN_FLOPS at a useful batch
    if unrounded:
        width = max(8, width + widths.randint(-7, 7))
    stem_stride = 2 if strided else 1
    layers: list[nn.Module] = [_conv(3, width, rng.choice((3, 5, 7)) if stem_stride == 2 else 3,
                                     stride=stem_stride, norm=norm, act=acts[0])]
    s, c = (side + stem_stride - 1) // stem_stride, width
    if (side >= 128 or strided) and rng.random() < 0.7:
        layers.append(nn.MaxPool2d(3, 2, padding=1))
        s = (s + 1) // 2
    names: list[str] = []
    drawn_stages = rng.choice(IMAGENET_STAGES if strided else STAGES)
    for stage in range(drawn_stages if stages is None else min(stages, drawn_stages)):
        cout = min(MAX_WIDTH, int(c * rng.choice(GROWTH)) // 8 * 8 or 8)
        if unrounded:
            cout = max(8, cout + widths.randint(-7, 7))
        for i in range(rng.choice(DEEP_BLOCKS_PER_STAGE if deep else BLOCKS_PER_STAGE)):
            stride = 2 if i == 0 and stage > 0 and s > 1 else 1
            name = rng.choices(tuple(BLOCKS), BLOCK_WEIGHTS)[0]
            block, c = BLOCKS[name](rng, c, cout, stride, rng.choice(acts), norm)
            layers.append(block)
            names.append(name)
            s = (s + stride - 1) // stride if name != "pool" else (s + 1) // 2
        if s * s <= MAX_TOKENS and c % 8 == 0 and rng.random() < 0.2:
            heads = _divisor(c, rng.choice((1, 2, 4, 8)))
            layers.append(_Encoder(c, heads, 2 * c, rng.choice(("gelu", "relu"))))
            names.append("encoder")
    if rng.random() < TAIL_SHARE and s <= 4:  # late blocks of many channels on a tiny map
        for _ in range(rng.choice(TAIL_BLOCKS)):
            stride = 2 if s > 1 and rng.random() < 0.5 else 1
            name = rng.choice(("inverted", "bottleneck"))
            block, c = BLOCKS[name](rng, c, min(MAX_WIDTH, c * rng.choice((1, 2))), stride,
                                    rng.choice(acts), norm)
            layers.append(block)
            names.append(f"tail_{name}")
            s = (s + stride - 1) // stride
    if rng.random() < 0.3 and s > 1:  # wide layers on a tiny map: a late 1x1 to many channels
        wide = min(MAX_WIDTH, c * rng.choice((2, 4)))
        layers.append(_conv(c, wide, 1, norm=norm, act=acts[1]))
        c = wide
        names.append("wide")
    classes = rng.choice(CLASSES)
    head: list[nn.Module]
    if rng.random() < 0.25:  # an MLP head on a small pooled map (AlexNet/VGG-like)
        p = rng.choice((1, 2, 4))
        hidden = rng.choice((256, 512, 1024, 2048))
        head = [nn.AdaptiveAvgPool2d(p), nn.Flatten(), nn.Dropout(0.5), nn.Linear(c * p * p, hidden),
                _act(acts[1]), nn.Dropout(0.5), nn.Linear(hidden, classes)]
        names.append("mlp_head")
    else:
        head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if rng.random() < 0.3:
            head.append(nn.Dropout(0.2))
        head.append(nn.Linear(c, classes))
    module = _Net(nn.Sequential(*layers), nn.Sequential(*head))
    return RandomNet(seed, module, (3, side, side), batch, tuple(names))


@dataclass(frozen=True)
class KernelProbe:
    """A one-convolution network the calibration times beside its random ones: a kernel random
    networks meet too rarely to learn (see :func:`kernel_probes`)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, int, int]
    batch_size: int


PROBE_PREFIX = "probe:"  # source: our choice; a kernel probe's name starts so


def is_probe(name: str) -> bool:
    """Whether a timed network's name is a kernel probe's (not a random or transfer network)."""
    return name.startswith(PROBE_PREFIX)


RETIRED_PROBES = (f"{PROBE_PREFIX}map",)  # source: our choice; the name prefixes of probes that
# calibrations once timed and the model no longer fits on (the large-map probes, kernel_probes)


def is_retired_probe(name: str) -> bool:
    """Whether a timed network is a probe of :data:`RETIRED_PROBES`: samples kept by an older
    calibration may hold some, and a refit leaves them out."""
    return name.startswith(RETIRED_PROBES)


PROBE_CHANNELS = (24, 64, 96, 128, 192, 256, 384, 576, 1152)  # source: MobileNet/EfficientNet
# late stages (96-1152 channels), thin networks (24-64) and StarNet's and ConvNeXt's last stages
# (128-384): fitted on 96 channels or more, the padded regressor's line started at 0.35 ms a call,
# and put timm's test_mambaout's 7x7 depthwise convolutions on a 2x2 map (48 channels, batch 32) at
# 1.07 ms each where they took 0.1 ms (0.62 ms with a 24-channel probe); with only 24, 96, 576 and
# 1,152, a 7x7 depthwise forward on a 1x1 map of 128-256 channels at batch 32 was predicted 0.8-0.9
# ms where it took 1.8-3.9 (below the 96-channel probe's 1.3: the trees put it among random
# networks' calls), 1.8 ms for 1.9 with these (2-core Xeon, torch 2.14, one calibration refitted)
PROBE_GEOMETRY = ((3, 1, 1), (3, 2, 1), (3, 4, 2), (5, 1, 1), (5, 2, 2), (7, 1, 1), (7, 2, 1),
                  (7, 4, 2))
"""(kernel, input side, stride): every one a "same"-padded convolution whose output lies within its
padding (features.padding_margin below 0), or a 3x3 whose backward is the slow one (a 1x1 or 2x2
output, features.SLOW_BACKWARD_AREA)."""
PROBE_BATCHES = (8, 32)  # source: the batches of issue 12's unseen protocol (224 at 8, 32 at 32)
PROBE_PER_GROUP = (1, 4)  # source: depthwise, and 4 channels a group (ResNeXt-like, thin groups)
PROBE_GROUPED_CHANNELS = 576  # source: our choice, one width of PROBE_CHANNELS for the grouped ones


def _headed(body: nn.Module, channels: int) -> nn.Sequential:
    """A kernel probe's network: ``body`` (its ``channels``-channel convolution), a global pool and
    a linear head."""
    return nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def padded_probes() -> list[KernelProbe]:
    """The thin convolutions -- depthwise, or 4 channels a group -- whose output lies within their
    padding, where oneDNN's kernels run 30-200x fewer FLOP/s than on a larger map
    (benchmarks/padded_conv.py): ImageNet networks on CIFAR-sized inputs run them in their last
    stages, random networks draw them rarely (8-26 calls in a calibration), and their regressor
    (features.regressor_key) needs them sampled at the batches and widths real networks use. Each
    probe is that convolution, batch norm, ReLU and a linear head; the grouped ones at one width."""
    out = []
    torch.manual_seed(0)
    for per_group in PROBE_PER_GROUP:
        for channels in PROBE_CHANNELS if per_group == 1 else (PROBE_GROUPED_CHANNELS,):
            for k, side, stride in PROBE_GEOMETRY:
                for batch in PROBE_BATCHES:
                    module = _headed(_conv(channels, channels, k, stride=stride,
                                           groups=channels // per_group), channels)
                    out.append(KernelProbe(f"{PROBE_PREFIX}g{per_group}c{channels}k{k}s{side}/"
                                           f"{stride}b{batch}",
                                           module, (channels, side, side), batch))
    return out


POINTWISE_CHANNELS = ((96, 576), (576, 96), (160, 960), (960, 160), (320, 1280), (1024, 1024),
                      (512, 2048), (2048, 512), (1024, 2048), (2048, 1024))  # source: the late
# stages of MobileNetV2/V3 and EfficientNet (96-320 <-> 576-1280 channels), ResNeXt-50 (1024, and
# 1024 <-> 2048 in its last stage and ResNet-50's shortcut) and ResNet-50 (512 <-> 2048). The trees
# do not extrapolate past the largest weight they saw: with 4 MiB ones at most, timm's ResNeXt-50's
# 1024 <-> 2048 backward calls on a 1x1 map (8 MiB weights) were predicted at the 4 MiB ones' time,
# 0.30-0.37 of theirs, where a backward there takes 7.3 ns a weight element at batch 32 against 6.5
# at 4 MiB and 3.3 at 1 MiB (benchmarks/wide_weights.py, 2-core Xeon, torch 2.14)
POINTWISE_SIDES = (1, 2, 4)  # source: those stages' maps on a 32x32 input (stride 32, 16, 8)
POINTWISE_BATCH = 32  # source: the batch of issue 12's unseen protocol at 32x32


def pointwise_probes() -> list[KernelProbe]:
    """The wide 1x1 convolutions of late stages on 1x1-4x4 maps: ImageNet networks on CIFAR-sized
    inputs end in them, and there a convolution's backward ran at ~20 GFLOP/s with 32 pixels a
    batch, against 60-130 on larger maps: fitted on the random networks alone, torchvision's and
    timm's 1x1 backward calls on 1x1-2x2 maps were predicted 0.66x their time, 6.6% of their
    training step (source: measured, 10 development networks, 2-core Xeon, torch 2.14). Each
    probe is that convolution, batch norm, ReLU and a linear head."""
    out = []
    torch.manual_seed(0)
    for cin, cout in POINTWISE_CHANNELS:
        for side in POINTWISE_SIDES:
            module = _headed(_conv(cin, cout, 1), cout)
            out.append(KernelProbe(f"{PROBE_PREFIX}pw{cin}x{cout}s{side}", module,
                                   (cin, side, side), POINTWISE_BATCH))
    return out


WIDE_CONVS = ((256, 512, 1, 8, 2), (512, 1024, 1, 4, 2), (1024, 2048, 1, 2, 2), (256, 512, 3, 2, 2),
              (256, 256, 3, 2, 1), (512, 512, 3, 2, 2), (512, 512, 3, 2, 1), (512, 512, 3, 1, 1))
# source: ResNet-50's strided 1x1 shortcuts and ResNet-18/34's (and NF-ResNet's) last two stages
# of 3x3 convolutions on a 32x32 input -- (input and output channels, kernel, input side, stride):
# weights of 0.5-9 MiB on 1x1-4x4 maps. Fitted without them (with the pointwise probes up to 8
# MiB), a 1x1 from 1024 to 2048 channels with stride 2 on a 2x2 map was predicted 0.37 of its
# backward's time, a 3x3 of 512 channels with stride 2 0.47 (timm's seresnext26ts and nf_resnet26,
# batch 32, 2-core Xeon, torch 2.14)
WIDE_BATCH = 32  # source: the batch of issue 12's unseen protocol at 32x32


def wide_probes() -> list[KernelProbe]:
    """The dense late-stage convolutions pointwise_probes leave out: strided 1x1 shortcuts and 3x3
    convolutions of 256-512 channels on 1x1-4x4 maps (:data:`WIDE_CONVS`), whose weight gradients,
    written from 32-512 pixels a batch, run far below the rate of larger maps. Each probe is that
    convolution, batch norm, ReLU and a linear head."""
    out = []
    torch.manual_seed(0)
    for cin, cout, k, side, stride in WIDE_CONVS:
        module = _headed(_conv(cin, cout, k, stride=stride), cout)
        out.append(KernelProbe(f"{PROBE_PREFIX}wide{cin}x{cout}k{k}s{side}/{stride}", module,
                               (cin, side, side), WIDE_BATCH))
    return out

class _PerSampleConv(nn.Module):
    """A convolution whose kernel is mixed per sample from ``experts`` kernels by a routing of the
    sample's pooled input (CondConv, Yang et al. 2019): the batch is folded into the channels and
    the step runs one convolution at batch 1 with groups x batch groups, after a matmul that builds
    every sample's kernel."""

    def __init__(self, cin: int, cout: int, k: int, *, stride: int = 1, depthwise: bool = False,
                 experts: int = 4) -> None:
        super().__init__()
        self.cout, self.k, self.stride = cout, k, stride
        self.groups = cin if depthwise else 1
        self.route = nn.Linear(cin, experts)
        self.weight = nn.Parameter(torch.randn(experts, cout * (cin // self.groups) * k * k) * 0.05)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        routing = torch.sigmoid(self.route(x.mean((2, 3))))
        kernels = (routing @ self.weight).view(b * self.cout, c // self.groups, self.k, self.k)
        y = nn.functional.conv2d(x.reshape(1, b * c, h, w), kernels, stride=self.stride,
                                 padding=self.k // 2, groups=self.groups * b)
        return torch.relu(self.norm(y.view(b, self.cout, *y.shape[2:])))


DYNAMIC_CONVS = ((1152, 1152, 5, 1, True, 1, 32), (672, 672, 5, 2, True, 2, 32),
                 (240, 240, 3, 1, True, 4, 32), (192, 1152, 1, 1, False, 1, 32),
                 (1152, 192, 1, 1, False, 1, 32), (672, 672, 5, 1, True, 14, 8),
                 (1152, 192, 1, 1, False, 7, 8))  # source: EfficientNet-B0's late stages on
# 32x32 inputs at batch 32 (1x1-4x4 maps) and on 224x224 at batch 8 (7x7-14x14): (input and output
# channels, kernel, stride, depthwise, input side, batch). B1's wider stage (320 <-> 1920, 8
# experts) as two more probes moved the trees the other way: CondConv's 32x32 validation steps
# 1.18-1.72x on five development networks, against 0.89-1.16x without them


def dynamic_probes() -> list[KernelProbe]:
    """Per-sample convolutions (:class:`_PerSampleConv`, :data:`DYNAMIC_CONVS`): folding the batch
    into the channels gives kernels no other network draws -- a depthwise 5x5 at batch 1 over
    36,864 channels, a matmul of 4 inner rows writing 28 MB of kernels. Fitted without them, timm's
    CondConv networks were predicted 1.7-2.3x their 32x32 validation step and 1.0-1.7x their
    training step on six development networks; with them 0.89-1.16x and 0.68-1.13x, and the other
    networks of five earlier evaluation sets within a point of their errors (source: measured, one
    calibration refitted with and without them, 2-core Xeon, torch 2.14). Each probe is that
    convolution, a pool and a linear head."""
    out = []
    torch.manual_seed(0)
    for cin, cout, k, stride, depthwise, side, batch in DYNAMIC_CONVS:
        module = _headed(_PerSampleConv(cin, cout, k, stride=stride, depthwise=depthwise), cout)
        out.append(KernelProbe(f"{PROBE_PREFIX}dyn{'dw' if depthwise else ''}{cin}x{cout}k{k}"
                               f"s{side}/{stride}b{batch}", module, (cin, side, side), batch))
    return out


def kernel_probes() -> list[KernelProbe]:
    """Every kernel probe a calibration without a focus times: the padded ones, the pointwise ones,
    the wide ones, then the per-sample convolutions. Five first stages of ImageNet networks at
    224x224 (outputs of 8-77 MiB, on fresh pages) were probes too, until they were found to make
    real networks' 224x224 steps long: refitted with and without them, one calibration's samples
    put 56 timm networks' 224x224 rows at a median 1.17 / 1.11 of their time with them, 1.08 / 1.07
    without (each row divided by its median: 9.4% / 9.8% off against 7.9% / 8.0%), and three of
    four calibrations before it 8-23% long; the first stages are drawn as random networks instead
    (calibration.MAP_ANCHOR; source: measured, 2-core Xeon, torch 2.14)."""
    return padded_probes() + pointwise_probes() + wide_probes() + dynamic_probes()


__all__ = ["ACTIVATIONS", "BATCHES", "BLOCKS", "KernelProbe", "PROBE_PREFIX", "RETIRED_PROBES",
           "RandomNet", "SIDES", "dynamic_probes", "is_probe", "is_retired_probe", "kernel_probes",
           "padded_probes", "pointwise_probes", "random_network", "wide_probes"]
