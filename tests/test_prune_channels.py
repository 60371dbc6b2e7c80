"""whatif prune_channels: torch-pruning's dependency graph removes coupled channels together --
counted FLOPs against hand arithmetic for a network with a residual addition and one with a
concatenation, the function kept where the removed channels were dead, the classes kept, and the
networks people slim (mobilenet_v2, efficientnet_b0) pruned in both step modes. Skipped without the
optional extra (pip install "dnncost[pruning]")."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dnncost.core.inputs import InputSpec, TensorInput
from dnncost.core.kinds import Mode
from dnncost.counting.counter import count
from dnncost.whatif.registry import Context, NotApplicable, Variant, get_transformation

pytest.importorskip("torch_pruning")

SHAPE = (4, 6, 6)  # one sample: 4 channels, 6x6; every 3x3 convolution pads by 1, so 36 pixels


def context(mode: Mode = Mode.EVAL, shape: tuple[int, ...] = SHAPE) -> Context:
    return Context(inputs=InputSpec((TensorInput(shape),)), batch_size=2, mode=mode,
                   device=torch.device("cpu"), threads=1)


def prune(model: nn.Module, ratio: float, mode: Mode = Mode.EVAL,
          shape: tuple[int, ...] = SHAPE) -> Variant:
    return get_transformation("prune_channels").apply(model, ratio, context(mode, shape))


def flops(model: nn.Module) -> int:
    return count(model, input_shape=SHAPE, mode="eval").total().flops


class Residual(nn.Module):
    """conv0 (4 -> 8) -> [conv1 (8 -> 8) -> ReLU -> conv2 (8 -> 8)] + conv0's output -> mean -> head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv0 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.conv0(x)  # (B, 8, 6, 6)
        return self.head((x0 + self.conv2(torch.relu(self.conv1(x0)))).mean((2, 3)))  # (B, 3)


class Concat(nn.Module):
    """cat(a: 3x3 4 -> 6, b: 1x1 4 -> 2) -> c: 3x3 8 -> 8 -> mean -> head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.b = nn.Conv2d(4, 2, 1, bias=False)
        self.c = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.c(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))  # (B, 3)


# Residual, forward at batch 1, FLOPs = 2 x MACs + ReLU, addition and mean (1 per element):
# conv0 36*8*(4*9) = 10368 MACs, conv1 and conv2 36*8*(8*9) = 20736 each, head 8*3 = 24
# -> 2 * (10368 + 20736 + 20736 + 24) = 103728, + ReLU 288 + add 288 + mean 288 = 104592
RESIDUAL_FLOPS = 2 * (10368 + 20736 + 20736 + 24) + 288 + 288 + 288
# At 0.5 the two groups -- {conv0 out, conv2 out, the addition, conv1 in, head in} and
# {conv1 out, conv2 in} -- keep int(8 * 0.5) = 4 channels each; the head's 3 classes stay:
# conv0 36*4*(4*9) = 5184, conv1 and conv2 36*4*(4*9) = 5184 each, head 4*3 = 12
# -> 2 * (3 * 5184 + 12) = 31128, + ReLU 144 + add 144 + mean 144 = 31560
RESIDUAL_PRUNED_FLOPS = 2 * (3 * 5184 + 12) + 3 * 144
# Concat: a 36*6*(4*9) = 7776 MACs, b 36*2*4 = 288, c 36*8*(8*9) = 20736, head 24; the
# concatenation moves data only (0 FLOPs) -> 2 * 28824 = 57648, + mean 288 = 57936
CONCAT_FLOPS = 2 * (7776 + 288 + 20736 + 24) + 288
# At 0.5 a keeps int(6 * 0.5) = 3 channels, b int(2 * 0.5) = 1 -- each with its slice of c's
# inputs -- and c int(8 * 0.5) = 4: a 36*3*36 = 3888, b 36*1*4 = 144, c 36*4*(4*9) = 5184, head 12
# -> 2 * 9228 = 18456, + mean 144 = 18600
CONCAT_PRUNED_FLOPS = 2 * (3888 + 144 + 5184 + 12) + 144


def test_hand_counts_of_the_originals() -> None:
    assert flops(Residual()) == RESIDUAL_FLOPS == 104592
    assert flops(Concat()) == CONCAT_FLOPS == 57936


@pytest.mark.parametrize("mode", list(Mode))
def test_residual_addition_prunes_both_branches_together(mode: Mode) -> None:
    variant = prune(Residual(), 0.5, mode)
    m = variant.module
    assert (m.conv0.out_channels, m.conv2.out_channels, m.conv1.in_channels, m.head.in_features) \
        == (4, 4, 4, 4)  # one group, coupled by the addition
    assert (m.conv1.out_channels, m.conv2.in_channels) == (4, 4)
    assert m.head.out_features == 3  # the classes are kept
    assert flops(m) == RESIDUAL_PRUNED_FLOPS == 31560


@pytest.mark.parametrize("mode", list(Mode))
def test_concatenation_prunes_each_slice_with_its_branch(mode: Mode) -> None:
    variant = prune(Concat(), 0.5, mode)
    m = variant.module
    assert (m.a.out_channels, m.b.out_channels, m.c.in_channels, m.c.out_channels) == (3, 1, 4, 4)
    assert flops(m) == CONCAT_PRUNED_FLOPS == 18600


def test_residual_dead_channels_removed_keep_the_function() -> None:
    """Channels that carry nothing (zero filters on both sides of the addition, and zero weights
    reading them) are the smallest by L1 norm: removing them leaves the output as it was -- which
    also shows the addition's two branches lost the same channels."""
    model = Residual().eval()
    dead_sum, dead_inner = [0, 2, 4, 6], [1, 3, 5, 7]
    with torch.no_grad():
        model.conv0.weight[dead_sum] = 0.0  # x0's channels 0, 2, 4, 6 are zero
        model.conv2.weight[dead_sum] = 0.0  # and so is the branch's contribution to them
        model.conv1.weight[:, dead_sum] = 0.0  # nothing reads them
        model.head.weight[:, dead_sum] = 0.0
        model.conv1.weight[dead_inner] = 0.0  # the inner group's dead channels
        model.conv2.weight[:, dead_inner] = 0.0
    x = torch.randn(2, *SHAPE)
    expected = model(x)
    pruned = prune(model, 0.5).module.eval()
    torch.testing.assert_close(pruned(x), expected)


