"""Structured channel pruning: remove whole output channels (smallest L1 norm first, Li et al. 2017,
"Pruning filters for efficient ConvNets") from convolutions whose every consumer is known.

A built-in pruner that only touches patterns it can prove safe, and says so for the rest:

- in a plain ``nn.Sequential``: Conv2d -> [BatchNorm2d] -> channel-wise layers (ReLU, pooling,
  dropout) -> Conv2d, as in LeNet, AlexNet and VGG: the first conv's outputs, the BN and the second
  conv's inputs shrink together;
- inside a residual block (torchvision's BasicBlock/Bottleneck, dnncost's BasicBlockA): conv1 out /
  bn1 / conv2 in (and conv2 / bn2 / conv3 in a bottleneck). The block's output channels feed the
  residual addition and are kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from dnncost.models.resnet import BasicBlockA
from dnncost.whatif._modules import conv_like, count_modules
from dnncost.whatif.registry import Context, NotApplicable, Parameter, Variant, register

CHANNELWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.Sigmoid,
               nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.LocalResponseNorm)
# LocalResponseNorm mixes neighbouring channels; removing a channel changes its neighbours' sums,
# a small change of function we accept, as pruning changes the function anyway.
RESIDUAL_BLOCKS = {  # block type -> (conv, bn, next conv) attribute names inside the block
    BasicBlock: (("conv1", "bn1", "conv2"),),
    BasicBlockA: (("conv1", "bn1", "conv2"),),
    Bottleneck: (("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")),
}


@dataclass(frozen=True)
class Site:
    """One prunable place: in ``parent``, conv ``first`` (-> BN ``bn``) -> conv ``second``."""

    parent: nn.Module
    first: str
    bn: str | None
    second: str


def _dense(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and m.groups == 1


def find_sites(model: nn.Module) -> list[Site]:
    """Every conv -> conv link whose intermediate channels only those two layers (and a BN) see."""
    sites: list[Site] = []
    for module in model.modules():
        if type(module) is nn.Sequential:  # exactly Sequential: its forward is the chain
            items = list(module.named_children())
            for i, (name, layer) in enumerate(items):
                if not _dense(layer):
                    continue
                bn = None
                for other_name, other in items[i + 1:]:
                    if type(other) is nn.BatchNorm2d and bn is None \
                            and other.num_features == layer.out_channels:
                        bn = other_name
                    elif isinstance(other, CHANNELWISE):
                        continue
                    elif _dense(other) and other.in_channels == layer.out_channels:
                        sites.append(Site(module, name, bn, other_name))
                        break
                    else:
                        break
        for kind, links in RESIDUAL_BLOCKS.items():
            if type(module) is kind:
                for first, bn, second in links:
                    if _dense(getattr(module, first)) and _dense(getattr(module, second)):
                        sites.append(Site(module, first, bn, second))
    return sites


def prune_site(site: Site, ratio: float) -> None:
    """Remove ``ratio`` of the first conv's output channels (smallest L1 norm) at ``site``."""
    first: nn.Conv2d = getattr(site.parent, site.first)
    second: nn.Conv2d = getattr(site.parent, site.second)
    channels = first.out_channels
    keep_n = max(1, round(channels * (1 - ratio)))
    norms = first.weight.detach().abs().sum(dim=(1, 2, 3))  # (C_out,) L1 norm per filter
    keep = torch.sort(torch.topk(norms, keep_n).indices).values
    new_first = conv_like(first, in_channels=first.in_channels, out_channels=keep_n)
    new_second = conv_like(second, in_channels=keep_n, out_channels=second.out_channels)
    with torch.no_grad():
        new_first.weight.copy_(first.weight[keep])
        if first.bias is not None and new_first.bias is not None:
            new_first.bias.copy_(first.bias[keep])
        new_second.weight.copy_(second.weight[:, keep])
        if second.bias is not None and new_second.bias is not None:
            new_second.bias.copy_(second.bias)
    setattr(site.parent, site.first, new_first)
    setattr(site.parent, site.second, new_second)
    if site.bn is not None:
        bn: nn.BatchNorm2d = getattr(site.parent, site.bn)
        new_bn = nn.BatchNorm2d(keep_n, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                                track_running_stats=bn.track_running_stats,
                                device=new_first.weight.device, dtype=new_first.weight.dtype)
        with torch.no_grad():
            for attr in ("weight", "bias", "running_mean", "running_var"):
                old, new = getattr(bn, attr), getattr(new_bn, attr)
                if old is not None and new is not None:
                    new.copy_(old[keep])
            if bn.num_batches_tracked is not None and new_bn.num_batches_tracked is not None:
                new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
        setattr(site.parent, site.bn, new_bn)


@register("prune_channels", parameter=Parameter.RATIO, defaults=(0.25, 0.5),
          summary="structured pruning: remove this fraction of output channels (smallest L1 norm) "
                  "where every consumer is known")
def prune_channels(model: nn.Module, ratio: float | None, context: Context) -> Variant:
    """Remove ``ratio`` of the channels at every safe site (see the module docstring)."""
    assert ratio is not None  # the registry runs it at its defaults
    sites = find_sites(model)
    if not sites:
        raise NotApplicable("no conv -> conv link inside a plain nn.Sequential or a known residual "
                            "block; this pruner does not trace other dependencies")
    for site in sites:  # in order: a site's first conv may be the previous site's second
        prune_site(site, ratio)
    convs = count_modules(model, nn.Conv2d)
    return Variant(model, note=f"{len(sites)} of {convs} convolutions lose {ratio:.0%} of their "
                               "output channels (smallest L1 norm); the rest feed a residual "
                               "addition, the classifier or a pattern not proven safe; "
                               "weights kept, not fine-tuned")
