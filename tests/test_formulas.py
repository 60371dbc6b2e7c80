"""Each formula against hand arithmetic; shapes only, no torch arithmetic."""
from __future__ import annotations

import pytest
import torch

from dnncost.counting import formulas as F
from dnncost.counting.cost import Cost
from dnncost.counting.formulas import TensorSpec as T
from dnncost.counting.formulas import pointwise, products

aten = torch.ops.aten


def test_every_registered_formula_states_its_rule():
    for op, fn in F.FORMULAS.items():
        assert fn.__doc__ and fn.__doc__.strip(), f"formula for {op} has no rule in its docstring"


def test_register_formula_rejects_a_duplicate():
    with pytest.raises(ValueError, match="already registered"):
        F.register_formula(aten.mm, kind=F.OpKind.MATMUL)(products.mm_cost)


def test_view_ops_have_no_formula():
    assert F.is_view(aten.view.default) and F.formula_for(aten.view.default) is None


def test_mm():
    # (2, 3) @ (3, 4): 2 * 3 * 4 = 24 MACs, 48 FLOPs
    assert products.mm_cost({"self": T((2, 3)), "mat2": T((3, 4))}, (T((2, 4)),)) == Cost(24, 48)


def test_addmm_counts_bias_as_flops_not_macs():
    # 24 MACs; bias add 2 * 4 = 8 FLOPs -> 2 * 24 + 8 = 56
    a = {"self": T((4,)), "mat1": T((2, 3)), "mat2": T((3, 4))}
    assert products.addmm_cost(a, (T((2, 4)),)) == Cost(24, 56)


def test_bmm_and_baddbmm():
    # 5 * 2 * 3 * 4 = 120 MACs
    assert products.bmm_cost({"self": T((5, 2, 3)), "mat2": T((5, 3, 4))}, ()) == Cost(120, 240)
    # plus 5 * 2 * 4 = 40 adds
    a = {"self": T((5, 2, 4)), "batch1": T((5, 2, 3)), "batch2": T((5, 3, 4))}
    assert products.baddbmm_cost(a, ()) == Cost(120, 280)


def test_dot_and_mv():
    assert products.dot_cost({"self": T((7,)), "tensor": T((7,))}, ()) == Cost(7, 14)
    assert products.mv_cost({"self": T((3, 7)), "vec": T((7,))}, ()) == Cost(21, 42)


def _conv_args(x, w, *, bias=None, transposed=False, groups=1):
    return {"input": T(x), "weight": T(w), "bias": T(bias) if bias else None,
            "transposed": transposed, "groups": groups}


def test_conv2d_lenet_c1():
    # LeNet C1: 1x32x32 -> 6x28x28 with 5x5: 6 * 28 * 28 * 1 * 25 = 117,600 MACs; bias 4,704 FLOPs
    cost = products.conv_cost(_conv_args((1, 1, 32, 32), (6, 1, 5, 5), bias=(6,)), (T((1, 6, 28, 28)),))
    assert cost == Cost(117_600, 2 * 117_600 + 4_704)


def test_depthwise_conv_uses_groups():
    # depthwise 3x3 on 2x8x10x10 (groups 8): 2 * 8 * 10 * 10 * (8/8) * 9 = 14,400 MACs
    cost = products.conv_cost(_conv_args((2, 8, 10, 10), (8, 1, 3, 3), groups=8), (T((2, 8, 10, 10)),))
    assert cost.macs == 14_400


def test_conv1d_and_conv3d():
    # conv1d 1x4x10 -> 2x8 with k=3: 2 * 8 * 4 * 3 = 192 MACs
    assert products.conv_cost(_conv_args((1, 4, 10), (2, 4, 3)), (T((1, 2, 8)),)).macs == 192
    # conv3d 1x2x4x4x4 -> 3x2x2x2 with 3^3: 3 * 8 * 2 * 27 = 1,296 MACs
    conv3d = products.conv_cost(_conv_args((1, 2, 4, 4, 4), (3, 2, 3, 3, 3)), (T((1, 3, 2, 2, 2)),))
    assert conv3d.macs == 1296


