"""int8 quantisation with torch.ao (Jacob et al. 2018), CPU validation step only.

Two flows, tried in order:

1. static post-training quantisation through FX graph mode: the network is symbolically traced,
   observers are placed by the default x86 qconfig mapping (convolutions, linear layers and what
   fuses with them), a calibration pass runs CALIBRATION_BATCHES batches -- random ones from the
   input spec, or training images under ``--train`` -- and the network is converted to int8 kernels;
   one forward of the converted network checks that the kernels exist for every op it kept int8;
2. where that fails (a forward FX cannot trace, keyword inputs, an op without an int8 kernel),
   dynamic quantisation of the Linear, LSTM and GRU layers (weights int8, activations quantised on
   the fly), which needs no tracing.

When neither applies (static failed and there is no such layer) the transformation is not
applicable, with the static flow's failure in one line. torch.ao.quantization is deprecated in the
torch this runs on and warns at every call; its warnings are silenced at the call, and torch.fx's own
print of a traceback when a traced forward fails is kept off the terminal -- the reason is reported
in one line instead. With ``--train`` the trained network is quantised and validated: int8 kernels
have no backward, so it is not trained again."""
from __future__ import annotations

import contextlib
import copy
import io
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from dnncost.core.inputs import ModelInputs
from dnncost.core.kinds import Mode
from dnncost.whatif._modules import fast_path_linears, weights_read_directly
from dnncost.whatif.registry import (
    Context,
    NotApplicable,
    Training,
    Variant,
    first_line,
    register,
)

CALIBRATION_BATCHES = 4  # source: our choice; the batches only fix the observers' ranges
DYNAMIC = (nn.Linear, nn.LSTM, nn.GRU)  # source: torch.ao.quantization.quantize_dynamic's default
# qconfig_spec (Linear, LSTM, GRU and their cells; networks hold the layers)
QUANT_NOTE = ("FLOPs and bytes counted on the float network (the counter does not see quantised "
              "kernels; int8 executes the same multiply-accumulates)")


@contextlib.contextmanager
def quiet_quantisation() -> Iterator[None]:
    """torch.ao's deprecation and observer warnings silenced, and torch.fx's printed traceback of a
    failing traced forward (GraphModule prints it to stderr before raising) kept off the terminal."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def static_fx(model: nn.Module, context: Context) -> nn.Module:
    """Static int8 through FX graph mode with the default x86 qconfig, calibrated on
    CALIBRATION_BATCHES of the context's batches (positional inputs only)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    batches = context.calibration_batches(CALIBRATION_BATCHES)
    if batches[0].kwargs:
        raise NotApplicable("FX calibration passes positional inputs only; these are keyword inputs")
    model.eval()
    with quiet_quantisation():
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), tuple(batches[0].args))
        with torch.no_grad():
            for batch in batches:
                prepared(*batch.args)
        return convert_fx(prepared)


def dynamic(model: nn.Module, inputs: ModelInputs) -> tuple[nn.Module, dict[str, int]]:
    """Dynamic int8 of ``model``'s Linear, LSTM and GRU layers (those whose weights nothing else
    reads: not a fused inference path's, not read by their parent); the quantised copy and how
    many layers of each kind."""
    kept = weights_read_directly(model, DYNAMIC, inputs)
    layers = {name: type(m).__name__ for name, m in model.named_modules()
              if type(m) in DYNAMIC and name not in kept}
    if not layers:
        return model, {}
    with quiet_quantisation():
        quantised = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), set(layers),
                                                           dtype=torch.qint8)
    kinds: dict[str, int] = {}
    for kind in layers.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    return quantised, kinds


@register("int8", modes=frozenset({Mode.EVAL}), training=Training.EVALUATE,
          summary="int8 post-training quantisation (torch.ao): static FX graph mode with calibration, "
                  "else dynamic for Linear/LSTM/GRU; CPU validation step")
def int8(model: nn.Module, value: float | None, context: Context) -> Variant:
    """The network quantised to int8 (see the module docstring)."""
    if context.device.type != "cpu":
        raise NotApplicable(f"torch.ao int8 kernels run on the CPU, not {context.device}")
    if context.precision.dtype not in (None, "float32"):
        raise NotApplicable(f"post-training quantisation starts from float32; the original runs in "
                            f"{context.precision.dtype}")
    float_model = copy.deepcopy(model)
    one = context.make_inputs(1, device="cpu")
    calibrated = "training" if context.calibration else "random"
    with quiet_quantisation():
        try:
            quantised = static_fx(model, context)
            with torch.no_grad():  # a network that traces may still fail in a quantised kernel
                quantised(*one.args, **one.kwargs)
            return Variant(quantised, count_module=float_model, count_note=QUANT_NOTE,
                           note=f"static int8 (FX graph mode, x86 qconfig, calibrated on {calibrated} "
                                "batches)")
        except Exception as exc:  # noqa: BLE001 -- FX fails in many ways; the reason is reported
            static_reason = f"{type(exc).__name__}: {first_line(exc, limit=160)}" \
                if not isinstance(exc, NotApplicable) else str(exc)
        quantised, kinds = dynamic(float_model, one)
        fused = len(fast_path_linears(float_model))
        if not kinds:
            raise NotApplicable(f"static FX quantisation failed ({static_reason}) and there is no "
                                "Linear, LSTM or GRU layer for dynamic quantisation"
                                + (" outside TransformerEncoderLayer's fused path" if fused else ""))
        try:
            with torch.no_grad():
                quantised.eval()(*one.args, **one.kwargs)
        except Exception as exc:  # noqa: BLE001 -- a kernel missing for this network: the reason
            raise NotApplicable(f"static FX quantisation failed ({static_reason}) and so does the "
                                f"dynamic one ({type(exc).__name__}: {first_line(exc, limit=120)})"
                                ) from exc
    layers = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    kept = f"; {fused} Linear in TransformerEncoderLayer kept float (fused path)" if fused else ""
    return Variant(quantised, count_module=float_model, count_note=QUANT_NOTE,
                   note=f"dynamic int8 of {layers} only{kept} (static FX failed: {static_reason})")
