"""Depthwise-separable replacement (MobileNet, Howard et al. 2017): each dense 3x3 convolution becomes
a 3x3 depthwise convolution followed by a 1x1 pointwise one. An architecture change: the new layers
are freshly initialised, so accuracy needs retraining (see ``--train``)."""
from __future__ import annotations

from torch import nn

from dnncost.whatif._modules import conv_like, replace_submodule, weights_read_directly
from dnncost.whatif.registry import Context, NotApplicable, Variant, register

MIN_IN_CHANNELS = 4  # source: Howard et al. 2017, Table 1: the first layer (3 RGB channels) stays dense


def separable(conv: nn.Conv2d) -> nn.Sequential:
    """``conv`` (dense 3x3) as depthwise 3x3 (same stride/padding/dilation) + pointwise 1x1."""
    depthwise = conv_like(conv, in_channels=conv.in_channels, out_channels=conv.in_channels,
                          groups=conv.in_channels, bias=False)
    pointwise = conv_like(conv, in_channels=conv.in_channels, out_channels=conv.out_channels,
                          kernel_size=1, keep_geometry=False)
    return nn.Sequential(depthwise, pointwise)


@register("depthwise_separable", structural=True,
          summary="replace each dense 3x3 convolution by depthwise 3x3 + pointwise 1x1 "
                  "(new weights; the RGB input layer stays dense)")
def depthwise_separable(model: nn.Module, value: float | None, context: Context) -> Variant:
    """Replace every dense 3x3 convolution with at least MIN_IN_CHANNELS inputs (except one whose
    weight its parent reads directly instead of calling it)."""
    targets = [(name, m) for name, m in model.named_modules()
               if type(m) is nn.Conv2d and m.groups == 1 and m.kernel_size == (3, 3)
               and m.in_channels >= MIN_IN_CHANNELS]
    if not targets:
        raise NotApplicable("no dense 3x3 convolution with at least "
                            f"{MIN_IN_CHANNELS} input channels")
    first = next(model.parameters())
    keep = weights_read_directly(model, (nn.Conv2d,), context.make_inputs(1, device=first.device))
    targets = [(name, m) for name, m in targets if name not in keep]
    if not targets:
        raise NotApplicable(f"every dense 3x3 convolution with at least {MIN_IN_CHANNELS} input "
                            "channels has its weight read directly by its parent")
    for name, m in targets:
        replace_submodule(model, name, separable(m))
    return Variant(model, note=f"{len(targets)} dense 3x3 convolutions replaced; new weights, "
                               "accuracy needs retraining")
