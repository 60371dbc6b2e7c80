"""The counter on tiny networks whose forward, backward and optimizer costs are counted by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dnncost import Phase
from dnncost.core.errors import DeviceError, InputSpecError
from dnncost.counting.counter import count


class Tiny(nn.Module):
    """conv 1->2 (3x3, no bias) on 1x4x4 -> relu -> flatten -> linear 8->3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, bias=False)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv(x)).flatten(1))


class DepthwiseBlock(nn.Module):
    """1x1 conv 4->4 then depthwise 3x3 (groups=4, padding 1), on 4x8x8: a MobileNet block."""

    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(4, 4, 1, bias=False)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(self.pw(x))


def test_tiny_forward_by_hand():
    r = count(Tiny(), input_shape=(1, 4, 4))
    # conv: 2 out ch * 2*2 positions * 1 in ch * 9 = 72 MACs; fc: 8 * 3 = 24 MACs
    assert r.total().macs == 72 + 24
    # 2 * 96 MACs + relu 8 + fc bias 3 = 203 FLOPs
    assert r.total().flops == 203
    # params: conv 2*9 = 18, fc 8*3 + 3 = 27
    assert r.params == 45
    assert set(r.by_module(1)) == {"conv", "relu", "fc"}  # each module once, nothing else
    assert r.by_module(1)["conv"].macs == 72 and r.by_module(1)["fc"].macs == 24
    # bytes of the conv: reads input 16*4 + weight 18*4 = 136, writes 8*4 = 32
    conv = r.by_module(1)["conv"]
    assert (conv.bytes_read, conv.bytes_written) == (136, 32)
    assert r.unsupported() == {}


def test_tiny_training_step_by_hand():
    r = count(Tiny(), input_shape=(1, 4, 4), mode="train")
    phases = r.by_phase()
    assert list(phases) == [Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER]
    # forward: 96 MACs; 203 FLOPs + log_softmax 5*3 = 15 + nll 2*1 = 2 -> 220
    assert phases[Phase.FORWARD].macs == 96 and phases[Phase.FORWARD].flops == 220
    # backward: fc grad_input (1x3 @ 3x8) 24 + grad_weight (3x1 @ 1x8) 24; conv grad_weight only
    # (its input needs no gradient) 72 -> 120 MACs
    assert phases[Phase.BACKWARD].macs == 120
    # 2 * 120 + nll_backward 2 + log_softmax_backward 4*3 = 12 + fc bias grad 3 + relu backward 8
    assert phases[Phase.BACKWARD].flops == 240 + 2 + 12 + 3 + 8
    # SGD, momentum 0.9, over 45 params: buf *= 0.9 (1), buf += g (1), p += -lr*buf (2) -> 4 * 45
    assert phases[Phase.OPTIMIZER] .flops == 180 and phases[Phase.OPTIMIZER].macs == 0
    # saved for backward: input 16*4 = 64, relu output 8*4 = 32, log-probs 3*4 = 12,
    # target 8 (int64), nll total_weight 4 -> 120 bytes (weights excluded)
    assert r.activation_bytes == 120
    assert r.gradient_bytes == 45 * 4


def test_depthwise_training_step_is_three_times_forward_by_hand():
    r = count(DepthwiseBlock(), input_shape=(4, 8, 8), mode="train")
    fwd = r.total(Phase.FORWARD).macs
    bwd = r.total(Phase.BACKWARD).macs
    # pw: 4 * 8*8 * 4 * 1 = 1,024; dw: 4 * 8*8 * (4/4) * 9 = 2,304
    assert fwd == 1024 + 2304
    # backward: pw grad_weight only 1,024 (its input needs no grad); dw grad_input + grad_weight
    # 2 * 2,304 -- torch's own formula ignores groups and gives 4x as much for the dw part
    assert bwd == 1024 + 2 * 2304


def test_counting_leaves_the_users_model_untouched():
    model = Tiny()
    before = model.fc.weight.detach().clone()
    count(model, input_shape=(1, 4, 4), mode="train")
    assert model.fc.weight.device.type == "cpu" and torch.equal(model.fc.weight, before)
    assert model.fc.weight.grad is None


def test_meta_and_cpu_agree_and_batch_scales_linearly():
    meta = count(Tiny(), input_shape=(1, 4, 4), mode="train", batch_size=8)
    cpu = count(Tiny(), input_shape=(1, 4, 4), mode="train", batch_size=8, device="cpu")
    assert meta.total() == cpu.total()
    fwd1 = count(Tiny(), input_shape=(1, 4, 4), batch_size=1).total().macs
    assert count(Tiny(), input_shape=(1, 4, 4), batch_size=8).total().macs == 8 * fwd1