def test_tiny_chain_keeps_the_largest_filters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(0.01)
        model[0].weight[[1, 6]] = 1.0  # filters 1 and 6 have by far the largest L1 norm
    second = model[1].weight.detach().clone()
    variant = prune(model, 0.75)  # keep int(8 * 0.25) = 2 filters
    assert variant.module[0].out_channels == 2 and variant.module[1].out_channels == 8
    assert torch.equal(variant.module[0].weight, torch.ones(2, 4, 3, 3))
    assert torch.equal(variant.module[1].weight, second[:, [1, 6]])
    # conv1 4->2: 36 * 2 * 4*9 = 2592 MACs; conv2 2->8: 36 * 8 * 2*9 = 5184 -> 2 * 7776 = 15552
    assert flops(variant.module) == 15552


def test_batchnorm_running_statistics_kept() -> None:
    """Tracing in training mode runs a forward; BatchNorm's running statistics of the kept channels
    are the original's, not moved by that forward."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 5, 3, padding=1))
    with torch.no_grad():
        model[1].running_mean.copy_(torch.arange(8.0))
        model[0].weight[[0, 2, 4, 6]] *= 1e-3  # the smallest: removed
    variant = prune(model, 0.5, Mode.TRAIN)
    assert variant.module[1].num_features == 4
    assert torch.equal(variant.module[1].running_mean, torch.tensor([1.0, 3.0, 5.0, 7.0]))


def test_depthwise_and_squeeze_excitation_are_coupled() -> None:
    """A MobileNet block: 1x1 expand -> 3x3 depthwise -> squeeze-excitation gate -> 1x1 project;
    the depthwise convolution and the gate lose the same channels as the expansion."""
    from torchvision.ops import SqueezeExcitation

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 16, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          SqueezeExcitation(16, 4), nn.Conv2d(16, 8, 1), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(1, *SHAPE))  # materialise the lazy head
    variant = prune(model, 0.5)
    m = variant.module
    assert m[0].out_channels == m[2].in_channels == m[2].out_channels == m[2].groups == 8
    assert m[3].fc1.in_channels == m[3].fc2.out_channels == 8
    assert m[6].out_features == 3
    assert m(torch.randn(2, *SHAPE)).shape == (2, 3)


@pytest.mark.parametrize("name", ["mobilenet_v2",
                                  pytest.param("efficientnet_b0", marks=pytest.mark.slow)])
def test_the_networks_people_slim(name: str) -> None:
    """torchvision's mobilenet_v2 and efficientnet_b0 (inverted residuals, depthwise convolutions,
    squeeze-excitation): every block pruned, the 1000 classes kept, both steps run; FLOPs fall to
    about (1 - 0.5)^2 of the original, as every layer loses half its inputs and half its outputs."""
    import torchvision

    shape = (3, 32, 32)
    for mode in Mode:
        model = torchvision.models.get_model(name)
        before = count(model, input_shape=shape, mode=mode.value, batch_size=2).total().flops
        variant = prune(model, 0.5, mode, shape)
        after = count(variant.module, input_shape=shape, mode=mode.value, batch_size=2).total().flops
        assert 0.2 < after / before < 0.4, after / before
        out = variant.module.train(mode is Mode.TRAIN)(torch.randn(2, *shape))
        assert out.shape == (2, 1000)


def test_only_output_channels_is_not_applicable() -> None:
    with pytest.raises(NotApplicable, match="every traced layer feeds the output"):
        prune(nn.Sequential(nn.Flatten(), nn.Linear(144, 3)), 0.5)


class Bag(nn.Module):
    """Token ids -> embedding (8) -> fc1 (8 -> 16) per token -> ReLU -> mean over tokens -> fc2 (16 -> 10)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.emb(ids))).mean(1))  # (B, T) -> (B, 10)


