"""Reduced precision (Micikevicius et al. 2018, mixed precision): the forward of every step under
torch.autocast in bfloat16 or float16, where the device runs it. Counted with the whole network in
that dtype (autocast keeps a few ops, e.g. reductions and normalisation, in float32). With
``--train`` the trained network is trained again under the same autocast -- except float16 on a
CPU, where it is validated under that autocast instead: its step is timed, but training it runs
~20x slower than float32 (few CPU kernels run float16 natively), over twice as long as all the
other trained transformations together.

A CPU emulates a dtype where it has no native kernels for it (oneDNN's check: AVX512-FP16 or
AMX-FP16 for float16, AVX512-BF16 or AMX for bfloat16) -- and float16 training on any CPU, whose
backward runs mostly without float16 kernels even where oneDNN has them: the variant says so
(``Variant.emulated``) and is timed with fewer pairs."""
from __future__ import annotations

import torch
from torch import nn

from dnncost.core.kinds import Mode
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


CPU_FP16_TRAINING = "float16 training on a CPU runs mostly without float16 kernels (emulated)"
# source: measured, resnet20's training step under fp16 autocast: 19.2x float32 on an AMD EPYC
# without float16 kernels (README's whatif table) and 13.1x on a Xeon with AVX512-FP16 and AMX
# (dnncost whatif resnet20 on a loaded 2-core machine; its evaluation forward ran no slower)


def emulation(dtype: torch.dtype, device: torch.device, mode: Mode) -> str:
    """Why ``device`` emulates ``dtype``'s kernels in a ``mode`` step, or "" where it runs them
    natively."""
    if device.type != "cpu":
        return ""
    if not _native_on_cpu(dtype):
        return f"this CPU has no native {str(dtype).removeprefix('torch.')} kernels (emulated)"
    return CPU_FP16_TRAINING if dtype is torch.float16 and mode is Mode.TRAIN else ""

COUNT_NOTE = "counted with the whole network in {dtype}; autocast keeps some ops in float32"
CPU_FP16_NOT_TRAINED = ("fp16 training on CPU is not fast -- few CPU kernels run float16 natively; "
                        "bf16 is trained")
# source: measured, docs/results-amd-epyc.md's whatif table: resnet20's fp16 training step
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
                   emulated=emulation(dtype, device, context.mode),
                   not_trained=CPU_FP16_NOT_TRAINED if cpu_fp16 else "")


@register("bf16", summary="bfloat16 autocast for every step",
          emulation=lambda device, mode: emulation(torch.bfloat16, device, mode))
def bf16(model: nn.Module, value: float | None, context: Context) -> Variant:
    """The network under bfloat16 autocast."""
    return autocast_variant(model, torch.bfloat16, context)


@register("fp16", summary="float16 autocast for every step (no loss scaling)",
          emulation=lambda device, mode: emulation(torch.float16, device, mode))
def fp16(model: nn.Module, value: float | None, context: Context) -> Variant:
    """The network under float16 autocast."""
    return autocast_variant(model, torch.float16, context)
