"""Unstructured magnitude pruning (Han et al. 2015): zero the smallest weights of every convolution
and linear layer (global L1: one threshold for all of them, made permanent). The kernels stay dense,
so the executed FLOPs do not change; the nominal FLOPs -- what a sparse kernel would do -- are
reported beside them.

The threshold is the k-th smallest magnitude (numpy's in-place partition of one float32 copy of the
magnitudes), and every weight at or below it is zeroed in place -- the selection torch.nn.utils.prune's
global_unstructured makes with L1Unstructured (k = round(ratio x weights)), ties at the threshold
zeroed too, in 4 bytes per weight: global_unstructured's masks and scores took 15x the weights
(5.4 GB for vit_b_32's 88 M weights, measured), and torch.kthvalue ~6x (a copy and its indices)."""
from __future__ import annotations

import torch
from torch import nn

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


def global_threshold(weights: list[torch.Tensor], ratio: float) -> float:
    """The magnitude at or below which ``ratio`` of all ``weights`` lie: the k-th smallest,
    k = round(ratio x their number) (-inf when k is 0), found by numpy's introselect in place on
    one float32 copy of the magnitudes."""
    magnitudes = torch.cat([w.detach().abs().flatten().float().cpu() for w in weights]).numpy()
    k = round(ratio * magnitudes.size)
    if k == 0:
        return float("-inf")
    magnitudes.partition(k - 1)  # in place: the k-th smallest now sits at k - 1
    return float(magnitudes[k - 1])


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
    threshold = global_threshold([m.weight for _, m in layers], ratio)
    density = {}
    with torch.no_grad():
        for name, m in layers:
            m.weight.masked_fill_(m.weight.abs() <= threshold, 0)
            density[name] = float((m.weight != 0).sum()) / m.weight.numel()
    return Variant(model, nominal_flops=lambda report: nominal_flops(report, density),
                   note=f"{ratio:.0%} of {len(layers)} layers' weights zeroed (global L1); dense "
                        "kernels execute every zero; a training step refills the zeros (no mask)")
