"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
recognition", Sec. II.B and Table I): 32x32 grey-scale input, C1-S2-C3-S4-C5-F6-output.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dnncost.models.registry import ModelInfo, register_model

_PAPER = "LeCun et al., Gradient-based learning applied to document recognition"

# source: LeCun et al. 1998, Table I (which S2 maps each C3 map sees). Maps 0-5 see three
# contiguous S2 maps, 6-11 four contiguous ones, 12-14 four discontinuous ones, 15 all six.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class PartialC3(nn.Module):
    """C3 with the paper's connection table: 1,516 weights and 150,000 MACs instead of 2,416/240,000.

    The C3 maps are grouped by how many S2 maps they see; each group gathers its input maps with one
    ``index_select`` and convolves them with one grouped convolution, so a counter sees exactly the
    multiply-accumulates the table implies. Output maps come in the table's order.
    """

    def __init__(self, kernel_size: int = 5) -> None:
        super().__init__()
        fan_ins = sorted({len(maps) for maps in C3_TABLE})  # [3, 4, 6]
        self.fan_ins = tuple(fan_ins)
        self.convs = nn.ModuleList()
        for fan_in in fan_ins:
            rows = [maps for maps in C3_TABLE if len(maps) == fan_in]
            self.register_buffer(f"index_{fan_in}", torch.tensor([m for maps in rows for m in maps]),
                                 persistent=False)
            self.convs.append(nn.Conv2d(fan_in * len(rows), len(rows), kernel_size, groups=len(rows)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 6, 14, 14) -> (N, 16, 10, 10)
        outs = [conv(x.index_select(1, getattr(self, f"index_{fan_in}")))
                for fan_in, conv in zip(self.fan_ins, self.convs, strict=True)]
        return torch.cat(outs, dim=1)


class LeNet5(nn.Module):
    """LeNet-5 in its common modern form.

    Adaptations from the paper, kept deliberately: S2/S4 are plain 2x2 average pooling (the paper's
    subsampling layers also have a trainable coefficient and bias per map: 12 + 32 weights); the
    activation is tanh (the paper's is 1.7159 tanh(2a/3)); the output layer is a linear layer with
    bias (the paper's has 84x10 Euclidean RBF units). C3 is fully connected unless ``c3_table`` is
    set, in which case it follows the paper's Table I (:class:`PartialC3`).
    """

    def __init__(self, num_classes: int = 10, *, in_channels: int = 1, c3_table: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.Tanh(),             # C1: 32x32 -> 6x28x28
            nn.AvgPool2d(2),                                     # S2: -> 6x14x14
            PartialC3() if c3_table else nn.Conv2d(6, 16, 5),    # C3: -> 16x10x10
            nn.Tanh(),
            nn.AvgPool2d(2),                                     # S4: -> 16x5x5
            nn.Conv2d(16, 120, 5), nn.Tanh(),                    # C5: -> 120x1x1
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(120, 84), nn.Tanh(),                       # F6
            nn.Linear(84, num_classes),                          # output
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 1, 32, 32) -> (N, num_classes)
        return self.classifier(self.features(x))


_COMMON: dict[str, Any] = dict(family="lenet", paper=_PAPER, year=1998, input_shape=(1, 32, 32),
                               num_classes=10, size="mnist")
# source: LeCun et al. 1998, Sec. II: LeNet-5 "contains 340,908 connections, but only 60,000
# trainable free parameters because of the weight sharing". Connections are not MACs (they count
# biases and the subsampling layers), so no paper MAC figure is entered; the tests hand-count MACs.
_SOURCE = "LeCun et al. 1998, Sec. II (60,000 trainable free parameters)"


@register_model(ModelInfo("lenet5", **_COMMON, paper_params=60_000, source=_SOURCE,
                          notes="Fully connected C3 (2,416 weights, the common form) where the paper's table "
                                "gives 1,516: 61,706 params, +2.8% on the paper's 60,000."))
def lenet5(**kwargs: Any) -> nn.Module:
    """LeNet-5 with a fully connected C3 (see :class:`LeNet5`)."""
    return LeNet5(**kwargs)


@register_model(ModelInfo("lenet5_partial", **_COMMON, paper_params=60_000, source=_SOURCE,
                          notes="C3 follows the paper's Table I connection table."))
def lenet5_partial(**kwargs: Any) -> nn.Module:
    """LeNet-5 with the paper's partially connected C3 (Table I)."""
    return LeNet5(c3_table=True, **kwargs)
