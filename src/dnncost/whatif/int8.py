"""int8 quantisation with torch.ao (Jacob et al. 2018), CPU validation step only: static post-training
quantisation through FX graph mode (convolutions and linear layers, calibrated on a few batches --
random ones from the input spec, or training images under ``--train``), falling back to dynamic
quantisation of the linear layers where the network does not trace. With ``--train`` the trained
network is quantised and validated: int8 kernels have no backward, so it is not trained again."""
from __future__ import annotations

import copy

import torch
from torch import nn

from dnncost.core.step import Mode
from dnncost.whatif._modules import fast_path_linears
from dnncost.whatif.registry import (
    Context,
    NotApplicable,
    Training,
    Variant,
    first_line,
    register,
)

CALIBRATION_BATCHES = 4  # source: our choice; the batches only fix the observers' ranges
QUANT_NOTE = ("FLOPs and bytes counted on the float network (the counter does not see quantised "
              "kernels; int8 executes the same multiply-accumulates)")


def static_fx(model: nn.Module, context: Context) -> nn.Module:
    """Static int8 through FX graph mode with the default x86 qconfig, calibrated on
    CALIBRATION_BATCHES of the context's batches (positional inputs only)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    batches = context.calibration_batches(CALIBRATION_BATCHES)
    if batches[0].kwargs:
        raise NotApplicable("FX calibration passes positional inputs only; these are keyword inputs")
    model.eval()
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), tuple(batches[0].args))
    with torch.no_grad():
        for batch in batches:
            prepared(*batch.args)
    return convert_fx(prepared)


@register("int8", modes=frozenset({Mode.EVAL}), training=Training.EVALUATE,
          summary="int8 post-training quantisation (torch.ao): static FX for conv+linear, else "
                  "dynamic for linear; CPU validation step")
def int8(model: nn.Module, value: float | None, context: Context) -> Variant:
    """The network quantised to int8 (see the module docstring)."""
    if context.device.type != "cpu":
        raise NotApplicable(f"torch.ao int8 kernels run on the CPU, not {context.device}")
    if context.precision.dtype not in (None, "float32"):
        raise NotApplicable(f"post-training quantisation starts from float32; the original runs in "
                            f"{context.precision.dtype}")
    float_model = copy.deepcopy(model)
    one = context.make_inputs(1, device="cpu")
    try:
        quantised = static_fx(model, context)
        with torch.no_grad():  # a network that traces may still fail in a quantised kernel
            quantised(*one.args, **one.kwargs)
        return Variant(quantised, count_module=float_model, count_note=QUANT_NOTE,
                       note="static int8 (FX graph mode, x86 qconfig, calibrated on "
                            f"{'training' if context.calibration else 'random'} batches)")
    except Exception as exc:  # noqa: BLE001 -- FX tracing fails in many ways; the reason is reported
        static_reason = first_line(exc, limit=160)
    fused = fast_path_linears(float_model)
    linears = {name for name, m in float_model.named_modules()
               if type(m) is nn.Linear and name not in fused}
    if not linears:
        raise NotApplicable(f"static FX quantisation failed ({static_reason}) and there is no "
                            "linear layer for dynamic quantisation"
                            + (" outside TransformerEncoderLayer's fused path" if fused else ""))
    dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(float_model), linears,
                                                     dtype=torch.qint8)
    kept = f"; {len(fused)} in TransformerEncoderLayer kept float (fused path)" if fused else ""
    return Variant(dynamic, count_module=float_model, count_note=QUANT_NOTE,
                   note=f"dynamic int8, {len(linears)} linear layers only{kept} (static FX failed: "
                        f"{static_reason})")