def test_functional_ops_and_unsupported_are_listed():
    class Functional(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.gelu(x @ x.transpose(-1, -2))  # 2 * (4x3 @ 3x4) = 96 MACs
            return torch.sort(y).values  # no formula: listed, not zero

    r = count(Functional(), input_shape=(4, 3), batch_size=2)
    assert r.total().macs == 2 * 4 * 3 * 4
    assert r.unsupported() == {"aten.sort": 1}
    assert r.incomplete and r.summary()["incomplete"] is True and r.to_dict()["incomplete"] is True
    assert "MACs >= 96" in r.table() and "INCOMPLETE" in r.table()  # 2 * 4*3*4 = 96


def test_multihead_attention_fast_path_counted_fully():
    """Real CPU tensors in eval under no_grad take MHA's fused path; the count must not drop."""
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                            hidden_dim=16, mlp_dim=32, num_classes=10)
    meta = count(vit, input_shape=(3, 32, 32))
    cpu = count(vit, input_shape=(3, 32, 32), device="cpu")
    assert "aten._native_multi_head_attention" in cpu.by_operator()  # the fast path ran
    assert cpu.total().macs == meta.total().macs
    # per layer: tokens L = 16 + 1 = 17, E = 16: in-proj 3*17*16*16 = 13,056, QK^T + AV
    # 2*17*17*16 = 9,248, out-proj 17*16*16 = 4,352, MLP 2*17*16*32 = 17,408 -> 44,064;
    # patch embedding 16 patches * 16 * 3*8*8 = 49,152; head 16 * 10 = 160
    assert meta.total().macs == 2 * 44_064 + 49_152 + 160


def test_bad_inputs_are_clear():
    with pytest.raises(InputSpecError, match=r"module 'conv' \(Conv2d\)"):
        count(Tiny(), input_shape=(3, 4, 4))
    with pytest.raises(InputSpecError, match="batch size"):
        count(Tiny(), input_shape=(1, 4, 4), batch_size=0)
    with pytest.raises(DeviceError):
        count(Tiny(), input_shape=(1, 4, 4), device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            count(Tiny(), input_shape=(1, 4, 4), device="cuda")


def test_backward_attribution_with_a_parameter_free_shortcut():
    """The shortcut stays 'entered' in backward until its input's gradient is complete, i.e. while
    the branch runs backward; the branch's convolutions must still own their backward ops."""

    class Shortcut(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :, ::1, ::1]

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(2, 2, 1, bias=False)
            self.branch = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.ReLU())
            self.shortcut = Shortcut()
            self.head = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            return self.head((self.branch(x) + self.shortcut(x)).flatten(1))

    r = count(Block(), input_shape=(2, 4, 4), mode="train")
    bwd = r.by_module(-1, "backward")
    # branch conv: 2 out * 16 positions * 2 in * 9 = 576 MACs, grad_input + grad_weight
    assert bwd["branch.0"].macs == 2 * 576
    # head: 32 * 3 = 96 MACs each for grad_input and grad_weight, on 'head', not the model
    assert bwd["head"].macs == 2 * 96
    assert bwd.get("shortcut", None) is None or bwd["shortcut"].macs == 0


def test_dtype_autocast_and_channels_last():
    base = count(Tiny(), input_shape=(1, 4, 4))
    half = count(Tiny(), input_shape=(1, 4, 4), dtype="bfloat16")
    assert half.total().macs == base.total().macs == 96 and half.dtype == "bfloat16"
    conv = next(r for r in half.records if r.op == "aten.convolution")
    # input 1*1*4*4 + weight 2*1*3*3 = 16 + 18 = 34 elements read, at 2 bytes each in bfloat16
    assert conv.cost.bytes_read == 2 * 34
    with pytest.raises(InputSpecError, match="autocast does not act on meta tensors"):
        count(Tiny(), input_shape=(1, 4, 4), autocast="bfloat16")
    amp = count(Tiny(), input_shape=(1, 4, 4), autocast="bfloat16", device="cpu")
    assert amp.dtype == "float32 + autocast bfloat16" and amp.total().macs == 96
    assert "aten._to_copy" in amp.by_operator()  # autocast's casts ran and were counted
    assert count(Tiny(), input_shape=(1, 4, 4), channels_last=True).total() == base.total()


def test_user_model_keeps_its_dtype_after_timing_in_another():
    from dnncost.measuring.timing import time_model

    model = Tiny()
    timing = time_model(model, (1, 4, 4), batch_size=2, mode="eval", dtype="bfloat16", warmup=0,
                        steps=2, probe=False)
    assert timing.dtype == "bfloat16" and next(model.parameters()).dtype == torch.float32


