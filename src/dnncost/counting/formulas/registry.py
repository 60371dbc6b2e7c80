"""The one registry of operator cost formulas, keyed by aten operator: what a formula may know of a
tensor (:class:`TensorSpec`, shape and dtype), the kernel classes (:class:`OpKind`), the decorator
that fills the registry and raises on a duplicate (:func:`register_formula`), the lookups the
counter and the predictor use, and the small helpers every formula family shares.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from math import prod
from typing import Any

import torch

from dnncost.counting.cost import Cost

aten = torch.ops.aten

@dataclass(frozen=True)
class TensorSpec:
    """What a formula may know of a tensor: its shape and dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorSpec:
        return cls(tuple(int(s) for s in tensor.shape), tensor.dtype)


Args = Mapping[str, Any]
Outputs = Sequence[Any]
Formula = Callable[[Args, Outputs], Cost]


class OpKind(str, Enum):
    """What kind of kernel an operator is: the class the time predictor (dnncost.prediction)
    learns a regressor for. Every formula states it, so a new formula is never unclassified."""

    CONV = "conv"
    CONV_BACKWARD = "conv_backward"
    MATMUL = "matmul"
    ATTENTION = "attention"
    ATTENTION_BACKWARD = "attention_backward"
    NORM = "norm"  # batch (training or running statistics), layer and group normalisation
    NORM_BACKWARD = "norm_backward"
    POOL = "pool"
    POOL_BACKWARD = "pool_backward"
    ELEMENTWISE = "elementwise"  # arithmetic per element: activations, adds, their gradients
    COPY = "copy"  # data movement without arithmetic: cat, pad, clone, fills, index
    RANDOM = "random"  # random number generation (dropout masks)
    REDUCTION = "reduction"
    SOFTMAX = "softmax"  # softmax / log-softmax, their backward, the losses on them
    OPTIMIZER = "optimizer"  # the foreach kernels of torch.optim


FORMULAS: dict[Any, Formula] = {}
"""aten OpOverloadPacket -> formula. Filled only through :func:`register_formula`."""

KINDS: dict[str, OpKind] = {}
"""'aten.<name>' (as the counter's records name operators) -> its OpKind. Filled with FORMULAS."""

VIEW_OPS: frozenset[Any] = frozenset({
    aten.view, aten._unsafe_view, aten._reshape_alias, aten.reshape, aten.t, aten.transpose,
    aten.permute, aten.expand, aten.squeeze, aten.unsqueeze, aten.detach, aten.alias,
    aten.as_strided, aten.as_strided_, aten.slice, aten.select, aten.split, aten.split_with_sizes,
    aten.unbind,
    aten.chunk, aten.narrow, aten.lift_fresh, aten.empty, aten.empty_like, aten.empty_strided,
    aten.new_empty, aten.new_empty_strided, aten.set_, aten.resize_, aten.is_same_size,
    aten._local_scalar_dense, aten.view_as, aten.numpy_T, aten.movedim, aten.unfold,
    aten.diagonal, aten.expand_as, aten.flatten, aten.unflatten, aten.is_nonzero,
    aten.sym_size, aten.sym_stride, aten.sym_numel, aten.sym_storage_offset, aten.lift_fresh_copy,
    aten.unsafe_split, aten.unsafe_split_with_sizes, aten.unsafe_chunk, aten.transpose_, aten.t_,
    aten.squeeze_, aten.unsqueeze_, aten.detach_, aten.swapaxes, aten.swapdims, aten.view_as_real,
    aten.view_as_complex, aten._neg_view, aten._conj, aten.resolve_conj, aten.resolve_neg,
    aten._nested_tensor_size, aten._nested_tensor_strides, aten._nested_tensor_storage_offsets,
    torch.ops.profiler._record_function_enter_new, torch.ops.profiler._record_function_exit,
    torch.ops.profiler._record_function_enter,
})
"""Operators that only change metadata or allocate: no arithmetic, no memory traffic.
(``unsafe_split``/``unsafe_chunk`` are split's views without the aliasing check, used by RNN cells;
``transpose_`` and friends change strides in place.)"""


def register_formula(*ops: Any, kind: OpKind) -> Callable[[Formula], Formula]:
    """Register ``fn`` as the formula of each aten op (packet or overload), of kernel ``kind``;
    raise on a duplicate.

    A formula is a pure function of the op's arguments, bound to their schema names with tensors
    replaced by :class:`TensorSpec` (shape + dtype), and of its outputs; it returns a ``Cost`` with
    macs and flops (the counter adds the bytes). For a custom op ``mylib::gemm(Tensor a, Tensor b)``::

        @register_formula(torch.ops.mylib.gemm, kind=OpKind.MATMUL)
        def gemm_cost(a, out):
            m, k = a["a"].shape
            n = a["b"].shape[-1]
            return Cost(macs=m * k * n, flops=2 * m * k * n)
    """
    kind = OpKind(kind)

    def decorator(fn: Formula) -> Formula:
        for op in ops:
            packet = getattr(op, "overloadpacket", op)
            if packet in FORMULAS or packet in VIEW_OPS:
                raise ValueError(f"a cost formula for {packet} is already registered")
            FORMULAS[packet] = fn
            KINDS[op_name(packet)] = kind
        return fn
    return decorator


def op_name(op: Any) -> str:
    """'aten.<name>' of an aten op (overload or packet), as the counter's records name it."""
    return str(getattr(op, "overloadpacket", op)).replace("aten::", "aten.")


def kind_of(name: str) -> OpKind | None:
    """The OpKind of an operator named 'aten.<name>', or None when it has no formula."""
    return KINDS.get(name)


def formula_for(op: Any) -> Formula | None:
    """The formula registered for an aten op (overload or packet), or None."""
    return FORMULAS.get(getattr(op, "overloadpacket", op))


def is_view(op: Any) -> bool:
    """True for metadata-only operators (views, allocations)."""
    return getattr(op, "overloadpacket", op) in VIEW_OPS


# -- helpers ----------------------------------------------------------------------------------
def tensors_in(value: Any) -> list[TensorSpec]:
    """Every TensorSpec inside a (nested) argument or output."""
    if isinstance(value, TensorSpec):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


def numel_of(value: Any) -> int:
    """Elements of every tensor inside a (nested) argument or output."""
    return sum(t.numel for t in tensors_in(value))


def first_output(out: Outputs) -> TensorSpec:
    """The first tensor among an operator's outputs."""
    return tensors_in(out)[0]


def mac_work(macs: int, extra_flops: int = 0) -> Cost:
    """Cost of work with ``macs`` multiply-accumulates plus ``extra_flops`` other operations."""
    return Cost(macs=macs, flops=2 * macs + extra_flops)


def flop_work(flops: int) -> Cost:
    """Cost of work with ``flops`` operations and no multiply-accumulates."""
    return Cost(flops=flops)


__all__ = ["FORMULAS", "KINDS", "VIEW_OPS", "Args", "Formula", "OpKind", "Outputs", "TensorSpec", "aten",
           "first_output", "flop_work", "formula_for", "is_view", "kind_of", "mac_work", "numel_of",
           "op_name", "register_formula", "tensors_in"]
