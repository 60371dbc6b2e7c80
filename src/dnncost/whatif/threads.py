"""Thread count: the same network with another number of intra-op CPU threads."""
from __future__ import annotations

import os

from torch import nn

from dnncost.whatif.registry import Context, NotApplicable, Parameter, Training, Variant, register


@register("threads", parameter=Parameter.COUNT, defaults=(None,), training=Training.ORIGINAL,
          structural=True,
          summary="another intra-op thread count (default: 1, or 2 when the original runs on 1)")
def threads(model: nn.Module, value: float | None, context: Context) -> Variant:
    """``model`` run with ``value`` threads."""
    if context.device.type != "cpu":
        raise NotApplicable(f"the thread count sets CPU parallelism; the step runs on {context.device}")
    if value is not None:
        n = int(value)
    elif context.threads > 1:
        n = 1
    elif (os.cpu_count() or 1) > 1:
        n = 2
    else:
        raise NotApplicable("this machine has one CPU core, so no other thread count to compare")
    if n == context.threads:
        raise NotApplicable(f"{n} threads is the original's setting")
    return Variant(model, threads=n, note=f"{context.threads} -> {n} intra-op threads")
