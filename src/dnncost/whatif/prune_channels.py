"""Structured channel pruning: remove whole channels, smallest L1 norm first (Li et al. 2017,
"Pruning filters for efficient ConvNets"), from every layer whose channels can be traced.

The engine is torch-pruning (Fang et al. 2023, "DepGraph: towards any structural pruning"), the
field's standard for arbitrary networks: it traces the autograd graph of one forward and groups the
channels that must go together -- a convolution's filters with its BatchNorm and the next layer's
inputs, every branch of a residual addition, the slices of a concatenation, depthwise and grouped
convolutions with their inputs, squeeze-excitation gates with the channels they scale, and attention
heads where q, k and v are separate linear layers (nn.MultiheadAttention keeps its width and heads;
the feed-forward layers around it are pruned). Every group loses ``ratio`` of its channels (local
pruning: ``int(C * (1 - ratio))`` of C kept), ranked by the group's L1 norm (GroupMagnitudeImportance
with p=1: each channel's L1 norm in every coupled layer, normalised per layer by its mean and
averaged). Channels that reach the network's output -- the classifier's classes -- are kept.

torch-pruning is an optional extra (``pip install "dnncost[pruning]"``), imported when a network is
pruned; without it this transformation is not applicable and says how to install it. No built-in
pruner is kept beside it: the one this replaced proved two patterns by hand (conv -> conv in an
nn.Sequential, the inner convolutions of known residual blocks), which the tracer covers -- on
resnet20 both give the same counted FLOPs, 0.754 and 0.508 of the original at 0.25 and 0.5 -- and it
found nothing to prune in mobilenet_v2 or efficientnet_b0, where the tracer prunes every block.

The network is traced in the step's mode (a training step may run branches an evaluation skips,
e.g. GoogLeNet's auxiliary classifiers) on two samples of the run's input (BatchNorm in training mode
needs more than one value per channel); BatchNorm's running statistics are restored after each
forward, so pruning changes no weight it keeps. A forward of the pruned network then checks that the
tracer missed no coupling; if it did, the transformation is not applicable with the failure.

Two limits of the tracer are guarded. It treats every operation it does not know as element-wise
(channel i in, channel i out), which is wrong for one that pads, repeats, gathers or rolls along the
channels (the zero-padding shortcut of the CIFAR ResNets, resnet20 to resnet110): a group that passes
through such an operation (UNMAPPED) is kept whole, and the groups beside it are pruned. And its index
mapping grows without bound on some networks (Swin transformers: 6 GB in 100 s): tracing runs within
TRACE_LIMIT_S and TRACE_MEMORY of growth, past which the transformation is not applicable.

A network on the meta device (no weights: the applicability matrix) is pruned by channel position
instead of L1 norm -- every group loses the same number of channels either way, so the pruned shapes
and their count are the same.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dnncost.core.kinds import Mode
from dnncost.whatif._budget import OverBudget, budget
from dnncost.whatif.registry import Context, NotApplicable, Parameter, Variant, first_line, register

INSTALL = 'pip install "dnncost[pruning]"'  # source: pyproject.toml, the optional extra 'pruning'
TRACE_SAMPLES = 2  # source: BatchNorm in training mode needs more than one value per channel
TRACE_LIMIT_S = 180.0  # source: measured, densenet201 (the slowest torchvision network to trace)
# took 61 s on a loaded 2-core machine; three times that
TRACE_MEMORY = 2 * 2**30  # source: our choice; tracing the largest torchvision networks on the meta
# device grows the process by < 0.5 GB (densenet201, vit_h_14), while Swin's runaway index mapping
# passes 2 GiB in ~35 s. A network with real weights may grow by twice its weights on top
UNMAPPED = ("Pad", "Repeat", "Index", "Gather", "Roll", "Flip", "TakeAlongDim")  # source:
# torch_pruning/dependency/graph.py treats a grad_fn it does not name as element-wise; these (by
# their grad_fn names) may add, move or pick channels, so a group through them is not pruned
ROOTS = (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM, nn.Embedding)  # source: torch-pruning's
# default root types (BasePruner.root_module_types) and nn.Embedding, so that a text model's
# embedding width is pruned with the layers that read it


def torch_pruning() -> Any:
    """The torch_pruning module; NotApplicable naming the extra to install when it is absent."""
    try:
        import torch_pruning
    except ImportError:
        raise NotApplicable(f"structured pruning needs torch-pruning: {INSTALL}") from None
    return torch_pruning


@contextlib.contextmanager
def buffers_kept(model: nn.Module) -> Iterator[None]:
    """Run the block, then put every buffer of ``model`` back as it was (a forward in training mode
    moves BatchNorm's running statistics; a check forward should not)."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                if buffer.shape == value.shape:
                    buffer.copy_(value)


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _importance(tp: Any, model: nn.Module) -> Any:
    """Group L1 norm (GroupMagnitudeImportance, p=1); on the meta device, which holds no values,
    channel position (the last channels kept), which prunes the same number of channels."""
    l1 = tp.importance.GroupMagnitudeImportance(p=1)
    if _device(model).type != "meta":
        return l1

    def by_position(group: Any) -> torch.Tensor:
        return torch.arange(len(group[0].idxs), dtype=torch.float32)  # one score per root channel
    return by_position


def _unmapped(tp: Any, group: Any) -> bool:
    """True when the group passes through an operation the tracer maps element-wise but which may
    not be (UNMAPPED)."""
    for dep, _ in group:
        for node in (dep.source, dep.target):
            if node.type == tp.ops.OPTYPE.ELEMENTWISE and node.grad_fn is not None \
                    and any(word in node.grad_fn.name() for word in UNMAPPED):
                return True
    return False


@dataclass(frozen=True)
class Pruned:
    """What :func:`prune` did: groups pruned, kept because they are the output, kept because they
    pass through an operation the tracer cannot map."""

    pruned: int
    output: int
    unmapped: int


def prune(model: nn.Module, ratio: float, context: Context) -> Pruned:
    """Remove ``ratio`` of the channels of every traceable group of ``model``, in place, within the
    tracing budget (NotApplicable past it)."""
    tp = torch_pruning()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.device.type != "meta")
    try:
        with budget(seconds=TRACE_LIMIT_S, memory_bytes=TRACE_MEMORY + 2 * weight_bytes):
            return _prune(tp, model, ratio, context)
    except OverBudget as over:
        raise NotApplicable(f"torch-pruning's dependency tracing {over} on this network "
                            "(its index mapping does not scale to it)") from None