def test_transposed_conv_counts_input_positions():
    # conv_transpose 1x4x5x5 -> 2 channels, 3x3 kernel, weight (Cin=4, Cout=2, 3, 3):
    # each input position scatters a 2x3x3 patch: 25 * 4 * 2 * 9 = 1,800 MACs
    a = _conv_args((1, 4, 5, 5), (4, 2, 3, 3), transposed=True)
    assert products.conv_cost(a, (T((1, 2, 7, 7)),)).macs == 1800


@pytest.mark.parametrize("mask, macs", [((True, True, True), 2 * 14_400),
                                        ((False, True, False), 14_400),
                                        ((True, False, False), 14_400)])
def test_conv_backward_grouped(mask, macs):
    # depthwise forward is 14,400 MACs; grad_input and grad_weight each cost the same
    a = {"grad_output": T((2, 8, 10, 10)), "input": T((2, 8, 10, 10)), "weight": T((8, 1, 3, 3)),
         "transposed": False, "groups": 8, "output_mask": list(mask)}
    cost = products.conv_backward_cost(a, ())
    # grad_bias: one add per grad_output element, 2 * 8 * 10 * 10 = 1,600
    assert cost == Cost(macs, 2 * macs + (1600 if mask[2] else 0))


def test_sdpa_and_backward():
    # B=2, H=3, S=4, D=5: QK^T 2*3*4*4*5 = 480, AV 480 -> 960 MACs; softmax 5 * 2*3*4*4 = 480
    q = T((2, 3, 4, 5))
    assert products.sdpa_cost({"query": q, "key": q, "value": q}, ()) == Cost(960, 1920 + 480)
    # backward: 5 bmm of 480 = 2,400 MACs; softmax backward 4 * 96 = 384
    a = {"query": q, "key": q, "value": q, "grad_out": q}
    assert products.sdpa_backward_cost(a, ()) == Cost(2400, 4800 + 384)


def test_native_multi_head_attention():
    # B=1, L=S=4, E=6, 2 heads: q-proj 4*36=144, k,v-proj 288, QK^T+AV 2*4*4*6=192, out 144 -> 768
    # bias adds 4*6 + 2*4*6 + 4*6 = 96; softmax 5 * 1*2*4*4 = 160
    a = {"query": T((1, 4, 6)), "key": T((1, 4, 6)), "num_head": 2}
    assert products.native_mha_cost(a, ()) == Cost(768, 2 * 768 + 96 + 160)


def test_batch_norm_train_eval_backward():
    x = T((2, 3, 4, 4))  # 96 elements
    # train with affine: 8 per element = 768; eval: 4 per element = 384
    assert pointwise.batch_norm_cost({"input": x, "weight": T((3,)), "training": True}, ()).flops == 768
    assert pointwise.batch_norm_cost({"input": x, "weight": T((3,)), "training": False}, ()).flops == 384
    assert pointwise.batch_norm_eval_cost({"input": x, "weight": None}, ()).flops == 192
    assert pointwise.batch_norm_backward_cost({"input": x}, ()).flops == 9 * 96


def test_layer_norm_and_backward():
    x = T((2, 5, 8))  # 80 elements: (6 + 2) * 80 = 640
    assert pointwise.layer_norm_cost({"input": x, "weight": T((8,))}, ()).flops == 640
    assert pointwise.layer_norm_backward_cost({"input": x}, ()).flops == 720


def test_pooling():
    # max 3x3 -> 2x4x4 outputs (32): (9 - 1) * 32 = 256 comparisons
    assert pointwise.max_pool_cost({"kernel_size": [3, 3]}, (T((1, 2, 4, 4)), T((1, 2, 4, 4)))).flops == 256
    # avg 2x2 -> 32 outputs: 4 * 32 = 128
    assert pointwise.avg_pool_cost({"kernel_size": [2, 2]}, (T((1, 2, 4, 4)),)).flops == 128
    # adaptive avg 1x2x7x7 -> 1x2x1x1: 98 adds + 2 divides = 100
    assert pointwise.adaptive_pool_cost({"self": T((1, 2, 7, 7))}, (T((1, 2, 1, 1)),)).flops == 100
    assert pointwise.pool_backward_cost({}, (T((1, 2, 7, 7)),)).flops == 98


