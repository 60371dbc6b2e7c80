"""``torch.compile`` (TorchInductor): the same network, fused and code-generated. Compiling happens
in the first step, which is cut off after a time limit (a slow compile on a small machine is reported
as not applicable, with the limit); counted eagerly. Run on request only (named in ``--only``): the
compilation alone takes longer than the rest of a default run."""
from __future__ import annotations

import shutil

import torch
from torch import nn

from dnncost.core.device import quiet_cpp_extension_notice
from dnncost.whatif.registry import Context, NotApplicable, Training, Variant, register

COMPILE_LIMIT_S = 90.0  # source: our choice; a slower compile is a verdict on this machine
ON_REQUEST = ("its first step compiles the network, longer than a whole default run on 2 CPU cores "
              "(resnet20's training step: cut off at 90 s on a loaded 2-core machine)")
# source: measured, dnncost whatif resnet20 --only compile on 2 shared cores
CXX = ("c++", "g++", "clang++")  # source: torch._inductor.cpp_builder looks for these on the CPU


@register("compile", training=Training.ORIGINAL, on_request=ON_REQUEST, structural=True,
          summary="torch.compile (inductor), first step time-limited")
def compile_model(model: nn.Module, value: float | None, context: Context) -> Variant:
    """``model`` wrapped by torch.compile; the eager module is what is counted."""
    if context.device.type == "cpu" and not any(shutil.which(c) for c in CXX):
        raise NotApplicable("inductor needs a C++ compiler on the CPU and none is on PATH")
    quiet_cpp_extension_notice()
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]  # an OptimizedModule
    return Variant(compiled, count_module=model, first_call_limit_s=COMPILE_LIMIT_S,
                   count_note="counted eagerly (inductor fuses ops but keeps the arithmetic)",
                   note="torch.compile default mode (inductor)")
