"""What the per-kernel model sees of one operator call: its kernel kind (the formula registry's)
and its shape features -- the operator, its phase, FLOPs, bytes, the shapes it was called with and,
for a convolution, its groups, channels per group, kernel area and stride."""
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


def conv_geometry(record: OpRecord) -> tuple[int, int, int, int]:
    """(groups, input channels per group, kernel area, stride) of a convolution or
    convolution_backward call, from the shapes the counter keeps: (input, weight, ...) forward,
    (grad_output, input, weight) backward; the stride is the ratio of input to output side."""
    if "backward" in record.op and len(record.shapes) >= 3:
        out, x, w = record.shapes[0], record.shapes[1], record.shapes[2]
    else:
        x, w = record.shapes[0], record.shapes[1]
        out = ()
    per_group = w[1] if len(w) > 1 else 1
    groups = max(1, x[1] // per_group) if len(x) > 1 else 1
    area = int(np.prod(w[2:])) if len(w) > 2 else 1
    stride = max(1, round(x[-1] / out[-1])) if out and len(x) > 2 and out[-1] else 0
    return groups, per_group, area, stride


N_SHAPES = 3  # source: our choice; conv backward's (grad_output, input, weight) is the most any kind needs
N_DIMS = 4  # source: NCHW
N_FEATURES = 8 + N_SHAPES * (N_DIMS + 1) + 4  # what features() lists: 8 of the call, each shape's
# N_DIMS sides and size, 4 of a convolution's geometry


def features(record: OpRecord, mode: str) -> np.ndarray:
    """The shape features of one call: operator code, phase, training flag, log2 of FLOPs, MACs,
    bytes read and written, tensor count, each of the first N_SHAPES input shapes' last N_DIMS
    dimensions and element count (log2), and for convolutions groups, channels per group, kernel
    area and stride."""
    c = record.cost
    head = [OP_CODES.get(record.op, -1), list(Phase).index(record.phase), float(mode == "train"),
            math.log2(1 + c.flops), math.log2(1 + c.macs), math.log2(1 + c.bytes_read),
            math.log2(1 + c.bytes_written), float(len(record.shapes))]
    dims: list[float] = []
    for shape in list(record.shapes[:N_SHAPES]) + [()] * (N_SHAPES - len(record.shapes[:N_SHAPES])):
        last = list(shape[-N_DIMS:])
        last = [0] * (N_DIMS - len(last)) + last
        dims += [math.log2(1 + d) for d in last] + [math.log2(1 + float(np.prod(shape))) if shape else 0.0]
    conv = [0.0, 0.0, 0.0, 0.0]
    if op_kind(record) in (OpKind.CONV, OpKind.CONV_BACKWARD) and len(record.shapes) >= 2:
        g, per_group, area, stride = conv_geometry(record)
        conv = [math.log2(g), math.log2(per_group), float(area), float(stride)]
    return np.array(head + dims + conv, dtype=float)


def with_kind(x: np.ndarray, kind: OpKind | None) -> np.ndarray:
    """The fallback regressor's features: the kind's index in place of the operator code."""
    x = x.copy()
    x[:, 0] = list(OpKind).index(kind) if kind is not None else 0
    return x


__all__ = ["N_FEATURES", "OP_CODES", "conv_geometry", "features", "op_kind", "with_kind"]
