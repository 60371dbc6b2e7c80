"""The learning-rate schedule (:func:`lr_factor`) and the training recipe the study trains every
network with: SGD with momentum, a short linear warm-up, cosine decay to zero, and a learning rate
per family -- the highest of those tried on digits at which the family learns (issue 13's
measurements, quoted beside each rate). No torch import: the study's configuration reads it.

Initialisation is each network's own (dnncost.models: He et al. 2015 for the ReLU stacks of VGG,
AlexNet, ResNet and MobileNet; torchvision's for GoogLeNet); VGG runs with batch norm. The rates
were measured on scikit-learn's digits at batch 32 with 3 epochs; other data may want others.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

WARMUP_STEPS = 15  # source: measured; a third of a digits epoch at batch 32 (45 steps); Goyal et al.
# 2017 (Sec. 2.2) warm up over 5 of 90 epochs, a larger share suits a 3-epoch run
RECIPE_EPOCHS = 3  # source: measured; the default networks reach ~90% or more on digits in 3 epochs

STEP_DECAY_AT = (0.5, 0.75)  # source: He et al. 2016, Sec. 4.2 (lr / 10 at 32k, 48k of 64k steps)
STEP_DECAY = 0.1  # source: He et al. 2016, Sec. 4.2 (the learning rate divided by 10)


class LrSchedule(str, Enum):
    """How the learning rate moves over the run, after the linear warm-up (if any).

    constant: the base rate throughout; cosine: half a cosine from the base rate to 0 at the last
    step (Loshchilov & Hutter 2017, SGDR, without restarts); step: the base rate divided by 10 at
    half and at three quarters of the steps (He et al. 2016, Sec. 4.2).
    """

    CONSTANT = "constant"
    COSINE = "cosine"
    STEP = "step"


def lr_factor(step: int, *, total_steps: int, warmup_steps: int = 0,
              schedule: LrSchedule | str = LrSchedule.CONSTANT) -> float:
    """The multiple of the base learning rate at 0-based optimizer ``step`` of ``total_steps``:
    linear warm-up from 1/warmup_steps to 1 over the first ``warmup_steps`` (Goyal et al. 2017,
    Sec. 2.2), then ``schedule`` over the remaining steps."""
    schedule = LrSchedule(schedule)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule is LrSchedule.CONSTANT:
        return 1.0
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)  # 0 -> 1 after warm-up
    if schedule is LrSchedule.COSINE:
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return STEP_DECAY ** sum(progress >= at for at in STEP_DECAY_AT)


@dataclass(frozen=True)
class Recipe:
    """How one family is trained: base learning rate, schedule, warm-up steps, weight decay."""

    lr: float
    schedule: LrSchedule = LrSchedule.COSINE
    warmup_steps: int = WARMUP_STEPS
    weight_decay: float = 0.0

    def describe(self) -> str:
        return (f"SGD momentum 0.9, lr {self.lr:g}, {self.warmup_steps} warm-up steps then "
                f"{self.schedule.value} decay" + (f", weight decay {self.weight_decay:g}"
                                                  if self.weight_decay else ""))


#: family -> recipe. Each rate with its measurement: validation accuracy on digits after 3 epochs
#: (batch 32, seed 0, 2 cores shared; `python3 -c` runs of dnncost.measuring.training.train, issue 13).
RECIPES = {
    "lenet": Recipe(0.05),  # source: measured, LeNet-5 93.9% (45 warm-up steps)
    "alexnet": Recipe(0.02),  # source: measured, 90.8%; 10-20% at 0.05, 71.4% at 0.03
    "vgg": Recipe(0.02),  # source: measured, VGG-11-BN 94.7%; without BN 10% at 0.02 and 0.05
    "googlenet": Recipe(0.02),  # source: measured, 95.8%
    "resnet": Recipe(0.05),  # source: measured, ResNet-56 96.1% (45 warm-up steps)
    "mobilenet": Recipe(0.05),  # source: measured, MobileNet v1 95.8%, at width 0.5 95.3%
    "shufflenet": Recipe(0.02),  # source: measured, g8 93.1%, g3 89.4% (just short of 90%);
    # at 0.05 g3 63.3% and g8 39.4%; zero-initialised last BN of each unit left g3 at 11.4%
}
DEFAULT_RECIPE = Recipe(0.02)  # source: our choice; the lower of the measured rates, for other networks


def recipe_for(family: str) -> Recipe:
    """The recipe of ``family`` (DEFAULT_RECIPE for families the table does not name)."""
    return RECIPES.get(family, DEFAULT_RECIPE)


def describe_recipes() -> str:
    """One paragraph stating the recipe, for the study's report."""
    by_lr: dict[float, list[str]] = {}
    for family, recipe in RECIPES.items():
        by_lr.setdefault(recipe.lr, []).append(family)
    rates = "; ".join(f"lr {lr:g} for {', '.join(families)}" for lr, families in by_lr.items())
    base = next(iter(RECIPES.values()))
    return (f"Training recipe: SGD with momentum 0.9, batch as configured, {base.warmup_steps} "
            f"steps of linear warm-up then {base.schedule.value} decay to zero over the run; "
            f"{rates}; other networks lr {DEFAULT_RECIPE.lr:g}. VGG with batch norm; each "
            "network initialised as its family's paper or torchvision prescribes.")


__all__ = ["DEFAULT_RECIPE", "RECIPES", "RECIPE_EPOCHS", "LrSchedule", "Recipe", "describe_recipes",
           "lr_factor", "recipe_for"]
