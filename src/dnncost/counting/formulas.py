"""Operator -> cost formulas: one registry, keyed by aten operator, pure functions of shapes.

Every formula takes the operator's arguments bound to their schema names (tensors replaced by
:class:`TensorSpec`, i.e. shape + dtype only) and its outputs, and returns a :class:`Cost` holding
``macs`` and ``flops``; the counter adds bytes read/written from the same specs. Each formula states
its per-element rule in its docstring; :data:`dnncost.counting.conventions.CONVENTION` states the whole.

Conventions: 1 MAC = 2 FLOPs; MACs only for conv / matmul-family / attention; bias adds are FLOPs.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from math import log2, prod
from typing import Any

import torch
from torch.utils.flop_counter import conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

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


def _numel(value: Any) -> int:
    return sum(t.numel for t in tensors_in(value))


def _first(out: Outputs) -> TensorSpec:
    return tensors_in(out)[0]


def _macs(macs: int, extra_flops: int = 0) -> Cost:
    """Cost of work with ``macs`` multiply-accumulates plus ``extra_flops`` other operations."""
    return Cost(macs=macs, flops=2 * macs + extra_flops)


def _flops(flops: int) -> Cost:
    return Cost(flops=flops)


# -- matrix products --------------------------------------------------------------------------
@register_formula(aten.mm, kind=OpKind.MATMUL)
def mm_cost(a: Args, out: Outputs) -> Cost:
    """(m, k) @ (k, n): m*k*n MACs."""
    m, k = a["self"].shape
    n = a["mat2"].shape[-1]
    return _macs(m * k * n)


@register_formula(aten.addmm, kind=OpKind.MATMUL)
def addmm_cost(a: Args, out: Outputs) -> Cost:
    """bias + (m, k) @ (k, n): m*k*n MACs, plus m*n FLOPs for the bias add."""
    m, k = a["mat1"].shape
    n = a["mat2"].shape[-1]
    return _macs(m * k * n, m * n)


@register_formula(aten.bmm, kind=OpKind.MATMUL)
def bmm_cost(a: Args, out: Outputs) -> Cost:
    """(b, m, k) @ (b, k, n): b*m*k*n MACs."""
    b, m, k = a["self"].shape
    n = a["mat2"].shape[-1]
    return _macs(b * m * k * n)


@register_formula(aten.baddbmm, kind=OpKind.MATMUL)
def baddbmm_cost(a: Args, out: Outputs) -> Cost:
    """input + (b, m, k) @ (b, k, n): b*m*k*n MACs plus b*m*n FLOPs for the add."""
    b, m, k = a["batch1"].shape
    n = a["batch2"].shape[-1]
    return _macs(b * m * k * n, b * m * n)


@register_formula(aten.dot, aten.vdot, kind=OpKind.MATMUL)
def dot_cost(a: Args, out: Outputs) -> Cost:
    """Dot product of two n-vectors: n MACs."""
    return _macs(a["self"].numel)


@register_formula(aten.mv, kind=OpKind.MATMUL)
def mv_cost(a: Args, out: Outputs) -> Cost:
    """(m, n) @ (n,): m*n MACs."""
    return _macs(a["self"].numel)


# -- convolution ------------------------------------------------------------------------------
def _conv_macs(x: TensorSpec, w: TensorSpec, y: TensorSpec, transposed: bool) -> int:
    # torch's conv_flop_count is 2 * N * prod(spatial) * Cout * (Cin/groups) * prod(kernel): the
    # weight's second dim already is Cin/groups, so grouped and depthwise convs come out right.
    return conv_flop_count(list(x.shape), list(w.shape), list(y.shape), transposed=transposed) // 2


@register_formula(aten.convolution, aten._convolution, aten.convolution_overrideable,
                  aten.cudnn_convolution, aten.mkldnn_convolution, aten._slow_conv2d_forward,
                  aten.cudnn_convolution_transpose, kind=OpKind.CONV)
def conv_cost(a: Args, out: Outputs) -> Cost:
    """N * Cout * prod(out spatial) * (Cin/groups) * prod(kernel) MACs (transposed: input spatial);
    plus one FLOP per output element for the bias."""
    x, w, y = a["input"] if "input" in a else a["self"], a["weight"], _first(out)
    transposed = bool(a.get("transposed", False))
    bias = y.numel if a.get("bias") is not None else 0
    return _macs(_conv_macs(x, w, y, transposed), bias)


@register_formula(aten.convolution_backward, kind=OpKind.CONV_BACKWARD)
def conv_backward_cost(a: Args, out: Outputs) -> Cost:
    """grad_input and grad_weight each cost exactly the forward's MACs, for any ``groups``
    (torch's own backward formula ignores groups); grad_bias is one add per grad_output element.
    Only the gradients in ``output_mask`` are counted."""
    grad_out, x, w = a["grad_output"], a["input"], a["weight"]
    mask = a["output_mask"]
    fwd = _conv_macs(x, w, grad_out, bool(a["transposed"]))
    macs = fwd * (int(bool(mask[0])) + int(bool(mask[1])))
    return _macs(macs, grad_out.numel if mask[2] else 0)


# -- attention --------------------------------------------------------------------------------
@register_formula(aten._scaled_dot_product_flash_attention_for_cpu,
                  aten._scaled_dot_product_efficient_attention,
                  aten._scaled_dot_product_flash_attention,
                  aten._scaled_dot_product_cudnn_attention, kind=OpKind.ATTENTION)
def sdpa_cost(a: Args, out: Outputs) -> Cost:
    """QK^T and AV: 2 * B*H*Sq*Sk*D MACs; softmax 5 FLOPs per score (max, sub, exp, sum, div)."""
    q, k, v = a["query"], a["key"], a["value"]
    macs = sdpa_flop_count(q.shape, k.shape, v.shape) // 2
    b, h, sq, _ = q.shape
    return _macs(macs, 5 * b * h * sq * k.shape[-2])


@register_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward,
                  aten._scaled_dot_product_efficient_attention_backward,
                  aten._scaled_dot_product_flash_attention_backward,
                  aten._scaled_dot_product_cudnn_attention_backward, kind=OpKind.ATTENTION_BACKWARD)
def sdpa_backward_cost(a: Args, out: Outputs) -> Cost:
    """Recompute QK^T, then dV, dP, dQ, dK: 5 * B*H*Sq*Sk*D MACs; softmax backward 4 per score."""
    q, k, v, g = a["query"], a["key"], a["value"], a["grad_out"]
    macs = sdpa_backward_flop_count(g.shape, q.shape, k.shape, v.shape) // 2
    b, h, sq, _ = q.shape
    return _macs(macs, 4 * b * h * sq * k.shape[-2])


@register_formula(aten._native_multi_head_attention, kind=OpKind.ATTENTION)
def native_mha_cost(a: Args, out: Outputs) -> Cost:
    """The fused fast path of nn.MultiheadAttention (eval, no_grad, real CPU/CUDA tensors):
    in-projection L*E*E (q) + 2*S*E*E (k, v), QK^T and AV 2*L*S*E, out-projection L*E*E MACs per
    batch item; bias adds 3 per projected element, softmax 5 per score."""
    q, k = a["query"], a["key"]
    bsz, tgt, emb = q.shape
    src = k.shape[1]
    heads = int(a["num_head"])
    macs = bsz * (tgt * emb * emb + 2 * src * emb * emb + 2 * tgt * src * emb + tgt * emb * emb)
    extra = bsz * (tgt * emb + 2 * src * emb + tgt * emb) + 5 * bsz * heads * tgt * src
    return _macs(macs, extra)


@register_formula(aten._transformer_encoder_layer_fwd, kind=OpKind.MATMUL)
def transformer_encoder_layer_cost(a: Args, out: Outputs) -> Cost:
    """The fused fast path of nn.TransformerEncoderLayer (eval, no_grad, real CPU/CUDA tensors), the
    same arithmetic as its decomposed path, with N = B*S tokens, E = embed dim, F = feed-forward dim:
    MACs: qkv projection 3*N*E*E + QK^T and AV 2*B*S*S*E + out projection N*E*E + feed-forward
    2*N*E*F. FLOPs besides 2 x MACs: bias adds (3E + E + F + E per token), query/key scaling 2*N*E,
    softmax 5 per score (B*H*S*S), two layer norms 8 per element, activation per feed-forward element
    (ReLU 1, GELU 8), two residual adds N*E each."""
    x = a["src"]
    bsz, seq, emb = x.shape
    heads, ffn = int(a["num_heads"]), a["ffn_weight_1"].shape[0]
    tokens = bsz * seq
    macs = 3 * tokens * emb * emb + 2 * bsz * seq * seq * emb + tokens * emb * emb + 2 * tokens * emb * ffn
    extra = (tokens * (5 * emb + ffn)  # bias adds: qkv 3E, out E, ffn F and E
             + 2 * tokens * emb  # scaling q and k by d**-0.25 each
             + 5 * bsz * heads * seq * seq  # softmax
             + 2 * 8 * tokens * emb  # two affine layer norms
             + (8 if a["use_gelu"] else 1) * tokens * ffn  # activation
             + 2 * tokens * emb)  # residual adds
    return _macs(macs, extra)


# -- recurrent layers -------------------------------------------------------------------------
# source: the per-hidden-unit pointwise FLOPs of one time step of the decomposed cells in
# torch/nn/modules/rnn.py and aten/src/ATen/native/RNN.cpp, at this module's per-element rules:
# LSTM: sum of input and hidden gates 4 + sigmoid x3 (4 each) 12 + tanh(g) 2 + c = f*c + i*g 3
#       + tanh(c) 2 + h = o*tanh(c) 1 = 24;
# GRU:  sum of r, z gates 2 + sigmoid x2 8 + r*h_n 1 + i_n + r*h_n 1 + tanh 2 + h - n 1
#       + z*(h - n) 1 + n + ... 1 = 17;  RNN_TANH: sum 1 + tanh 2 = 3;  RNN_RELU: sum 1 + relu 1 = 2.
RNN_CELL_FLOPS = {4: 24, 3: 17, "tanh": 3, "relu": 2}
RNN_RELU_MODE = 0  # source: aten/src/ATen/native/cudnn/RNN.cpp (RNN_RELU=0, RNN_TANH=1, LSTM=2, GRU=3)


def _rnn_layer(a: Args, *, w_ih: str, w_hh: str) -> tuple[int, int]:
    """(MACs, other FLOPs) of one RNN layer over a whole sequence (one direction)."""
    x = a["input"]
    hidden = int(a["hidden_size"])
    gates = a[w_ih].shape[0] // hidden  # 4 LSTM, 3 GRU, 1 plain RNN
    seq, bsz = (x.shape[1], x.shape[0]) if a["batch_first"] else (x.shape[0], x.shape[1])
    steps = seq * bsz
    macs = steps * gates * hidden * (a[w_ih].shape[1] + a[w_hh].shape[1])
    cell = RNN_CELL_FLOPS.get(gates, 0) if gates > 1 else \
        RNN_CELL_FLOPS["relu" if a["mode"] == RNN_RELU_MODE else "tanh"]
    bias = 2 * gates * hidden if a["has_biases"] else 0  # b_ih and b_hh added to the gates
    return macs, steps * (cell * hidden + bias)


@register_formula(aten.mkldnn_rnn_layer, kind=OpKind.MATMUL)
def mkldnn_rnn_layer_cost(a: Args, out: Outputs) -> Cost:
    """One layer, one direction of a oneDNN LSTM/GRU/RNN on CPU: per time step and batch item
    G*H*(I + H) MACs (G gates of H units from the I-dim input and the H-dim hidden state); plus
    bias adds 2*G*H and the cell's pointwise FLOPs (:data:`RNN_CELL_FLOPS`, same as the decomposed
    cell on the meta device)."""
    macs, extra = _rnn_layer(a, w_ih="weight0", w_hh="weight1")
    return _macs(macs, extra)


@register_formula(aten.mkldnn_rnn_layer_backward, kind=OpKind.MATMUL)
def mkldnn_rnn_layer_backward_cost(a: Args, out: Outputs) -> Cost:
    """Backward of one oneDNN RNN layer: gradients of input and hidden state, and of both weight
    matrices, each as many MACs as the forward's product: 2 x forward MACs; the cell's pointwise
    backward at twice its forward FLOPs."""
    macs, extra = _rnn_layer(a, w_ih="weight1", w_hh="weight2")
    return _macs(2 * macs, 2 * extra)


@register_formula(aten._thnn_fused_lstm_cell, aten._thnn_fused_gru_cell, kind=OpKind.ELEMENTWISE)
def fused_rnn_cell_cost(a: Args, out: Outputs) -> Cost:
    """The pointwise part of one LSTM/GRU time step on CUDA (the gate products are separate mm's):
    bias adds 2 per gate element when given + the cell's per-unit FLOPs (:data:`RNN_CELL_FLOPS`)."""
    gates_x = a["input_gates"]  # (B, G*H)
    state = a["cx"] if "cx" in a else a["hx"]  # (B, H)
    gates = gates_x.shape[-1] // state.shape[-1]
    bias = 2 * gates_x.numel if a.get("input_bias") is not None else 0
    return _flops(bias + RNN_CELL_FLOPS[gates] * state.numel)


@register_formula(aten._thnn_fused_lstm_cell_backward_impl, aten._thnn_fused_gru_cell_backward,
                  kind=OpKind.ELEMENTWISE)
def fused_rnn_cell_backward_cost(a: Args, out: Outputs) -> Cost:
    """Pointwise backward of one fused cell: twice the forward's cell FLOPs per gate element."""
    return _flops(2 * _numel(out[0]))


def _rnn_stack(a: Args) -> tuple[int, int]:
    """(MACs, other FLOPs) of a whole cuDNN/MIOpen RNN: every layer and direction, each a chunk of
    ``weight_stride0`` tensors (w_ih, w_hh, [b_ih, b_hh], [w_hr]) in ``weight``."""
    x, hidden = a["input"], int(a["hidden_size"])
    packed = len(x.shape) == 2  # a PackedSequence's data: (sum of lengths, features)
    steps = x.shape[0] if packed else x.shape[0] * x.shape[1]  # time steps x batch items
    weights, stride = list(a["weight"]), int(a["weight_stride0"])
    macs = extra = 0
    for start in range(0, len(weights), stride):
        chunk = weights[start:start + stride]
        gates = chunk[0].shape[0] // hidden  # 4 LSTM, 3 GRU, 1 plain RNN
        cell = RNN_CELL_FLOPS[gates] if gates > 1 else \
            RNN_CELL_FLOPS["relu" if a["mode"] == RNN_RELU_MODE else "tanh"]
        macs += steps * sum(w.numel for w in chunk if len(w.shape) == 2)  # w_ih, w_hh, w_hr
        bias = 2 * gates * hidden if any(len(w.shape) == 1 for w in chunk) else 0
        extra += steps * (cell * hidden + bias)
    return macs, extra


@register_formula(aten._cudnn_rnn, aten.miopen_rnn, kind=OpKind.MATMUL)
def cudnn_rnn_cost(a: Args, out: Outputs) -> Cost:
    """A whole LSTM/GRU/RNN in one cuDNN (or MIOpen) call: per time step, batch item, layer and
    direction, the products with w_ih (G*H x I), w_hh (G*H x H) and a projection w_hr when present
    -- each matrix's elements in MACs -- plus bias adds 2*G*H and the cell's pointwise FLOPs
    (:data:`RNN_CELL_FLOPS`), as for the oneDNN layer."""
    macs, extra = _rnn_stack(a)
    return _macs(macs, extra)


@register_formula(aten._cudnn_rnn_backward, aten.miopen_rnn_backward, kind=OpKind.MATMUL)
def cudnn_rnn_backward_cost(a: Args, out: Outputs) -> Cost:
    """Backward of a cuDNN RNN: gradients of inputs/states and of the weights, each the forward's
    MACs (2 x forward); the cell's pointwise backward at twice its forward FLOPs."""
    macs, extra = _rnn_stack(a)
    return _macs(2 * macs, 2 * extra)


# -- FFT --------------------------------------------------------------------------------------
def _fft_cost(signal: TensorSpec, dims: Sequence[int], per_n_log_n: float) -> Cost:
    """``per_n_log_n`` * N * log2(N) FLOPs per transformed signal of N points along ``dims``."""
    n = prod(signal.shape[d] for d in dims)
    if n <= 1:
        return Cost()
    return _flops(int(per_n_log_n * n * log2(n) * (signal.numel // n)))


# source: the radix-2 Cooley-Tukey count FFTW's benchmarks report as "mflops": 5 N log2 N for a
# complex transform, half of it for a real one (benchFFT methodology, fftw.org/speed/method.html).
FFT_COMPLEX_FLOPS = 5.0
FFT_REAL_FLOPS = 2.5


@register_formula(aten._fft_c2c, kind=OpKind.MATMUL)  # a fast dense transform
def fft_c2c_cost(a: Args, out: Outputs) -> Cost:
    """Complex FFT: 5 N log2 N FLOPs per transformed signal."""
    return _fft_cost(a["self"], a["dim"], FFT_COMPLEX_FLOPS)


@register_formula(aten._fft_r2c, kind=OpKind.MATMUL)
def fft_r2c_cost(a: Args, out: Outputs) -> Cost:
    """Real-to-complex FFT: 2.5 N log2 N FLOPs per transformed signal (N: the real input's size)."""
    return _fft_cost(a["self"], a["dim"], FFT_REAL_FLOPS)


@register_formula(aten._fft_c2r, kind=OpKind.MATMUL)
def fft_c2r_cost(a: Args, out: Outputs) -> Cost:
    """Complex-to-real FFT: 2.5 N log2 N FLOPs per transformed signal (N: the real output's size)."""
    return _fft_cost(_first(out), a["dim"], FFT_REAL_FLOPS)


# -- upsampling -------------------------------------------------------------------------------
@register_formula(aten.upsample_nearest1d_backward, aten.upsample_nearest2d_backward,
                  aten.upsample_nearest3d_backward, aten._upsample_nearest_exact1d_backward,
                  aten._upsample_nearest_exact2d_backward, aten._upsample_nearest_exact3d_backward,
                  kind=OpKind.POOL_BACKWARD)
def upsample_nearest_backward_cost(a: Args, out: Outputs) -> Cost:
    """Each output-gradient element is added into its source pixel: 1 FLOP per grad_output element."""
    return _flops(a["grad_output"].numel)


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
    return _flops(x.numel * ((4 if training else 0) + 2 + affine))


@register_formula(aten._native_batch_norm_legit_no_training, kind=OpKind.NORM)
def batch_norm_eval_cost(a: Args, out: Outputs) -> Cost:
    """Running statistics: normalise 2 + affine 2 FLOPs per element."""
    affine = 2 if a.get("weight") is not None else 0
    return _flops(a["input"].numel * (2 + affine))


@register_formula(aten.native_batch_norm_backward, aten.cudnn_batch_norm_backward,
                  aten.miopen_batch_norm_backward, aten.batch_norm_backward, kind=OpKind.NORM_BACKWARD)
def batch_norm_backward_cost(a: Args, out: Outputs) -> Cost:
    """grad_bias 1 (sum dy) + grad_weight 2 (sum dy*xhat) + grad_input 6 FLOPs per element."""
    return _flops(9 * a["input"].numel)


@register_formula(aten.native_layer_norm, aten.native_group_norm, kind=OpKind.NORM)
def layer_norm_cost(a: Args, out: Outputs) -> Cost:
    """Mean 1 + variance 3 + normalise 2 + affine 2 FLOPs per element (layer and group norm)."""
    affine = 2 if a.get("weight") is not None else 0
    return _flops(a["input"].numel * (6 + affine))


@register_formula(aten.native_layer_norm_backward, aten.native_group_norm_backward, kind=OpKind.NORM_BACKWARD)
def layer_norm_backward_cost(a: Args, out: Outputs) -> Cost:
    """Like batch norm's backward: 9 FLOPs per element."""
    return _flops(9 * a["input"].numel)


# -- pooling ----------------------------------------------------------------------------------
@register_formula(aten.max_pool1d_with_indices, aten.max_pool2d_with_indices,
                  aten.max_pool3d_with_indices, aten.max_pool2d, aten.max_pool1d, aten.max_pool3d,
                  aten.mkldnn_max_pool2d, kind=OpKind.POOL)
def max_pool_cost(a: Args, out: Outputs) -> Cost:
    """prod(kernel) - 1 comparisons per output element."""
    return _flops(_first(out).numel * (prod(a["kernel_size"]) - 1))


@register_formula(aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d, kind=OpKind.POOL)
def avg_pool_cost(a: Args, out: Outputs) -> Cost:
    """prod(kernel) - 1 adds + 1 divide = prod(kernel) FLOPs per output element."""
    return _flops(_first(out).numel * prod(a["kernel_size"]))


@register_formula(aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d, aten.adaptive_max_pool2d,
                  aten.adaptive_max_pool3d, aten.adaptive_max_pool1d, kind=OpKind.POOL)
def adaptive_pool_cost(a: Args, out: Outputs) -> Cost:
    """Every input element is added (or compared) once; one divide per output element."""
    return _flops(a["self"].numel + _first(out).numel)


@register_formula(aten.max_pool2d_with_indices_backward, aten.max_pool3d_with_indices_backward,
                  aten.avg_pool2d_backward, aten.avg_pool3d_backward,
                  aten._adaptive_avg_pool2d_backward, aten._adaptive_avg_pool3d_backward,
                  aten.adaptive_max_pool2d_backward, aten.adaptive_max_pool3d_backward,
                  kind=OpKind.POOL_BACKWARD)
def pool_backward_cost(a: Args, out: Outputs) -> Cost:
    """Scatter/spread of the output gradient: one add per input-gradient element."""
    return _flops(_first(out).numel)


# -- pointwise, by per-element FLOPs ----------------------------------------------------------
def _alpha_flops(a: Args) -> int:
    """One more FLOP per element when an add/sub carries a scale: x + alpha * y."""
    return int(a.get("alpha", 1) not in (1, None))


def _pointwise(flops_per_element: int) -> Formula:
    def cost(a: Args, out: Outputs) -> Cost:
        return _flops((flops_per_element + _alpha_flops(a)) * _numel(out))
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
    return _flops(_numel(a.get("source", a.get("src"))))


# -- reductions, softmax, losses --------------------------------------------------------------
@register_formula(aten.sum, aten.mean, aten.amax, aten.amin, aten.max, aten.min, aten.argmax,
                  aten.argmin, aten.norm, aten.linalg_vector_norm, aten.var, aten.std, aten.prod,
                  aten.logsumexp, aten.any, aten.all, aten.var_mean, aten.std_mean, aten.cumsum,
                  kind=OpKind.REDUCTION)
def reduction_cost(a: Args, out: Outputs) -> Cost:
    """One FLOP per input element."""
    return _flops(a["self"].numel if "self" in a else _numel(a.get("input")))


@register_formula(aten._softmax, aten._log_softmax, aten._safe_softmax, kind=OpKind.SOFTMAX)
def softmax_cost(a: Args, out: Outputs) -> Cost:
    """max 1 + subtract 1 + exp 1 + sum 1 + divide (or log) 1 = 5 FLOPs per element."""
    return _flops(5 * a["self"].numel)


@register_formula(aten._softmax_backward_data, aten._log_softmax_backward_data, kind=OpKind.SOFTMAX)
def softmax_backward_cost(a: Args, out: Outputs) -> Cost:
    """dy*y, its sum, subtract, multiply: 4 FLOPs per element."""
    return _flops(4 * a["grad_output"].numel)


@register_formula(aten.nll_loss_forward, aten.nll_loss2d_forward, aten.nll_loss_backward,
                  aten.nll_loss2d_backward, kind=OpKind.SOFTMAX)
def nll_loss_cost(a: Args, out: Outputs) -> Cost:
    """Gather one log-probability per target and average: 2 FLOPs per target (negated gather/add)."""
    return _flops(2 * a["target"].numel)


@register_formula(aten.mse_loss, aten.mse_loss_backward, aten.binary_cross_entropy_with_logits,
                  aten.smooth_l1_loss, aten.l1_loss, aten.binary_cross_entropy, kind=OpKind.SOFTMAX)
def elementwise_loss_cost(a: Args, out: Outputs) -> Cost:
    """Difference, square (or log terms) and mean: 3 FLOPs per input element."""
    return _flops(3 * a["self"].numel if "self" in a else 3 * _numel(a["input"]))


# -- optimizer (foreach kernels that torch.optim uses by default) ------------------------------
def _foreach(flops_per_element: int) -> Formula:
    def cost(a: Args, out: Outputs) -> Cost:
        return _flops((flops_per_element + _alpha_flops(a)) * _numel(a["self"]))
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