def test_pointwise_rules():
    out = (T((2, 5)),)  # 10 elements
    assert F.formula_for(aten.relu)({}, out).flops == 10
    assert F.formula_for(aten.add)({"alpha": 1}, out).flops == 10
    assert F.formula_for(aten.add)({"alpha": 0.5}, out).flops == 20  # x + 0.5 * y
    assert F.formula_for(aten.sigmoid)({}, out).flops == 40
    assert F.formula_for(aten.gelu)({}, out).flops == 80
    assert F.formula_for(aten.cat)({}, out) == Cost()  # data movement only: bytes, no FLOPs


def test_reduction_softmax_loss():
    assert pointwise.reduction_cost({"self": T((3, 4))}, ()).flops == 12
    assert pointwise.softmax_cost({"self": T((3, 4))}, ()).flops == 60  # 5 * 12
    assert pointwise.softmax_backward_cost({"grad_output": T((3, 4))}, ()).flops == 48  # 4 * 12
    assert pointwise.nll_loss_cost({"target": T((3,), torch.long)}, ()).flops == 6  # 2 * 3
    assert pointwise.elementwise_loss_cost({"self": T((3, 4))}, ()).flops == 36  # 3 * 12


def test_foreach_update():
    a = {"self": [T((3, 4)), T((5,))], "alpha": -0.1}  # 17 elements, scaled add: 2 each
    assert F.formula_for(aten._foreach_add_)(a, ()).flops == 34
    assert F.formula_for(aten._foreach_mul_)({"self": a["self"]}, ()).flops == 17


def test_tensor_spec_bytes():
    assert T((2, 3), torch.float16).nbytes == 12
    assert T((2, 3)).numel == 6


def test_index_add():
    # 6 rows of 4 added into a 10x4 tensor: 24 adds
    a = {"self": T((10, 4)), "source": T((6, 4)), "index": T((6,), torch.long)}
    assert pointwise.index_add_cost(a, (T((10, 4)),)).flops == 24


def test_fused_transformer_encoder_layer():
    # B=2, S=5, E=16, 2 heads, F=32, N=10 tokens: qkv 3*10*16*16 = 7,680; QK^T+AV 2*2*5*5*16 = 1,600;
    # out 10*16*16 = 2,560; ffn 2*10*16*32 = 10,240 -> 22,080 MACs. Other FLOPs: biases
    # 10*(5*16+32) = 1,120; scaling 2*10*16 = 320; softmax 5*2*2*5*5 = 500; norms 2*8*160 = 2,560;
    # relu 10*32 = 320; residuals 2*160 = 320 -> 5,140
    a = {"src": T((2, 5, 16)), "num_heads": 2, "ffn_weight_1": T((32, 16)), "use_gelu": False}
    assert products.transformer_encoder_layer_cost(a, (T((2, 5, 16)),)) == Cost(22_080, 2 * 22_080 + 5_140)


def test_mkldnn_lstm_layer_and_its_backward():
    # T=5, B=2, I=16, H=8, 4 gates: 10 steps * 32 * (16 + 8) = 7,680 MACs; per step and item
    # bias 2*32 = 64 + cell 24*8 = 192 -> 10 * 256 = 2,560 other FLOPs
    a = {"input": T((2, 5, 16)), "weight0": T((32, 16)), "weight1": T((32, 8)), "hidden_size": 8,
         "batch_first": True, "has_biases": True, "mode": 2}
    assert products.mkldnn_rnn_layer_cost(a, ()) == Cost(7_680, 2 * 7_680 + 2_560)
    back = {**a, "weight1": T((32, 16)), "weight2": T((32, 8))}  # the backward's weights start at 1
    assert products.mkldnn_rnn_layer_backward_cost(back, ()) == Cost(15_360, 2 * 15_360 + 5_120)


