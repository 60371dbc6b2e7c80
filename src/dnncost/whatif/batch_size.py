"""Batch size: the same network at another batch size. Every ratio is per sample, so this asks
whether a larger batch buys throughput (FLOPs per sample do not change)."""
from __future__ import annotations

from torch import nn

from dnncost.whatif.registry import Context, NotApplicable, Parameter, Training, Variant, register


@register("batch_size", parameter=Parameter.COUNT, defaults=(None,), training=Training.ORIGINAL,
          structural=True,
          summary="another batch size (default: twice the given one); ratios per sample")
def batch_size(model: nn.Module, value: float | None, context: Context) -> Variant:
    """``model`` at batch size ``value`` (default 2x the run's)."""
    size = int(value) if value is not None else 2 * context.batch_size
    if size == context.batch_size:
        raise NotApplicable(f"batch size {size} is the original's")
    made = context.make_inputs(size, device="meta").batch_size  # an input factory may ignore it
    if made != size:
        raise NotApplicable(f"the input factory '{context.inputs}' makes batches of {made} when "
                            f"asked for {size}")
    return Variant(model, batch_size=size, note=f"batch {context.batch_size} -> {size}; per sample")