class _PermutedBlock(nn.Module):
    """ConvNeXt's pattern: a convolution, layer norm on the channels-last permutation, permuted
    back and added to the input, then another convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv2(y + x)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_a_convolution_on_a_permuted_back_input_is_recorded_channels_last(device: str) -> None:
    report = count(_PermutedBlock(), mode="train", batch_size=2, input_shape=(8, 6, 6), device=device)
    forward = {r.module: r.channels_last for r in report.records if r.op == "aten.convolution"}
    assert forward == {"conv1": False, "conv2": True}
    backward = {r.module: r.channels_last for r in report.records
                if r.op == "aten.convolution_backward"}
    assert backward["conv2"] is True


class _GatedBlock(nn.Module):
    """MambaOut's gated block: a linear layer on an NHWC tensor, split along the channels, one part
    permuted to NCHW for a depthwise convolution -- a view ordered channels-last but not dense."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, 3 * channels)
        self.conv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, c = torch.split(self.fc(x.permute(0, 2, 3, 1)), self.channels, dim=-1)
        return self.conv(c.permute(0, 3, 1, 2))


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("side", [1, 2])
def test_a_convolution_on_a_split_nhwc_view_is_recorded_channels_last(device: str, side: int) -> None:
    """Torch runs a convolution channels-last when its input's strides are ordered so, dense or not
    (``suggest_memory_format``): the split view of MambaOut's block is, on a 1x1 map too; a
    contiguous NCHW input is not, whatever its map."""
    (conv,) = [r for r in count(_GatedBlock(8), mode="eval", batch_size=4, input_shape=(8, side, side),
                                device=device).records if r.op == "aten.convolution"]
    assert conv.channels_last is True
    (plain,) = [r for r in count(nn.Conv2d(8, 8, 7, padding=3, groups=8), mode="eval", batch_size=4,
                                 input_shape=(8, side, side), device=device).records
                if r.op == "aten.convolution"]
    assert plain.channels_last is False


class _LastStage(nn.Module):
    """ConvNeXt's last stage at a CIFAR size: a strided convolution takes a channels-last 2x2 map
    to 1x1, then blocks of a 7x7 depthwise convolution, layer norm on the channels-last
    permutation, GELU and a residual sum. A 1x1 map is contiguous and channels-last at once: its
    strides are whatever each kernel writes, and the CPU's kernels and meta's write different ones."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, channels, 2, stride=2)
        self.blocks = nn.ModuleList(nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
                                    for _ in range(3))
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x.contiguous(memory_format=torch.channels_last))
        for conv in self.blocks:
            x = x + nn.functional.gelu(self.norm(conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        return x


def test_the_layout_counted_on_a_1x1_map_is_the_one_the_cpu_runs() -> None:
    """Every convolution's layout as counted on meta is the layout of its input on a real CPU run:
    on a 1x1 map a depthwise 7x7 runs ~100x slower contiguous than channels-last, so the per-kernel
    model must see the CPU's layout, not meta's."""
    from torch._prims_common import suggest_memory_format

    torch.manual_seed(0)
    model = _LastStage()
    on_cpu: list[bool] = []
    hooks = [m.register_forward_pre_hook(
        lambda _, inp: on_cpu.append(suggest_memory_format(inp[0]) == torch.channels_last))
        for m in model.modules() if isinstance(m, nn.Conv2d)]
    model(torch.randn(4, 16, 2, 2))
    for h in hooks:
        h.remove()
    counted = [r.channels_last for r in count(model, mode="eval", batch_size=4,
                                              input_shape=(16, 2, 2)).records
               if r.op == "aten.convolution"]
    assert counted == on_cpu
    assert set(on_cpu) == {True, False}  # the case is not trivial: the CPU runs both layouts


def test_a_convolutions_stride_and_padding_are_recorded_as_called() -> None:
    """Its own arguments, not inferred from shapes: a convolution on an input padded beforehand
    (TensorFlow's "same" padding as ported) has padding 0, forward and backward; other calls none."""
    class PrePadded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 5, stride=2, groups=4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(nn.functional.pad(x, (2, 2, 2, 2)))

    records = count(PrePadded(), mode="train", batch_size=2, input_shape=(4, 1, 1)).records
    convs = [r for r in records if r.op.startswith("aten.convolution")]
    assert {r.op for r in convs} == {"aten.convolution", "aten.convolution_backward"}
    assert all(r.stride == (2, 2) and r.padding == (0, 0) for r in convs)
    same = count(nn.Conv2d(4, 4, 5, padding=2, groups=4), mode="eval", batch_size=2,
                 input_shape=(4, 1, 1)).records[0]
    assert (same.stride, same.padding) == ((1, 1), (2, 2))
    assert all(r.padding == () for r in records if "convolution" not in r.op and "pad" not in r.op)


class _Noisy(nn.Module):
    """Multiplicative noise drawn on a 1x1 map, between two convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(x)
        return self.conv2(y * torch.rand_like(y))


def test_reading_a_layout_on_the_cpu_leaves_the_random_stream_alone() -> None:
    """Counting a step that draws random numbers on a 1x1 map (whose layout is read by running the
    call on the CPU) does not move the CPU's random generator: a user's seeded run draws what it
    drew without it."""
    model = _Noisy()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    count(model, mode="train", batch_size=4, input_shape=(8, 1, 1))
    assert torch.equal(torch.rand(3), expected)