def test_plain_rnn_layer_relu_and_tanh():
    # T=3, B=1, I=4, H=2, 1 gate: 3 * 2 * (4 + 2) = 36 MACs; bias 2*2 = 4 + cell (relu 2 | tanh 3)*2
    a = {"input": T((3, 1, 4)), "weight0": T((2, 4)), "weight1": T((2, 2)), "hidden_size": 2,
         "batch_first": False, "has_biases": True, "mode": 0}
    assert products.mkldnn_rnn_layer_cost(a, ()) == Cost(36, 72 + 3 * (4 + 4))
    assert products.mkldnn_rnn_layer_cost({**a, "mode": 1}, ()) == Cost(36, 72 + 3 * (4 + 6))


def test_fused_lstm_cell():
    # B=2, H=8: input gates 2x32 with bias: 2 * 64 = 128 bias adds + 24 * 16 = 384 cell FLOPs
    a = {"input_gates": T((2, 32)), "hidden_gates": T((2, 32)), "cx": T((2, 8)),
         "input_bias": T((32,)), "hidden_bias": T((32,))}
    assert products.fused_rnn_cell_cost(a, ()) == Cost(0, 128 + 384)


def test_fft():
    # complex FFT of 8 points along the last dim, 3 signals: 5 * 8 * log2(8) * 3 = 360
    assert products.fft_c2c_cost({"self": T((3, 8), torch.complex64), "dim": [1]}, ()) == Cost(0, 360)
    # real FFT of 16 points, 2 signals: 2.5 * 16 * 4 * 2 = 320; inverse to 16 real points alike
    assert products.fft_r2c_cost({"self": T((2, 16)), "dim": [1]}, ()) == Cost(0, 320)
    inverse = products.fft_c2r_cost({"self": T((2, 9), torch.complex64), "dim": [1]}, (T((2, 16)),))
    assert inverse == Cost(0, 320)


def test_upsampling():
    # linear 1d: one lerp (2 FLOPs) per output element: 1*2*8 = 16 outputs -> 32
    assert F.formula_for(aten.upsample_linear1d)({}, (T((1, 2, 8)),)) == Cost(0, 32)
    # trilinear: 7 lerps = 14 FLOPs per output element: 1*1*2*2*2 = 8 outputs -> 112
    assert F.formula_for(aten.upsample_trilinear3d)({}, (T((1, 1, 2, 2, 2)),)) == Cost(0, 112)
    # nearest backward: one add per output-gradient element, 1*1*4*4 = 16
    assert pointwise.upsample_nearest_backward_cost({"grad_output": T((1, 1, 4, 4))}, ()) == Cost(0, 16)


def test_rnn_and_in_place_metadata_ops_are_views():
    for op in (aten.unsafe_split, aten.unsafe_chunk, aten.transpose_, aten.t_, aten._nested_tensor_size):
        assert F.is_view(op) and F.formula_for(op) is None


def test_cudnn_rnn_stack_two_layers_bidirectional():
    # LSTM I=16, H=8, 2 layers, bidirectional, T=5, B=2 (10 steps), with biases: layer 0 per
    # direction w_ih 32x16 + w_hh 32x8 = 768 MACs per step; layer 1 takes 2H = 16 features: also 768.
    # 4 (layer, direction) chunks * 10 steps * 768 = 30,720 MACs; other FLOPs 4 * 10 * (24*8 + 64)
    w = [T((32, 16)), T((32, 8)), T((32,)), T((32,))] * 4
    a = {"input": T((5, 2, 16)), "weight": w, "weight_stride0": 4, "hidden_size": 8, "mode": 2}
    assert products.cudnn_rnn_cost(a, ()) == Cost(30_720, 2 * 30_720 + 4 * 10 * (192 + 64))
    assert products.cudnn_rnn_backward_cost(a, ()).macs == 2 * 30_720
    # a packed sequence of 7 steps in all, GRU without biases, 1 layer: 7 * (24*16 + 24*8) = 4,032
    gru = {"input": T((7, 16)), "weight": [T((24, 16)), T((24, 8))], "weight_stride0": 2,
           "hidden_size": 8, "mode": 3}
    assert products.cudnn_rnn_cost(gru, ()) == Cost(4_032, 2 * 4_032 + 7 * 17 * 8)
