"""Operator -> cost formulas: one registry, keyed by aten operator, pure functions of shapes.

Every formula takes the operator's arguments bound to their schema names (tensors replaced by
:class:`TensorSpec`, i.e. shape + dtype only) and its outputs, and returns a :class:`Cost` holding
``macs`` and ``flops``; the counter adds bytes read/written from the same specs. Each formula states
its per-element rule in its docstring; :data:`dnncost.counting.conventions.CONVENTION` states the whole.

Conventions: 1 MAC = 2 FLOPs; MACs only for conv / matmul-family / attention; bias adds are FLOPs.

The registry is :mod:`~dnncost.counting.formulas.registry`; the formula families are
:mod:`~dnncost.counting.formulas.products` (matmul, convolution, attention, recurrent, FFT) and
:mod:`~dnncost.counting.formulas.pointwise` (normalisation, pooling, pointwise, reductions, losses,
optimizer). Importing this package registers every family, so its lookups see them all.
"""
from __future__ import annotations

from dnncost.counting.formulas import pointwise, products  # noqa: F401 -- registers the families
from dnncost.counting.formulas.registry import (
    FORMULAS,
    KINDS,
    VIEW_OPS,
    Args,
    Formula,
    OpKind,
    Outputs,
    TensorSpec,
    formula_for,
    is_view,
    kind_of,
    op_name,
    register_formula,
    tensors_in,
)

__all__ = ["FORMULAS", "KINDS", "VIEW_OPS", "Args", "Formula", "OpKind", "Outputs", "TensorSpec",
           "formula_for", "is_view", "kind_of", "op_name", "register_formula", "tensors_in"]
