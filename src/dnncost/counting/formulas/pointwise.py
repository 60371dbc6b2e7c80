"""Cost formulas of the operators without multiply-accumulates: normalisation, pooling and
upsampling, pointwise operators by their per-element FLOPs, reductions, softmax and losses, and the
optimizer's foreach kernels.
"""
from __future__ import annotations

from math import prod
from typing import Any

from dnncost.counting.cost import Cost
from dnncost.counting.formulas.registry import (
    Args,
    Formula,
    OpKind,
    Outputs,
    aten,
    first_output,
    flop_work,
    numel_of,
    register_formula,
)


# -- upsampling -------------------------------------------------------------------------------
@register_formula(aten.upsample_nearest1d_backward, aten.upsample_nearest2d_backward,
                  aten.upsample_nearest3d_backward, aten._upsample_nearest_exact1d_backward,
                  aten._upsample_nearest_exact2d_backward, aten._upsample_nearest_exact3d_backward,
                  kind=OpKind.POOL_BACKWARD)
def upsample_nearest_backward_cost(a: Args, out: Outputs) -> Cost:
    """Each output-gradient element is added into its source pixel: 1 FLOP per grad_output element."""
    return flop_work(a["grad_output"].numel)


# -- normalisation ----------------------------------------------------------------------------
@register_formula(aten.native_batch_norm, aten._native_batch_norm_legit,
                  aten._native_batch_norm_legit_functional, aten.cudnn_batch_norm,
                  aten.miopen_batch_norm, kind=OpKind.NORM)
def batch_norm_cost(a: Args, out: Outputs) -> Cost:
    """Training (batch statistics): mean 1 + variance 3 + normalise 2 + affine 2 FLOPs per element.
    Evaluation (running statistics): normalise 2 + affine 2 per element."""
    x = a["input"]
    training = bool(a.get("training", True))
    affine = 2 if a.get("weight") is not None else 0
    return flop_work(x.numel * ((4 if training else 0) + 2 + affine))


@register_formula(aten._native_batch_norm_legit_no_training, kind=OpKind.NORM)
def batch_norm_eval_cost(a: Args, out: Outputs) -> Cost:
    """Running statistics: normalise 2 + affine 2 FLOPs per element."""
    affine = 2 if a.get("weight") is not None else 0
    return flop_work(a["input"].numel * (2 + affine))


@register_formula(aten.native_batch_norm_backward, aten.cudnn_batch_norm_backward,
                  aten.miopen_batch_norm_backward, aten.batch_norm_backward, kind=OpKind.NORM_BACKWARD)
def batch_norm_backward_cost(a: Args, out: Outputs) -> Cost:
    """grad_bias 1 (sum dy) + grad_weight 2 (sum dy*xhat) + grad_input 6 FLOPs per element."""
    return flop_work(9 * a["input"].numel)


@register_formula(aten.native_layer_norm, aten.native_group_norm, kind=OpKind.NORM)
def layer_norm_cost(a: Args, out: Outputs) -> Cost:
    """Mean 1 + variance 3 + normalise 2 + affine 2 FLOPs per element (layer and group norm)."""
    affine = 2 if a.get("weight") is not None else 0
    return flop_work(a["input"].numel * (6 + affine))


@register_formula(aten.native_layer_norm_backward, aten.native_group_norm_backward, kind=OpKind.NORM_BACKWARD)
def layer_norm_backward_cost(a: Args, out: Outputs) -> Cost:
    """Like batch norm's backward: 9 FLOPs per element."""
    return flop_work(9 * a["input"].numel)


# -- pooling ----------------------------------------------------------------------------------
@register_formula(aten.max_pool1d_with_indices, aten.max_pool2d_with_indices,
                  aten.max_pool3d_with_indices, aten.max_pool2d, aten.max_pool1d, aten.max_pool3d,
                  aten.mkldnn_max_pool2d, kind=OpKind.POOL)
def max_pool_cost(a: Args, out: Outputs) -> Cost:
    """prod(kernel) - 1 comparisons per output element."""
    return flop_work(first_output(out).numel * (prod(a["kernel_size"]) - 1))


@register_formula(aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d, kind=OpKind.POOL)
def avg_pool_cost(a: Args, out: Outputs) -> Cost:
    """prod(kernel) - 1 adds + 1 divide = prod(kernel) FLOPs per output element."""
    return flop_work(first_output(out).numel * prod(a["kernel_size"]))


@register_formula(aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.adaptive_max_pool2d,
                  aten.adaptive_max_pool3d, aten.adaptive_max_pool1d, kind=OpKind.POOL)
def adaptive_pool_cost(a: Args, out: Outputs) -> Cost:
    """Every input element is added (or compared) once; one divide per output element."""
    return flop_work(a["self"].numel + first_output(out).numel)


