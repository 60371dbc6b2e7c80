"""AlexNet (Krizhevsky, Sutskever & Hinton 2012): torchvision's single-tower form, the original
grouped two-tower form, and a CIFAR-sized form.
"""
from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import nn

from dnncost.models.registry import ModelInfo, register_model

_PAPER = "Krizhevsky et al., ImageNet classification with deep convolutional neural networks"
# source: Krizhevsky et al. 2012, abstract: "The neural network, which has 60 million parameters".
_PARAMS = 60_000_000
_SOURCE = "Krizhevsky et al. 2012, abstract (60 million parameters); the paper prints no MAC count"


def _lrn() -> nn.LocalResponseNorm:
    """The paper's response normalisation (Sec. 3.3: k=2, n=5, alpha=1e-4, beta=0.75).

    torch divides alpha by n, the paper does not, so torch's alpha is the paper's times n.
    """
    size = 5  # source: Krizhevsky et al. 2012, Sec. 3.3 (n = 5)
    return nn.LocalResponseNorm(size, alpha=1e-4 * size, beta=0.75, k=2.0)


class AlexNet2012(nn.Module):
    """The network of the 2012 paper (Fig. 2), on one device.

    The paper splits it over two GPUs that talk only at conv3 and the fully connected layers; that is
    exactly a grouped convolution (groups=2) at conv2, conv4 and conv5 and full connections at conv3
    and fc6-fc8, which is how it is written here (96-256-384-384-256 kernels, 60.97M parameters).
    Input is 227x227: the paper says 224, but 11x11 kernels at stride 4 give its 55x55 maps only
    from 227. LRN after conv1/conv2, overlapping 3x3/2 max pooling, dropout on fc6 and fc7 outputs.
    """

    def __init__(self, num_classes: int = 1000, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), _lrn(),       # 227 -> 96x55x55
            nn.MaxPool2d(3, 2),                                                  # -> 27x27
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), _lrn(),  # 256x27x27
            nn.MaxPool2d(3, 2),                                                  # -> 13x13
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),            # both towers
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True),  # 256x13x13
            nn.MaxPool2d(3, 2),                                                  # -> 256x6x6
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 227, 227) -> (N, num_classes)
        return self.classifier(self.features(x))


class AlexNetCifar(nn.Module):
    """AlexNet's shape (5 conv + 3 fully connected layers, torchvision's 64-192-384-256-256 kernels,
    overlapping 3x3/2 max pooling, ReLU, dropout) adapted to 32x32 inputs.

    Adaptations: conv1 is 3x3 stride 2 (11x11 stride 4 would leave 8x8 maps from a 32x32 image);
    pooling pads by 1 so maps go 16 -> 8 -> 4 -> 2; the fully connected layers are 1024 wide, not
    4096, for the 2x2x256 = 1024 features; no LRN (as in torchvision's AlexNet).
    """

    def __init__(self, num_classes: int = 10, *, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),    # 32 -> 64x16x16
            nn.MaxPool2d(3, 2, padding=1),                                       # -> 8x8
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),                                       # -> 192x4x4
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1),                                       # -> 256x2x2
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(256 * 2 * 2, 1024), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(1024, 1024), nn.ReLU(inplace=True),
            nn.Linear(1024, num_classes),
        )
        # The paper's init (Sec. 5: N(0, 0.01) weights, biases 1 in conv2, 4, 5 and the hidden
        # fully connected layers) was tuned for 227x227 inputs and 90 epochs; on digits in 3
        # epochs it, and PyTorch's default for the convolutions, stayed near chance (issue 13).
        # He et al. 2015's init (Sec. 2.2, derived for ReLU stacks like this one) for the
        # convolutions with zero biases trains it; the fully connected layers keep PyTorch's
        # default (as torchvision's AlexNet does), He init there learned more slowly (86.1%).
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 32, 32) -> (N, num_classes)
        return self.classifier(self.features(x))


@register_model(ModelInfo(
    "alexnet", family="alexnet", paper=_PAPER, year=2012, input_shape=(3, 224, 224),
    num_classes=1000, size="imagenet", paper_params=_PARAMS, source=_SOURCE,
    notes="torchvision's single-tower form (Krizhevsky 2014, 'One weird trick': "
          "64-192-384-256-256 kernels, no LRN): 61.10M params, +1.8% on the 2012 paper."))
def alexnet(**kwargs: Any) -> nn.Module:
    """torchvision's AlexNet, random weights."""
    return torchvision.models.alexnet(weights=None, **kwargs)


@register_model(ModelInfo("alexnet_2012", family="alexnet", paper=_PAPER, year=2012,
                          input_shape=(3, 227, 227), num_classes=1000, size="imagenet",
                          paper_params=_PARAMS, source=_SOURCE,
                          notes="The paper's two-tower network as grouped convolutions; input 227x227."))
def alexnet_2012(**kwargs: Any) -> nn.Module:
    """The original 2012 AlexNet (see :class:`AlexNet2012`)."""
    return AlexNet2012(**kwargs)


@register_model(ModelInfo("alexnet_cifar", family="alexnet", paper=_PAPER, year=2012,
                          input_shape=(3, 32, 32), num_classes=10, size="cifar",
                          notes="CIFAR adaptation; see AlexNetCifar for each change."))
def alexnet_cifar(**kwargs: Any) -> nn.Module:
    """AlexNet for 32x32 inputs (see :class:`AlexNetCifar`)."""
    return AlexNetCifar(**kwargs)
