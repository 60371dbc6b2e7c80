"""Cost formulas of the operators that multiply and accumulate: matrix products, convolution,
attention, recurrent layers (their matrix products and cell arithmetic) and FFTs. Conventions:
1 MAC = 2 FLOPs; bias adds are FLOPs.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import log2, prod

from torch.utils.flop_counter import conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

from dnncost.counting.cost import Cost
from dnncost.counting.formulas.registry import (
    Args,
    OpKind,
    Outputs,
    TensorSpec,
    aten,
    first_output,
    flop_work,
    mac_work,
    numel_of,
    register_formula,
)


# -- matrix products --------------------------------------------------------------------------
@register_formula(aten.mm, kind=OpKind.MATMUL)
def mm_cost(a: Args, out: Outputs) -> Cost:
    """(m, k) @ (k, n): m*k*n MACs."""
    m, k = a["self"].shape
    n = a["mat2"].shape[-1]
    return mac_work(m * k * n)


@register_formula(aten.addmm, kind=OpKind.MATMUL)
def addmm_cost(a: Args, out: Outputs) -> Cost:
    """bias + (m, k) @ (k, n): m*k*n MACs, plus m*n FLOPs for the bias add."""
    m, k = a["mat1"].shape
    n = a["mat2"].shape[-1]
    return mac_work(m * k * n, m * n)


@register_formula(aten.bmm, kind=OpKind.MATMUL)
def bmm_cost(a: Args, out: Outputs) -> Cost:
    """(b, m, k) @ (b, k, n): b*m*k*n MACs."""
    b, m, k = a["self"].shape
    n = a["mat2"].shape[-1]
    return mac_work(b * m * k * n)


@register_formula(aten.baddbmm, kind=OpKind.MATMUL)
def baddbmm_cost(a: Args, out: Outputs) -> Cost:
    """input + (b, m, k) @ (b, k, n): b*m*k*n MACs plus b*m*n FLOPs for the add."""
    b, m, k = a["batch1"].shape
    n = a["batch2"].shape[-1]
    return mac_work(b * m * k * n, b * m * n)


@register_formula(aten.dot, aten.vdot, kind=OpKind.MATMUL)
def dot_cost(a: Args, out: Outputs) -> Cost:
    """Dot product of two n-vectors: n MACs."""
    return mac_work(a["self"].numel)


@register_formula(aten.mv, kind=OpKind.MATMUL)
def mv_cost(a: Args, out: Outputs) -> Cost:
    """(m, n) @ (n,): m*n MACs."""
    return mac_work(a["self"].numel)


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
    x, w, y = a["input"] if "input" in a else a["self"], a["weight"], first_output(out)
    transposed = bool(a.get("transposed", False))
    bias = y.numel if a.get("bias") is not None else 0
    return mac_work(_conv_macs(x, w, y, transposed), bias)


@register_formula(aten.convolution_backward, kind=OpKind.CONV_BACKWARD)
def conv_backward_cost(a: Args, out: Outputs) -> Cost:
    """grad_input and grad_weight each cost exactly the forward's MACs, for any ``groups``
    (torch's own backward formula ignores groups); grad_bias is one add per grad_output element.
    Only the gradients in ``output_mask`` are counted."""
    grad_out, x, w = a["grad_output"], a["input"], a["weight"]
    mask = a["output_mask"]
    fwd = _conv_macs(x, w, grad_out, bool(a["transposed"]))
    macs = fwd * (int(bool(mask[0])) + int(bool(mask[1])))
    return mac_work(macs, grad_out.numel if mask[2] else 0)


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
    return mac_work(macs, 5 * b * h * sq * k.shape[-2])


@register_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward,
                  aten._scaled_dot_product_efficient_attention_backward,
                  aten._scaled_dot_product_flash_attention_backward,
                  aten._scaled_dot_product_cudnn_attention_backward, kind=OpKind.ATTENTION_BACKWARD)
def sdpa_backward_cost(a: Args, out: Outputs) -> Cost:
    """Recompute QK^T, then dV, dP, dQ, dK: 5 * B*H*Sq*Sk*D MACs; softmax backward 4 per score."""
    q, k, v, g = a["query"], a["key"], a["value"], a["grad_out"]
    macs = sdpa_backward_flop_count(g.shape, q.shape, k.shape, v.shape) // 2
    b, h, sq, _ = q.shape
    return mac_work(macs, 4 * b * h * sq * k.shape[-2])


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
    return mac_work(macs, extra)


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
    return mac_work(macs, extra)


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
    return mac_work(macs, extra)


@register_formula(aten.mkldnn_rnn_layer_backward, kind=OpKind.MATMUL)
def mkldnn_rnn_layer_backward_cost(a: Args, out: Outputs) -> Cost:
    """Backward of one oneDNN RNN layer: gradients of input and hidden state, and of both weight
    matrices, each as many MACs as the forward's product: 2 x forward MACs; the cell's pointwise
    backward at twice its forward FLOPs."""
    macs, extra = _rnn_layer(a, w_ih="weight1", w_hh="weight2")
    return mac_work(2 * macs, 2 * extra)


@register_formula(aten._thnn_fused_lstm_cell, aten._thnn_fused_gru_cell, kind=OpKind.ELEMENTWISE)
def fused_rnn_cell_cost(a: Args, out: Outputs) -> Cost:
    """The pointwise part of one LSTM/GRU time step on CUDA (the gate products are separate mm's):
    bias adds 2 per gate element when given + the cell's per-unit FLOPs (:data:`RNN_CELL_FLOPS`)."""
    gates_x = a["input_gates"]  # (B, G*H)
    state = a["cx"] if "cx" in a else a["hx"]  # (B, H)
    gates = gates_x.shape[-1] // state.shape[-1]
    bias = 2 * gates_x.numel if a.get("input_bias") is not None else 0
    return flop_work(bias + RNN_CELL_FLOPS[gates] * state.numel)


@register_formula(aten._thnn_fused_lstm_cell_backward_impl, aten._thnn_fused_gru_cell_backward,
                  kind=OpKind.ELEMENTWISE)
def fused_rnn_cell_backward_cost(a: Args, out: Outputs) -> Cost:
    """Pointwise backward of one fused cell: twice the forward's cell FLOPs per gate element."""
    return flop_work(2 * numel_of(out[0]))


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
    return mac_work(macs, extra)


@register_formula(aten._cudnn_rnn_backward, aten.miopen_rnn_backward, kind=OpKind.MATMUL)
def cudnn_rnn_backward_cost(a: Args, out: Outputs) -> Cost:
    """Backward of a cuDNN RNN: gradients of inputs/states and of the weights, each the forward's
    MACs (2 x forward); the cell's pointwise backward at twice its forward FLOPs."""
    macs, extra = _rnn_stack(a)
    return mac_work(2 * macs, 2 * extra)


# -- FFT --------------------------------------------------------------------------------------
def _fft_cost(signal: TensorSpec, dims: Sequence[int], per_n_log_n: float) -> Cost:
    """``per_n_log_n`` * N * log2(N) FLOPs per transformed signal of N points along ``dims``."""
    n = prod(signal.shape[d] for d in dims)
    if n <= 1:
        return Cost()
    return flop_work(int(per_n_log_n * n * log2(n) * (signal.numel // n)))


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
    return _fft_cost(first_output(out), a["dim"], FFT_REAL_FLOPS)
