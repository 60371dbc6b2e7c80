"""int8 quantisation with torch.ao (Jacob et al. 2018), CPU validation step only: static post-training
quantisation through FX graph mode (convolutions and linear layers, calibrated on random batches),
falling back to dynamic quantisation of the linear layers where the network does not trace."""
from __future__ import annotations

import copy

import torch
from torch import nn

from dnncost.measuring.step import Mode, random_batch
from dnncost.whatif.registry import Context, NotApplicable, Variant, register

CALIBRATION_BATCHES = 4  # source: our choice; random inputs only fix the observers' ranges
QUANT_NOTE = ("FLOPs and bytes counted on the float network (the counter does not see quantised "
              "kernels; int8 executes the same multiply-accumulates)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def static_fx(model: nn.Module, context: Context) -> nn.Module:
    """Static int8 through FX graph mode with the default x86 qconfig, calibrated on random data."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model.eval()
    example = random_batch(context.input_shape, batch_size=context.batch_size)
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (example,))
    with torch.no_grad():
        for seed in range(CALIBRATION_BATCHES):
            prepared(random_batch(context.input_shape, batch_size=context.batch_size, seed=seed))
    return convert_fx(prepared)


@register("int8", modes=frozenset({Mode.EVAL}),
          summary="int8 post-training quantisation (torch.ao): static FX for conv+linear, else "
                  "dynamic for linear; CPU validation step")
def int8(model: nn.Module, value: float | None, context: Context) -> Variant:
    """The network quantised to int8 (see the module docstring)."""
    if context.device.type != "cpu":
        raise NotApplicable(f"torch.ao int8 kernels run on the CPU, not {context.device}")
    float_model = copy.deepcopy(model)
    try:
        quantised = static_fx(model, context)
        with torch.no_grad():  # a network that traces may still fail in a quantised kernel
            quantised(random_batch(context.input_shape, batch_size=1))
        return Variant(quantised, count_module=float_model, count_note=QUANT_NOTE,
                       note="static int8 (FX graph mode, x86 qconfig, calibrated on random batches)")
    except Exception as exc:  # noqa: BLE001 -- FX tracing fails in many ways; the reason is reported
        static_reason = _first_line(exc)
    if not any(isinstance(m, nn.Linear) for m in float_model.modules()):
        raise NotApplicable(f"static FX quantisation failed ({static_reason}) and there is no "
                            "linear layer for dynamic quantisation")
    dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(float_model), {nn.Linear},
                                                     dtype=torch.qint8)
    return Variant(dynamic, count_module=float_model, count_note=QUANT_NOTE,
                   note=f"dynamic int8, linear layers only (static FX failed: {static_reason})")
