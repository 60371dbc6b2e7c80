"""Reduced precision (Micikevicius et al. 2018, mixed precision): the forward of every step under
torch.autocast in bfloat16 or float16, where the device runs it. Counted with the whole network in
that dtype (autocast keeps a few ops, e.g. reductions and normalisation, in float32). With
``--train`` the trained network is trained again under the same autocast -- except float16 on a
CPU, where it is validated under that autocast instead: its step is timed, but training it runs
~20x slower than float32 (few CPU kernels run float16 natively), over twice as long as all the
other trained transformations together.

A CPU without native kernels for the dtype (oneDNN's check: AVX512-FP16 or AMX-FP16 for float16,
AVX512-BF16 or AMX for bfloat16) emulates it, 10-35x slower than float32: the variant says so
(``Variant.emulated``) and is timed with fewer pairs."""
from __future__ import annotations

import torch
from torch import nn

from dnncost.whatif.registry import Context, NotApplicable, Variant, first_line, register


def _native_on_cpu(dtype: torch.dtype) -> bool:
    """True when oneDNN runs ``dtype`` natively on this CPU; False when it emulates it or cannot say."""
    # source: torch/_inductor/utils.py is_mkldnn_bf16_supported / is_mkldnn_fp16_supported
    check = {torch.float16: "_is_mkldnn_fp16_supported",
             torch.bfloat16: "_is_mkldnn_bf16_supported"}[dtype]
    try:
        return bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):  # a torch without the check: assume emulated
        return False


def emulation(dtype: torch.dtype, device: torch.device) -> str:
    """Why ``device`` emulates ``dtype``'s kernels, or "" where it runs them natively."""
    if device.type != "cpu" or _native_on_cpu(dtype):
        return ""
    name = str(dtype).removeprefix("torch.")
    return f"this CPU has no native {name} kernels (emulated)"

COUNT_NOTE = "counted with the whole network in {dtype}; autocast keeps some ops in float32"
CPU_FP16_NOT_TRAINED = ("fp16 training on CPU is not fast -- few CPU kernels run float16 natively; "
                        "bf16 is trained")
# source: measured, README's whatif table (2026-12-01, AMD EPYC): resnet20's fp16 training step
# 19.6x the float32 one (bf16 0.78x): fp16's 3 epochs cost ~59 float32 epochs, over twice the
# other 8 trained transformations' 3 epochs each at their time ratios (0.77-1.27x, ~24) together


def autocast_variant(model: nn.Module, dtype: torch.dtype, context: Context) -> Variant:
    """``model`` run under autocast(``dtype``) on the context's device, if that device can."""
    name = str(dtype).removeprefix("torch.")
    device = context.device
    if context.precision.autocast is not None:
        raise NotApplicable(f"the original already runs under {context.precision.autocast} autocast")
    if context.precision.dtype not in (None, "float32"):
        raise NotApplicable(f"the original's parameters are {context.precision.dtype}; autocast "
                            "lowers float32 operations only")
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise NotApplicable(f"{torch.cuda.get_device_name(device)} does not support bfloat16")
    if not torch.amp.is_autocast_available(device.type):
        raise NotApplicable(f"torch has no autocast for {device.type}")
    one = context.make_inputs(1)
    try:  # one small forward: some builds lack kernels for a dtype on a device
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            model.to(device).eval()(*one.args, **one.kwargs)
    except RuntimeError as exc:
        raise NotApplicable(f"{name} autocast fails on {device}: {first_line(exc, limit=160)}") from exc
    cpu_fp16 = device.type == "cpu" and dtype is torch.float16
    return Variant(model, autocast=dtype, count_dtype=dtype, note=f"autocast {name} on {device.type}",
                   kernels_may_lack=True, count_note=COUNT_NOTE.format(dtype=name),
                   emulated=emulation(dtype, device),
                   not_trained=CPU_FP16_NOT_TRAINED if cpu_fp16 else "")


@register("bf16", summary="bfloat16 autocast for every step",
          emulation=lambda device: emulation(torch.bfloat16, device))
def bf16(model: nn.Module, value: float | None, context: Context) -> Variant:
    """The network under bfloat16 autocast."""
    return autocast_variant(model, torch.bfloat16, context)


@register("fp16", summary="float16 autocast for every step (no loss scaling)",
          emulation=lambda device: emulation(torch.float16, device))
def fp16(model: nn.Module, value: float | None, context: Context) -> Variant:
    """The network under float16 autocast."""
    return autocast_variant(model, torch.float16, context)
