"""The training recipe the study trains every network with: SGD with momentum, a short linear
warm-up, cosine decay to zero, and a learning rate per family -- the highest of those tried on
digits at which the family learns (issue 13's measurements, quoted beside each rate).

Initialisation is each network's own (dnncost.models: He et al. 2015 for the ReLU stacks of VGG,
AlexNet, ResNet and MobileNet; torchvision's for GoogLeNet); VGG runs with batch norm. The rates
were measured on scikit-learn's digits at batch 32 with 3 epochs; other data may want others.
"""
from __future__ import annotations

from dataclasses import dataclass

from dnncost.measuring.training import LrSchedule

WARMUP_STEPS = 15  # source: measured; a third of a digits epoch at batch 32 (45 steps); Goyal et al.
# 2017 (Sec. 2.2) warm up over 5 of 90 epochs, a larger share suits a 3-epoch run
RECIPE_EPOCHS = 3  # source: measured; every default network >= 90% on digits in 3 epochs (issue 13)
BN_LR = 0.05  # source: measured; ResNet-56 96.1%, VGG-11-BN 94.7% (at 0.02) after 3 epochs
PLAIN_LR = 0.01  # source: measured; AlexNet (no batch norm) stays at chance at 0.05 and learns at 0.01


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


#: family -> recipe. Families with batch norm take the higher rate; LeNet-5 (tanh, no BN) learns
#: at it too (93.9% after 3 epochs at 0.05); AlexNet has neither BN nor a residual path.
RECIPES = {
    "lenet": Recipe(BN_LR),
    "alexnet": Recipe(PLAIN_LR),
    "vgg": Recipe(BN_LR),
    "googlenet": Recipe(BN_LR),
    "resnet": Recipe(BN_LR),
    "mobilenet": Recipe(BN_LR),
    "shufflenet": Recipe(BN_LR),
}
DEFAULT_RECIPE = Recipe(PLAIN_LR)  # source: our choice; the cautious rate for networks outside the zoo


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


__all__ = ["DEFAULT_RECIPE", "RECIPES", "RECIPE_EPOCHS", "Recipe", "describe_recipes", "recipe_for"]