@register_formula(aten.max_pool2d_with_indices_backward, aten.max_pool3d_with_indices_backward,
                  aten.avg_pool2d_backward, aten.avg_pool3d_backward,
                  aten._adaptive_avg_pool2d_backward, aten._adaptive_avg_pool3d_backward,
                  aten.adaptive_max_pool2d_backward, aten.adaptive_max_pool3d_backward,
                  kind=OpKind.POOL_BACKWARD)
def pool_backward_cost(a: Args, out: Outputs) -> Cost:
    """Scatter/spread of the output gradient: one add per input-gradient element."""
    return flop_work(first_output(out).numel)


# -- pointwise, by per-element FLOPs ----------------------------------------------------------
def _alpha_flops(a: Args) -> int:
    """One more FLOP per element when an add/sub carries a scale: x + alpha * y."""
    return int(a.get("alpha", 1) not in (1, None))


def _pointwise(flops_per_element: int) -> Formula:
    def cost(a: Args, out: Outputs) -> Cost:
        return flop_work((flops_per_element + _alpha_flops(a)) * numel_of(out))
    cost.__name__ = f"pointwise_{flops_per_element}_cost"
    cost.__doc__ = f"{flops_per_element} FLOP(s) per output element."
    return cost


# source: dnncost's convention -- 1 per add/mul/compare; transcendental functions and their
# compositions count their arithmetic steps (e.g. sigmoid = exp, add, divide, negate = 4).
POINTWISE_FLOPS: dict[int, tuple[Any, ...]] = {
    0: (aten.copy_, aten.clone, aten._to_copy, aten.cat, aten.stack, aten.fill_, aten.zero_,
        aten.zeros, aten.ones, aten.full, aten.zeros_like, aten.ones_like, aten.full_like,
        aten.new_zeros, aten.new_ones, aten.new_full, aten.scalar_tensor, aten.arange,
        aten.constant_pad_nd, aten.reflection_pad2d, aten.replication_pad2d, aten.flip,
        aten.roll, aten.repeat, aten.index, aten.index_select, aten.gather, aten.embedding,
        aten._unsafe_index, aten.upsample_nearest1d, aten.upsample_nearest2d,
        aten.upsample_nearest3d, aten._upsample_nearest_exact1d, aten._upsample_nearest_exact2d,
        aten._upsample_nearest_exact3d, aten._nested_tensor_from_mask, aten.to_padded_tensor,
        aten._nested_tensor_from_mask_left_aligned,
        aten.masked_fill, aten.where, aten.bernoulli_, aten.uniform_,
        aten.normal_, aten.random_, aten.channel_shuffle, aten.native_channel_shuffle,
        aten.pixel_shuffle, aten.pixel_unshuffle, aten.contiguous, aten.lift,
        aten.tril, aten.triu, aten.eq, aten.ne, aten.gt, aten.lt, aten.ge, aten.le,
        aten.logical_not, aten.logical_and, aten.logical_or, aten.sign, aten.slice_backward,
        aten.select_backward, aten.index_put_, aten.index_put, aten.masked_fill_),
    1: (aten.add, aten.add_, aten.sub, aten.sub_, aten.mul, aten.mul_, aten.div, aten.div_,
        aten.rsub, aten.neg, aten.abs, aten.relu, aten.relu_, aten.threshold_backward,
        aten.clamp_min, aten.clamp_min_, aten.clamp_max, aten.maximum, aten.minimum,
        aten.reciprocal, aten.sqrt, aten.rsqrt, aten.exp, aten.log, aten.pow, aten.square,
        aten.threshold, aten.sin, aten.cos, aten.floor, aten.ceil, aten.round,
        aten.embedding_dense_backward, aten.native_dropout_backward, aten.relu6),
    2: (aten.upsample_linear1d, aten.upsample_linear1d_backward,  # one lerp (mul + add) per output
        aten.clamp, aten.clamp_, aten.hardtanh, aten.hardtanh_, aten.hardtanh_backward,
        aten.leaky_relu, aten.leaky_relu_, aten.leaky_relu_backward, aten.addcmul,
        aten.addcmul_, aten.addcdiv, aten.addcdiv_, aten.lerp, aten.lerp_, aten.native_dropout,
        aten.erf, aten.tanh, aten.tanh_, aten.erfinv, aten.prelu),
    3: (aten.sigmoid_backward, aten.tanh_backward, aten.hardsigmoid, aten.hardsigmoid_,
        aten.hardsigmoid_backward, aten.elu, aten.elu_, aten.elu_backward),
    4: (aten.sigmoid, aten.sigmoid_, aten.hardswish, aten.hardswish_, aten.hardswish_backward,
        aten.silu, aten.silu_, aten.mish),
    6: (aten.upsample_bilinear2d, aten.upsample_bilinear2d_backward, aten._upsample_bilinear2d_aa,
        aten._upsample_bilinear2d_aa_backward, aten.silu_backward, aten.mish_backward),  # 3 lerps
    8: (aten.gelu, aten.gelu_, aten.upsample_bicubic2d, aten.upsample_bicubic2d_backward,
        aten._upsample_bicubic2d_aa),
    14: (aten.upsample_trilinear3d, aten.upsample_trilinear3d_backward),  # 7 lerps
    12: (aten.gelu_backward,),
}
RANDOM_OPS: frozenset[Any] = frozenset({aten.bernoulli_, aten.uniform_, aten.normal_, aten.random_})
"""Pointwise operators that draw random numbers (OpKind.RANDOM); the others move (0 FLOPs) or compute."""
for _k, _ops in POINTWISE_FLOPS.items():
    register_formula(*(o for o in _ops if o not in RANDOM_OPS),
                     kind=OpKind.ELEMENTWISE if _k else OpKind.COPY)(_pointwise(_k))
