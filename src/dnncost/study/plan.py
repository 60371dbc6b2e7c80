"""What a study will do: every unit of its work with its expected seconds, for the one progress
bar (:mod:`dnncost.study.progress`), and the seeds and cost-vs-work grids the sweep runs."""
from __future__ import annotations

import math
from collections.abc import Sequence

from dnncost.core.kinds import MODES
from dnncost.prediction.calibration import QUICK_BUDGET_S
from dnncost.study.config import SEED, StudyConfig
from dnncost.study.progress import (
    BREAKDOWN_S,
    CALIBRATE_S,
    COUNT_S,
    DISTRIBUTED_S,
    FIT_OVERHEAD,
    PREDICT_S,
    WHATIF_S,
    WORK_POINT_S,
    Unit,
    repeat_seconds,
    training_seconds,
)
from dnncost.study.stages import Stage
from dnncost.study.work import WORK_PLAN, WorkGrid
from dnncost.training.recipe import recipe_for


def plan_units(config: StudyConfig, names: Sequence[str]) -> list[Unit]:
    """Every unit of the study's work with its expected seconds (dnncost.study.progress): per
    network its count, each step's timed repeats, breakdown, training run per seed (its cap's
    epochs at a prior epoch time, planned again once its steps are timed), data-parallel step,
    what-if and cost-vs-work series; then the calibrations and the predictions."""
    from dnncost.models import family_of  # torch: kept off the CLI's start-up

    units = []
    for name in names:
        units.append(Unit(Stage.COUNT, name, seconds=COUNT_S))
        units += [Unit(Stage.TIME, name, mode, config.repeats * repeat_seconds(config.step_budget_s))
                  for mode in MODES]
        if config.breakdown:
            units.append(Unit(Stage.BREAKDOWN, name, seconds=BREAKDOWN_S))
        cap = recipe_for(family_of(name)).epochs(config.epochs)
        if cap:
            prior = training_seconds(cap_epochs=cap, steps_per_epoch=0, val_batches=0,
                                     validations_per_epoch=config.effective_validations_per_epoch,
                                     train_step_s=math.nan, eval_step_s=math.nan)
            units += [Unit(Stage.TRAIN, name, seed_part(seed), prior) for seed in seeds(config)]
        if config.world_size > 1:
            units.append(Unit(Stage.DISTRIBUTED, name, seconds=DISTRIBUTED_S))
        if config.whatif is not None:
            units.append(Unit(Stage.WHATIF, name, seconds=WHATIF_S))
        if name in work_networks(config, names):
            units.append(Unit(Stage.WORK, name,
                              seconds=WORK_POINT_S * len(work_grid(name).points)))
    units.append(Unit(Stage.CALIBRATE, None, seconds=CALIBRATE_S))
    if config.predictor and config.device == "cpu":
        units.append(Unit(Stage.OPERATOR_MODEL, None, seconds=QUICK_BUDGET_S * FIT_OVERHEAD))
    units.append(Unit(Stage.PREDICT, None, seconds=PREDICT_S))
    return units


def seeds(config: StudyConfig) -> range:
    """The seeds each network trains from: SEED, SEED + 1, ... (``config.seeds`` of them)."""
    return range(SEED, SEED + config.seeds)


def seed_part(seed: int) -> str:
    return f"seed {seed}"


def work_grid(name: str) -> WorkGrid:
    """The cost-vs-work grid of a network named in WORK_PLAN."""
    return WorkGrid(input_sizes=WORK_PLAN[name])


def work_networks(config: StudyConfig, names: Sequence[str]) -> list[str]:
    """The studied networks whose cost vs work is measured (none with ``config.work`` off)."""
    return [n for n in names if n in WORK_PLAN] if config.work else []


__all__ = ["plan_units", "seed_part", "seeds", "work_grid", "work_networks"]
