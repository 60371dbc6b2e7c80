"""Memory format: weights and the input batch in channels-last (NHWC) layout. Same function, same
FLOPs; only the layout the kernels see changes."""
from __future__ import annotations

import torch
from torch import nn

from dnncost.whatif.registry import Context, NotApplicable, Training, Variant, register


@register("channels_last", training=Training.ORIGINAL, structural=True,
          summary="weights and input in channels-last (NHWC) memory format")
def channels_last(model: nn.Module, value: float | None, context: Context) -> Variant:
    """``model`` and its input in channels_last."""
    if context.precision.channels_last:
        raise NotApplicable("the original already runs channels_last")
    dims = [t.dim() for t in context.make_inputs(1, device="meta").tensors()]  # batch included
    if 4 not in dims:
        raise NotApplicable(f"channels_last is a layout of 4-D (N, C, H, W) batches; the input "
                            f"'{context.inputs}' makes {', '.join(f'{d}-D' for d in dims) or 'no'} "
                            "tensors")
    if not any(p.dim() == 4 for p in model.parameters()):
        raise NotApplicable("no 4-D weight (2-D convolution) whose layout could change")
    return Variant(model.to(memory_format=torch.channels_last),
                   channels_last_input=True, note="weights and input batch channels_last")