def test_a_token_model_prunes_its_embedding_with_the_first_layer() -> None:
    ids = InputSpec((TensorInput((16,), torch.int64, 50),))
    variant = get_transformation("prune_channels").apply(
        Bag(), 0.5, Context(inputs=ids, batch_size=2, mode=Mode.TRAIN, device=torch.device("cpu"),
                            threads=1))
    m = variant.module
    assert (m.emb.embedding_dim, m.fc1.in_features, m.fc1.out_features, m.fc2.in_features,
            m.fc2.out_features) == (4, 4, 8, 8, 10)
    # 16 tokens: fc1 16 * 4*8 = 512 MACs, fc2 8*10 = 80 -> 592 (was 16 * 8*16 + 16*10 = 2208)
    assert count(m, ids).total().macs == 592


def test_padding_shortcut_groups_are_kept_whole() -> None:
    """The CIFAR ResNets' shortcut pads the channels with zeros (option A), which the tracer would
    map channel i to channel i: the residual stream's groups are kept whole, and each block's inner
    channels (conv1 out, bn1, conv2 in) are pruned -- a network that still runs."""
    from dnncost.models import create_model

    model = create_model("resnet20")
    variant = prune(model, 0.5, Mode.TRAIN, (3, 32, 32))
    assert "groups through padding or indexing along the channels kept whole" in variant.note
    blocks = [m for m in variant.module.modules() if hasattr(m, "conv1") and hasattr(m, "conv2")]
    assert len(blocks) == 9
    for block in blocks:
        assert block.conv1.out_channels == block.conv2.in_channels == block.conv2.out_channels // 2
    assert variant.module(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_a_runaway_computation_is_stopped_by_its_budget() -> None:
    import time

    from dnncost.whatif._budget import OverBudget, budget, resident_bytes

    with pytest.raises(OverBudget, match="ran past 0.3 s"):
        with budget(seconds=0.3, memory_bytes=2**40):
            while True:
                pass
    if resident_bytes() is None:
        pytest.skip("resident memory is not readable here")
    grown: list[bytes] = []
    with pytest.raises(OverBudget, match="grew past 0.0 GiB"):  # 32 MiB, printed to 0.1 GiB
        with budget(seconds=60, memory_bytes=32 * 2**20):
            while True:  # 1 MiB every 10 ms: at most ~50 MiB more before a tick sees it
                grown.append(b"x" * 2**20)
                time.sleep(0.01)
    assert len(grown) >= 32