register_formula(*RANDOM_OPS, kind=OpKind.RANDOM)(_pointwise(0))


@register_formula(aten.index_add, aten.index_add_, aten.scatter_add, aten.scatter_add_,
                  kind=OpKind.ELEMENTWISE)
def index_add_cost(a: Args, out: Outputs) -> Cost:
    """One add per element of ``source`` / ``src`` (e.g. the backward of index_select)."""
    return flop_work(numel_of(a.get("source", a.get("src"))))


# -- reductions, softmax, losses --------------------------------------------------------------
@register_formula(aten.sum, aten.mean, aten.amax, aten.amin, aten.max, aten.min, aten.argmax,
                  aten.argmin, aten.norm, aten.linalg_vector_norm, aten.var, aten.std, aten.prod,
                  aten.logsumexp, aten.any, aten.all, aten.var_mean, aten.std_mean, aten.cumsum,
                  kind=OpKind.REDUCTION)
def reduction_cost(a: Args, out: Outputs) -> Cost:
    """One FLOP per input element."""
    return flop_work(a["self"].numel if "self" in a else numel_of(a.get("input")))


@register_formula(aten._softmax, aten._log_softmax, aten._safe_softmax, kind=OpKind.SOFTMAX)
def softmax_cost(a: Args, out: Outputs) -> Cost:
    """max 1 + subtract 1 + exp 1 + sum 1 + divide (or log) 1 = 5 FLOPs per element."""
    return flop_work(5 * a["self"].numel)


@register_formula(aten._softmax_backward_data, aten._log_softmax_backward_data, kind=OpKind.SOFTMAX)
def softmax_backward_cost(a: Args, out: Outputs) -> Cost:
    """dy*y, its sum, subtract, multiply: 4 FLOPs per element."""
    return flop_work(4 * a["grad_output"].numel)


@register_formula(aten.nll_loss_forward, aten.nll_loss2d_forward, aten.nll_loss_backward,
                  aten.nll_loss2d_backward, kind=OpKind.SOFTMAX)
def nll_loss_cost(a: Args, out: Outputs) -> Cost:
    """Gather one log-probability per target and average: 2 FLOPs per target (negated gather/add)."""
    return flop_work(2 * a["target"].numel)


@register_formula(aten.mse_loss, aten.mse_loss_backward, aten.binary_cross_entropy_with_logits,
                  aten.smooth_l1_loss, aten.l1_loss, aten.binary_cross_entropy, kind=OpKind.SOFTMAX)
def elementwise_loss_cost(a: Args, out: Outputs) -> Cost:
    """Difference, square (or log terms) and mean: 3 FLOPs per input element."""
    return flop_work(3 * a["self"].numel if "self" in a else 3 * numel_of(a["input"]))


# -- optimizer (foreach kernels that torch.optim uses by default) ------------------------------
def _foreach(flops_per_element: int) -> Formula:
    def cost(a: Args, out: Outputs) -> Cost:
        return flop_work((flops_per_element + _alpha_flops(a)) * numel_of(a["self"]))
    cost.__name__ = f"foreach_{flops_per_element}_cost"
    cost.__doc__ = f"{flops_per_element} FLOP(s) per element of every tensor in the list."
    return cost


# source: an alpha-scaled add (x + alpha*y) is 2 FLOPs, as is addcmul/addcdiv (x + v*y*z) = 3.
FOREACH_FLOPS: dict[int, tuple[Any, ...]] = {
    0: (aten._foreach_copy_, aten._foreach_zero_),
    1: (aten._foreach_mul, aten._foreach_mul_, aten._foreach_div, aten._foreach_div_,
        aten._foreach_sqrt, aten._foreach_sqrt_, aten._foreach_neg, aten._foreach_neg_,
        aten._foreach_maximum_, aten._foreach_sign, aten._foreach_reciprocal_,
        aten._foreach_add, aten._foreach_add_, aten._foreach_sub, aten._foreach_sub_),
    2: (aten._foreach_lerp_, aten._foreach_pow),
    3: (aten._foreach_addcmul_, aten._foreach_addcdiv_, aten._foreach_addcmul,
        aten._foreach_addcdiv),
}
for _k, _ops in FOREACH_FLOPS.items():
    register_formula(*_ops, kind=OpKind.OPTIMIZER)(_foreach(_k))
