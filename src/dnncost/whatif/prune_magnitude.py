"""Unstructured magnitude pruning (Han et al. 2015): zero the smallest weights of every convolution
and linear layer (torch.nn.utils.prune, global L1, made permanent). The kernels stay dense, so the
executed FLOPs do not change; the nominal FLOPs -- what a sparse kernel would do -- are reported
beside them."""
from __future__ import annotations

from torch import nn
from torch.nn.utils import prune

from dnncost.counting.cost import CostReport
from dnncost.whatif.registry import Context, NotApplicable, Parameter, Training, Variant, register

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def nominal_flops(report: CostReport, density: dict[str, float]) -> int:
    """``report``'s FLOPs with the multiply-accumulates of each pruned module (path -> fraction of
    weights left) scaled by its density: 2 FLOPs per MAC skipped. Applied to every phase, as a
    sparse kernel would skip the zero weights in forward and both backward products."""
    skipped = sum(2 * r.cost.macs * (1 - density[r.module])
                  for r in report.records if r.module in density)
    return round(report.total().flops - skipped)


@register("prune_magnitude", parameter=Parameter.RATIO, defaults=(0.5, 0.9),
          training=Training.FINE_TUNE_MASKED,
          summary="unstructured pruning: zero this fraction of conv/linear weights (global L1); "
                  "dense kernels, so FLOPs are saved only nominally")
def prune_magnitude(model: nn.Module, ratio: float | None, context: Context) -> Variant:
    """Zero ``ratio`` of all conv/linear weights by global magnitude, permanently."""
    assert ratio is not None
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise NotApplicable("no convolution or linear layer to prune")
    prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                              amount=ratio)
    density = {}
    for name, m in layers:
        prune.remove(m, "weight")  # permanent: weight is a plain parameter again, zeros included
        density[name] = float((m.weight != 0).sum()) / m.weight.numel()
    return Variant(model, nominal_flops=lambda report: nominal_flops(report, density),
                   note=f"{ratio:.0%} of {len(layers)} layers' weights zeroed (global L1); dense "
                        "kernels execute every zero; a training step refills the zeros (no mask)")
