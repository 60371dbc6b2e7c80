"""What the per-kernel model sees of one operator call: its kernel kind (the formula registry's)
and its shape features -- the operator, its phase, FLOPs, bytes, the shapes it was called with and,
for a convolution, its groups, channels per group, kernel area, stride and output area."""
from __future__ import annotations

import math

import numpy as np

from dnncost.counting.cost import OpRecord, Phase
from dnncost.counting.formulas import KINDS, OpKind, kind_of

OP_CODES = {name: i for i, name in enumerate(sorted(KINDS))}
"""Each operator's code for the regressors: its index among the registry's operator names."""


def op_kind(record: OpRecord) -> OpKind | None:
    """The kernel kind of one operator call (the formula registry's), None without a formula."""
    if record.phase is Phase.OPTIMIZER:
        return OpKind.OPTIMIZER
    return kind_of(record.op)


def conv_operands(record: OpRecord) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(output, input, weight) shapes of a convolution or convolution_backward call with two
    shapes or more, as the counter keeps them -- (input, weight, ...) forward, whose output's
    shape is not kept (()), (grad_output, input, weight) backward."""
    if "backward" in record.op and len(record.shapes) >= 3:
        return record.shapes[0], record.shapes[1], record.shapes[2]
    return (), record.shapes[0], record.shapes[1]


def conv_geometry(record: OpRecord) -> tuple[int, int, int, int, int]:
    """(groups, input channels per group, kernel area, stride, output area) of a convolution or
    convolution_backward call, from the shapes the counter keeps -- (input, weight, ...) forward,
    (grad_output, input, weight) backward -- and, forward, where the output's shape is not kept,
    from its MACs (batch x output channels x output area x channels per group x kernel area). The
    stride is the call's own (the larger of its two), or in a record without it the ratio of input
    to output side. The output's size picks the kernel oneDNN runs: a
    depthwise 5x5 whose output is one pixel runs another path, some 200x slower per FLOP than on a
    2x2 output (:func:`padding_margin`)."""
    out, x, w = conv_operands(record)
    per_group = w[1] if len(w) > 1 else 1
    groups = max(1, x[1] // per_group) if len(x) > 1 else 1
    area = int(np.prod(w[2:])) if len(w) > 2 else 1
    if out:
        out_area = int(np.prod(out[2:])) if len(out) > 2 else 1
    else:
        per_pixel = (x[0] if x else 1) * (w[0] if w else 1) * per_group * area
        out_area = max(1, round(record.cost.macs / per_pixel)) if per_pixel else 1
    in_area = int(np.prod(x[2:])) if len(x) > 2 else 1
    if record.stride:
        stride = max(record.stride)
    else:  # a record kept before the counter read the stride
        stride = max(1, round(math.sqrt(in_area / out_area))) if len(x) > 2 and out_area else 0
    return groups, per_group, area, stride, out_area


def padding_margin(area: int, out_area: int, padding: int | None = None) -> float:
    """The output's side less the convolution's padding (``padding``; None: a "same" padding's,
    kernel side // 2): below 0 every output pixel reads padding on every side, and oneDNN leaves
    its fast kernels -- a 5x5 convolution with a 1x1 output, or a 7x7 with a 2x2 one, ran 100-200x
    fewer FLOP/s than with one pixel more depthwise, ~30x with 4 channels a group, ~7x dense
    (benchmarks/padded_conv.py, 2-core Xeon, torch 2.14): one split for the regressors, where
    kernel area and output area apart need two. A convolution on an input padded beforehand
    (TensorFlow's "same" padding as Hugging Face's MobileNets port it) has padding 0 and reads no
    padding at all: taken for a "same"-padded one, its 3x3 depthwise backward on a 1x1 output was
    predicted 7-14x too slow (source: measured, Hugging Face's MobileNetV2 at 32x32, batch 32,
    2-core EPYC, torch 2.14)."""
    pad = int(math.sqrt(area)) // 2 if padding is None else padding
    return math.sqrt(out_area) - pad


def conv_padding(record: OpRecord) -> int | None:
    """A convolution call's padding (the larger of its two sides'), None in a record kept before
    the counter read it."""
    return max(record.padding) if record.padding else None


VECTOR_CHANNELS = 16  # source: AVX-512's 16 float lanes, the channel block of oneDNN's blocked
# layouts there (8 on AVX2: a remainder modulo 16 tells both apart)


def channel_remainders(record: OpRecord) -> tuple[int, int]:
    """(channels of the call's first 4-D tensor, output channels of a convolution's weight), each
    modulo VECTOR_CHANNELS (0 where the call has none): ReXNet's widths (91, 125, 149 ...) ran its
    convolutions 2.0x, its batch norms 2.5x the time the model predicted from channels in blocks of
    8 (source: measured, timm's rexnet_300 at 224x224, batch 8, 2-core Xeon, torch 2.14)."""
    first = record.shapes[0] if record.shapes else ()
    cin = first[1] % VECTOR_CHANNELS if len(first) == 4 else 0
    cout = 0
    if op_kind(record) in (OpKind.CONV, OpKind.CONV_BACKWARD) and len(record.shapes) >= 2:
        weight = conv_operands(record)[2]
        cout = weight[0] % VECTOR_CHANNELS if weight else 0
    return cin, cout


N_SHAPES = 3  # source: our choice; conv backward's (grad_output, input, weight) is the most any kind needs
N_DIMS = 4  # source: NCHW
N_FEATURES = 11 + N_SHAPES * (N_DIMS + 1) + 7  # what features() lists: 11 of the call, each
# shape's N_DIMS sides and size, 7 of a convolution's geometry


def features(record: OpRecord, mode: str) -> np.ndarray:
    """The shape features of one call: operator code, phase, training flag, log2 of FLOPs, MACs,
    bytes read and written, tensor count, channels-last layout, its :func:`channel_remainders`, each
    of the first N_SHAPES input shapes' last N_DIMS dimensions and element count (log2), and for
    convolutions groups, channels per group, kernel area, stride, output area (log2), padding margin
    and the rows of its GEMM (batch x output area, log2): a 1x1 convolution's backward over 32
    pixels ran at ~20 GFLOP/s, over 512 at ~130 (source: measured, 2-core Xeon, torch 2.14), a
    product of two features the trees would otherwise need two splits for."""
    c = record.cost
    head = [OP_CODES.get(record.op, -1), list(Phase).index(record.phase), float(mode == "train"),
            math.log2(1 + c.flops), math.log2(1 + c.macs), math.log2(1 + c.bytes_read),
            math.log2(1 + c.bytes_written), float(len(record.shapes)), float(record.channels_last),
            *map(float, channel_remainders(record))]
    dims: list[float] = []
    for shape in list(record.shapes[:N_SHAPES]) + [()] * (N_SHAPES - len(record.shapes[:N_SHAPES])):
        last = list(shape[-N_DIMS:])
        last = [0] * (N_DIMS - len(last)) + last
        dims += [math.log2(1 + d) for d in last] + [math.log2(1 + float(np.prod(shape))) if shape else 0.0]
    conv = [0.0] * 7
    if op_kind(record) in (OpKind.CONV, OpKind.CONV_BACKWARD) and len(record.shapes) >= 2:
        g, per_group, area, stride, out_area = conv_geometry(record)
        batch = record.shapes[0][0] if record.shapes[0] else 1  # conv's input, conv_backward's grad
        conv = [math.log2(g), math.log2(per_group), float(area), float(stride), math.log2(out_area),
                padding_margin(area, out_area, conv_padding(record)),
                math.log2(max(1, batch * out_area))]
    return np.array(head + dims + conv, dtype=float)


PADDED = "@padded"  # source: our choice, the suffix of a padded convolution's regressor key
PADDED_KINDS = (OpKind.CONV, OpKind.CONV_BACKWARD)
REGRESSOR_KEYS = tuple(k.value for k in OpKind) + tuple(k.value + PADDED for k in PADDED_KINDS)
"""Every regressor a model may hold: one per kernel kind, and one per convolution kind for the calls
whose output lies within their padding (:func:`regressor_key`)."""


PADDED_MAX_PER_GROUP = 4  # source: benchmarks/padded_conv.py (2-core Xeon, torch 2.14): below the
# padding, 5x5 and 7x7 convolutions ran at 0.2-1 GFLOP/s depthwise and 2-5 with 4 channels a group
# (30-200x below their rate a pixel further), dense ones at ~50 (~7x below): the conv kind's trees
# learn the dense drop from the padding margin, the thin ones' is beyond any range they saw

SLOW_BACKWARD_AREA = 4  # source: benchmarks/padded_conv.py (2-core Xeon, torch 2.14, batch 32): a
# depthwise 3x3's backward on a 2x2 output ran at 0.8 GFLOP/s from a 2x2 or 3x3 input and 4.4
# from 4x4, against 13 on 3x3 and 19 on 4x4 outputs. Random networks rarely draw it, and the
# ordinary regressor put those of MobileNet-like late stages (768-1536 channels, 2x2 maps) at
# 0.06-0.08 of their time (source: measured, timm's mobilenet_edgetpu_v2_l at 32x32, batch 32)


def regressor_key(record: OpRecord) -> str | None:
    """Which regressor times a call: its kernel kind's, except a k x k depthwise or thinly grouped
    convolution (forward or backward, two groups or more of at most PADDED_MAX_PER_GROUP channels)
    whose output lies within its padding (:func:`padding_margin` below 0; for a backward at 0 too,
    and on an output of at most SLOW_BACKWARD_AREA pixels read with padding, slow there as well):
    oneDNN runs it on another kernel, 3-200x fewer FLOP/s, so it gets a
    regressor of its own (``'conv@padded'``), fitted mostly on the calibration's kernel probes
    (sampling.padded_probes), as nn-Meter gives each kernel implementation its own predictor; None
    without a kind. A dense convolution on a 3-channel image is not thin: a ViT's patch embedding
    on a 32x32 input, taken for one, was predicted 4.8x too slow (source: measured, timm's
    test_vit4); nor is a forward one on a channels-last input, which oneDNN runs on its fast
    kernels (a 7x7 depthwise on a 2x2 map 76-116x faster than on a contiguous one, source:
    benchmarks/padded_conv.py --layouts). Its backward is not: channels-last, a 5x5 or 7x7
    depthwise backward on a 1x1 or 2x2 map took 4.1-5.4 ms, contiguous 3.0-4.3 (256 channels,
    batch 32), and ConvNeXt's, taken for fast ones, were predicted 2.3-4x too fast (source:
    measured, 2-core EPYC, torch 2.14)."""
    kind = op_kind(record)
    if kind is None:
        return None
    if kind in PADDED_KINDS and len(record.shapes) >= 2:
        groups, per_group, area, _, out_area = conv_geometry(record)
        padding = conv_padding(record)
        margin = padding_margin(area, out_area, padding)
        backward = kind is OpKind.CONV_BACKWARD
        slow_backward = backward and (margin <= 0 or (out_area <= SLOW_BACKWARD_AREA and padding != 0))
        if area > 1 and groups > 1 and per_group <= PADDED_MAX_PER_GROUP and \
                (backward or not record.channels_last) and (margin < 0 or slow_backward):
            return kind.value + PADDED
    return kind.value


def key_kind(key: str) -> OpKind:
    """The kernel kind of a regressor key."""
    return OpKind(key.removesuffix(PADDED))


def with_kind(x: np.ndarray, kind: OpKind | None) -> np.ndarray:
    """The fallback regressor's features: the kind's index in place of the operator code."""
    x = x.copy()
    x[:, 0] = list(OpKind).index(kind) if kind is not None else 0
    return x


__all__ = ["N_FEATURES", "OP_CODES", "PADDED", "REGRESSOR_KEYS", "SLOW_BACKWARD_AREA", "VECTOR_CHANNELS",
           "channel_remainders", "conv_geometry", "conv_operands", "conv_padding", "features", "key_kind",
           "op_kind", "padding_margin", "regressor_key", "with_kind"]