def _prune(tp: Any, model: nn.Module, ratio: float, context: Context) -> Pruned:
    inputs = context.make_inputs(TRACE_SAMPLES, device=_device(model))
    training = context.mode is Mode.TRAIN

    def forward(module: nn.Module, example: Any) -> Any:
        module.train(training)  # torch-pruning sets eval() before this; trace the step's own mode
        return module(*example.args, **example.kwargs)

    heads = {m: m.num_heads for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "unwrapped parameters", "unknown operation": its own notes
        with buffers_kept(model):  # the tracing forward
            pruner = tp.pruner.BasePruner(model, inputs, forward_fn=forward, pruning_ratio=ratio,
                                          importance=_importance(tp, model),
                                          num_heads=heads, root_module_types=ROOTS)
        graph = pruner.DG
        outputs = {node.module for node in graph.module2node.values() if not node.outputs}
        pruned = output = unmapped = 0
        for group in pruner.step(interactive=True):
            if any(dep.target.module in outputs
                   and (dep.target.type == tp.ops.OPTYPE.OUTPUT
                        or graph.is_out_channel_pruning_fn(dep.handler)) for dep, _ in group):
                output += 1  # these channels are the network's output (its classes)
            elif _unmapped(tp, group):
                unmapped += 1
            else:
                group.prune()
                pruned += 1
    return Pruned(pruned, output, unmapped)


def _check(model: nn.Module, context: Context) -> None:
    """One forward of the pruned network in the step's mode; NotApplicable with the failure."""
    inputs = context.make_inputs(TRACE_SAMPLES, device=_device(model))
    model.train(context.mode is Mode.TRAIN)
    try:
        with torch.no_grad(), buffers_kept(model):
            model(*inputs.args, **inputs.kwargs)
    except Exception as exc:  # noqa: BLE001 -- any failure means a coupling the tracer missed
        raise NotApplicable(f"the dependency tracer missed a coupling: the pruned network fails "
                            f"({type(exc).__name__}: {first_line(exc, limit=160)})") from exc


@register("prune_channels", parameter=Parameter.RATIO, defaults=(0.25, 0.5), structural=True,
          summary="structured pruning: remove this fraction of the channels of every coupled group "
                  "(smallest group L1 norm; torch-pruning's dependency graph), classes kept")
def prune_channels(model: nn.Module, ratio: float | None, context: Context) -> Variant:
    """``model`` with ``ratio`` of its traceable channels removed (see the module docstring)."""
    assert ratio is not None  # the registry runs it at its defaults
    if next(model.parameters(), None) is None:
        raise NotApplicable("the network has no parameters, so no channels to prune")
    try:
        done = prune(model, ratio, context)
    except NotApplicable:
        raise
    except Exception as exc:  # noqa: BLE001 -- a network the tracer cannot follow: the reason
        raise NotApplicable(f"torch-pruning fails on this network ({type(exc).__name__}: "
                            f"{first_line(exc, limit=160)})") from exc
    unmapped = (f"{done.unmapped} groups through padding or indexing along the channels kept "
                "whole") if done.unmapped else ""
    if done.pruned == 0:
        raise NotApplicable(f"no group of channels to prune: {unmapped}" if unmapped
                            else "no group of channels to prune: every traced layer feeds the "
                                 "output" if done.output
                            else "no convolution or linear layer the tracer can prune")
    _check(model, context)
    return Variant(model, note=f"{done.pruned} channel groups lose {ratio:.0%} of their channels "
                               "(smallest group L1 norm, coupled layers together; torch-pruning); "
                               "output channels kept" + (f"; {unmapped}" if unmapped else "")
                               + "; weights kept, not fine-tuned")
