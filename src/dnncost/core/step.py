"""The step: what one training or validation step of a network is, defined once.

The counter counts it, the timer times it, the profiler breaks it down, the micro-benchmarks and the
data-parallel workers run it, and the trainer trains with the same loss and optimizer -- so "the
counted step is the timed step" holds by construction. A step is

- ``eval``: ``model.eval()``, forward under ``torch.no_grad()``;
- ``train``: ``zero_grad`` + forward + loss + backward + optimizer step. The loss is cross-entropy of
  the primary output (the logits) against fixed class labels (the mean of the output when it has no
  class dimension); the optimizer is SGD with momentum 0.9, Adam or AdamW.

:func:`build_step` returns the step as a closure. Its ``part`` hook wraps each part of the step in a
context manager of the caller's: the profiler names ranges with it, the counter switches phase.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dnncost.core.errors import InputSpecError
from dnncost.core.kinds import Mode, OptimizerKind

LOSS_MODULE = "(loss)"  # where the loss's operators are attributed (outside every module)
OPTIMIZER_MODULE = "(optimizer)"  # where the optimizer step's operators are attributed
DEFAULT_LR = 0.01  # source: our choice for timing and counting; the value does not change the cost


class Part(str, Enum):
    """The parts of a step, in order (``build_step``'s ``part`` hook receives each)."""

    ZERO_GRAD = "zero_grad"
    FORWARD = "forward"
    LOSS = "loss"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


OptimizerFactory = Callable[[Sequence[nn.Parameter]], torch.optim.Optimizer]
PartHook = Callable[[Part], contextlib.AbstractContextManager[Any]]
LossFn = Callable[[Any], torch.Tensor]


def make_optimizer(kind: OptimizerKind | str | OptimizerFactory, params: Iterable[nn.Parameter], *,
                   lr: float = DEFAULT_LR) -> torch.optim.Optimizer:
    """SGD (momentum 0.9), Adam or AdamW at rate ``lr``, or ``kind(params)`` for a factory."""
    params = list(params)
    if callable(kind) and not isinstance(kind, str):
        return kind(params)
    try:
        kind = OptimizerKind(kind)
    except ValueError:
        raise InputSpecError(f"unknown optimizer '{kind}'; choose one of "
                             f"{', '.join(k.value for k in OptimizerKind)}") from None
    if kind is OptimizerKind.SGD:
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    cls = torch.optim.Adam if kind is OptimizerKind.ADAM else torch.optim.AdamW
    return cls(params, lr=lr, foreach=True, capturable=False)


def primary_output(output: object) -> torch.Tensor:
    """The logits of a model's output: the tensor itself, the first of a tuple, dict['logits'] or
    dict['out'] (HF and torchvision segmentation outputs), else the first value."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("logits", "out"):
            if key in output:
                return primary_output(output[key])
        if output:
            return primary_output(next(iter(output.values())))
    if isinstance(output, Sequence) and output:
        return primary_output(output[0])
    raise InputSpecError(f"cannot find the logits in a model output of type {type(output).__name__}")


def random_targets(output: object, *, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Random class labels for cross-entropy against the logits (classes along dim 1), or None when
    the output has no class dimension (the loss is then its mean). On the meta device only their
    shape is made: counting allocates nothing, whatever the batch size."""
    logits = primary_output(output)
    if not logits.is_floating_point():
        return None
    return random_labels(tuple(logits.shape), generator=generator, device=logits.device)


def random_labels(logits_shape: Sequence[int], *, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Random class labels for logits of ``logits_shape`` (B, C, *spatial): shape (B, *spatial),
    values in [0, C); uninitialised on meta; None without a class dimension (fewer than 2 dims)."""
    if len(logits_shape) < 2:
        return None
    shape = (logits_shape[0], *logits_shape[2:])  # (B, C, *spatial) -> labels (B, *spatial)
    if torch.device(device).type == "meta":
        return torch.empty(shape, dtype=torch.long, device="meta")
    return torch.randint(int(logits_shape[1]), shape, generator=generator).to(device)


def step_loss(output: object, targets: torch.Tensor | None) -> torch.Tensor:
    """The step's loss: cross-entropy of the logits against ``targets``, or their mean without."""
    logits = primary_output(output)
    if targets is None:
        return logits.mean()
    return F.cross_entropy(logits, targets)


def random_batch(input_shape: Sequence[int], *, batch_size: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", seed: int = 0) -> torch.Tensor:
    """A fixed random batch of shape (batch_size, *input_shape); uninitialised on meta."""
    if str(device) == "meta":
        return torch.empty(batch_size, *input_shape, dtype=dtype, device="meta")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, *input_shape, generator=generator, dtype=dtype).to(device)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters a training step updates."""
    return [p for p in model.parameters() if p.requires_grad]


def _no_part(part: Part) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def build_step(model: nn.Module, inputs: Sequence[Any], *, mode: Mode | str,
               kwargs: Mapping[str, Any] | None = None,
               optimizer: torch.optim.Optimizer | None = None, loss: LossFn | None = None,
               part: PartHook | None = None, seed: int = 0) -> Callable[[], torch.Tensor | None]:
    """One step of ``model`` (already on its device) on ``inputs`` as a closure.

    Eval: forward under no_grad. Train: zero_grad, forward, ``loss`` (default: :func:`step_loss`
    against labels drawn once from ``seed``), backward and ``optimizer.step()``; returns the loss.
    ``part(p)`` is entered around each part ``p``. A training step needs an optimizer and at least
    one trainable parameter.
    """
    mode = Mode(mode)
    kwargs = dict(kwargs or {})
    hook = part or _no_part
    model.train(mode is Mode.TRAIN)
    if mode is Mode.EVAL:
        def eval_step() -> None:
            with torch.no_grad(), hook(Part.FORWARD):
                model(*inputs, **kwargs)
        return eval_step

    if not trainable_parameters(model):
        raise InputSpecError(f"{type(model).__name__} has no trainable parameters, so a training step "
                             "has nothing to update; use mode 'eval'")
    if optimizer is None:
        raise InputSpecError("a training step needs an optimizer")
    if loss is None:
        with torch.no_grad(), hook(Part.FORWARD):  # fixed labels shaped like the logits
            targets = random_targets(model(*inputs, **kwargs),
                                     generator=torch.Generator().manual_seed(seed))
        loss = lambda output: step_loss(output, targets)  # noqa: E731
    opt = optimizer

    def train_step() -> torch.Tensor:
        with hook(Part.ZERO_GRAD):
            opt.zero_grad(set_to_none=True)
        with hook(Part.FORWARD):
            output = model(*inputs, **kwargs)
        with hook(Part.LOSS):
            value = loss(output)
        del output  # free the activations not saved for backward, as a training loop does
        with hook(Part.BACKWARD):
            value.backward()
        with hook(Part.OPTIMIZER):
            opt.step()
        return value.detach()
    return train_step


__all__ = ["DEFAULT_LR", "LOSS_MODULE", "OPTIMIZER_MODULE", "LossFn", "Mode", "OptimizerFactory",
           "OptimizerKind", "Part", "PartHook", "build_step", "make_optimizer", "primary_output",
           "random_batch", "random_labels", "random_targets", "step_loss", "trainable_parameters"]
