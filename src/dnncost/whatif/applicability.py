"""The applicability matrix: which transformation applies to which network, and what it saves on
paper -- applicable or the one-line reason, and the counted FLOPs and params ratios of the
validation step per sample, with no timing.

Each transformation is applied as ``dnncost whatif`` applies it
(:func:`~dnncost.whatif.runner.apply_and_count`: the eval step at batch 1 on this machine's CPU), and
counted on the meta device. A structural transformation (``Transformation.structural``: its shapes do
not depend on the weights' values -- channel pruning, low rank, depthwise-separable, layout, batch
size, threads) is applied to the network built on the meta device, so even the largest network costs
no memory and no arithmetic; one that reads the weights or runs the network (unstructured pruning,
int8 with its calibration, reduced precision with its check) is applied to the network built on the
CPU with its initial weights. A transformation that fails in an unexpected way is a cell marked
``failed``, with its reason; the other cells go on. With ``max_weight_bytes``, a network whose
weights are larger skips the transformations that need them (a cell marked ``skipped``: each makes
copies of the network, int8 several, which a small machine may not hold).
"""
from __future__ import annotations

import gc
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dnncost.core.errors import DnncostError
from dnncost.core.inputs import InputSpec, TensorInput
from dnncost.core.kinds import Mode
from dnncost.counting.cost import CostReport
from dnncost.measuring.timing import StepOptions
from dnncost.models.loading import LoadedModel
from dnncost.whatif.registry import Context, NotApplicable, Spec, first_line
from dnncost.whatif.runner import apply_and_count, count_original

BATCH_SIZE = 1  # source: our choice; every ratio is per sample, and batch 1 keeps the real-weight
# checks (int8 calibration, autocast) cheapest
FAILURES = (DnncostError, RuntimeError, ValueError, TypeError, IndexError, AssertionError,
            AttributeError, KeyError, NotImplementedError, MemoryError)  # a transformation that
# broke (or ran out of memory): a cell, and the next one goes on


@dataclass(frozen=True)
class Cell:
    """One transformation on one network: applicable with its counted ratios, or why not."""

    network: str
    transformation: str  # a spec's label
    applicable: bool
    reason: str = ""  # why not, in one line ("" when applicable)
    flops_ratio: float | None = None  # counted FLOPs per sample, transformed / original
    params_ratio: float | None = None
    failed: bool = False  # not a verdict: the transformation raised something unexpected
    skipped: bool = False  # not a verdict: not run here (the network's weights are over the bound)
    seconds: float = 0.0  # applying and counting it took this long on this machine

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Cell:
        """A cell from :meth:`to_dict`'s record."""
        return cls(**data)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return {"network": self.network, "transformation": self.transformation,
                "applicable": self.applicable, "reason": self.reason,
                "flops_ratio": self.flops_ratio, "params_ratio": self.params_ratio,
                "failed": self.failed, "skipped": self.skipped, "seconds": self.seconds}


def reason_kind(reason: str) -> str:
    """A reason with its numbers, quoted names and parenthesised details blanked, so that the same
    cause on different networks groups together ('12 of 20' -> 'N of N')."""
    text = re.sub(r"\([^()]*\)", "(...)", reason)
    text = re.sub(r"'[^']*'", "'...'", text)
    return re.sub(r"\d+(\.\d+)?", "N", text)


def network_cells(loaded: LoadedModel, specs: Sequence[Spec], *, threads: int | None = None,
                  max_weight_bytes: int | None = None) -> Iterator[Cell]:
    """Every spec on ``loaded``, one cell each (see the module docstring)."""
    inputs = InputSpec((TensorInput(tuple(loaded.input_shape)),))
    options = StepOptions(batch_size=BATCH_SIZE, mode=Mode.EVAL, device="cpu", threads=threads)
    context = Context(inputs=inputs, batch_size=BATCH_SIZE, mode=Mode.EVAL,
                      device=torch.device("cpu"), threads=threads or torch.get_num_threads())
    shapes = loaded.build("meta").to("meta")  # a constructor that needs real tensors built it on CPU
    base = count_original(shapes, context=context, options=options, name=loaded.name)
    weight_bytes = sum(p.numel() * p.element_size() for p in shapes.parameters())
    over = "" if max_weight_bytes is None or weight_bytes <= max_weight_bytes else (
        f"not run: it copies the network with its weights ({weight_bytes / 2**30:.1f} GiB), over "
        f"this run's bound of {max_weight_bytes / 2**30:.1f} GiB")
    weights: nn.Module | None = None
    try:
        for spec in specs:
            if not spec.transformation.structural and over:
                yield Cell(loaded.name, spec.label, False, over, skipped=True)
                continue
            if not spec.transformation.structural and weights is None:
                weights = loaded.build("cpu")
            model = shapes if spec.transformation.structural else weights
            assert model is not None
            yield _cell(loaded.name, spec, model, base=base, context=context, options=options)
    finally:
        del weights
        gc.collect()


def _cell(name: str, spec: Spec, model: nn.Module, *, base: CostReport, context: Context,
          options: StepOptions) -> Cell:
    start = time.perf_counter()
    try:
        counted = apply_and_count(spec, model, context=context, options=options, name=name)
    except NotApplicable as reason:
        return Cell(name, spec.label, False, str(reason), seconds=time.perf_counter() - start)
    except FAILURES as exc:
        return Cell(name, spec.label, False, f"{type(exc).__name__}: {first_line(exc, limit=160)}",
                    failed=True, seconds=time.perf_counter() - start)
    return Cell(name, spec.label, True, flops_ratio=counted.flops_ratio(base, batch_size=BATCH_SIZE),
                params_ratio=counted.params_ratio(base), seconds=time.perf_counter() - start)


def matrix(networks: Iterable[LoadedModel], specs: Sequence[Spec], *, threads: int | None = None,
           max_weight_bytes: int | None = None) -> Iterator[Cell]:
    """:func:`network_cells` for every network in turn; a network that cannot be built or counted
    at all gives one failed cell per spec, with the reason."""
    for loaded in networks:
        done: set[str] = set()
        try:
            for cell in network_cells(loaded, specs, threads=threads,
                                      max_weight_bytes=max_weight_bytes):
                done.add(cell.transformation)
                yield cell
        except FAILURES as exc:
            reason = f"the network itself: {type(exc).__name__}: {first_line(exc, limit=160)}"
            yield from (Cell(loaded.name, spec.label, False, reason, failed=True)
                        for spec in specs if spec.label not in done)


__all__ = ["BATCH_SIZE", "Cell", "matrix", "network_cells", "reason_kind"]
