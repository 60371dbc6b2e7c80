"""The learning-rate schedule (warm-up, cosine, step) by hand arithmetic, and the study's training
recipe covering every family of the study."""
from __future__ import annotations

import math

import pytest

from dnncost.models.registry import STUDY_FAMILIES
from dnncost.training.recipe import (
    DEFAULT_RECIPE,
    RECIPES,
    LrSchedule,
    describe_recipes,
    lr_factor,
    recipe_for,
)


def test_warmup_is_linear_then_constant():
    # 4 warm-up steps: 1/4, 2/4, 3/4, 4/4, then 1 for ever
    assert [lr_factor(s, total_steps=10, warmup_steps=4) for s in range(6)] == [
        0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_after_warmup_reaches_zero_at_the_end():
    # 2 warm-up steps of 10: steps 2..10 map to progress 0..1 over 8 steps
    assert lr_factor(2, total_steps=10, warmup_steps=2, schedule="cosine") == pytest.approx(1.0)
    # step 6: progress 4/8 = 0.5 -> (1 + cos(pi/2)) / 2 = 0.5
    assert lr_factor(6, total_steps=10, warmup_steps=2, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(10, total_steps=10, warmup_steps=2, schedule="cosine") == pytest.approx(0.0)
    # step 4: progress 2/8 -> (1 + cos(pi/4)) / 2
    assert lr_factor(4, total_steps=10, warmup_steps=2, schedule=LrSchedule.COSINE) == pytest.approx(
        (1 + math.cos(math.pi / 4)) / 2)


def test_step_decay_at_half_and_three_quarters():
    # no warm-up, 100 steps: x1 before 50, x0.1 from 50, x0.01 from 75
    f = [lr_factor(s, total_steps=100, schedule="step") for s in (0, 49, 50, 74, 75, 99)]
    assert f == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_every_study_family_has_a_recipe():
    assert set(STUDY_FAMILIES) <= set(RECIPES)
    assert recipe_for("densenet") is DEFAULT_RECIPE
    assert all(r.lr > 0 and r.warmup_steps >= 0 for r in RECIPES.values())
    text = describe_recipes()
    assert "warm-up" in text and f"lr {RECIPES['alexnet'].lr:g}" in text


def test_study_trains_with_the_recipe_unless_a_rate_is_given():
    from dnncost.commands.study import reproduce_command
    from dnncost.core.errors import InputSpecError
    from dnncost.study.config import StudyConfig
    from dnncost.training.recipe import RECIPE_EPOCHS

    config = StudyConfig()
    assert config.lr is None and config.epochs == RECIPE_EPOCHS  # None: each family's rate
    assert "--lr" not in reproduce_command(config, db="x.sqlite")
    assert "--lr 0.01" in reproduce_command(StudyConfig(lr=0.01), db="x.sqlite")
    with pytest.raises(InputSpecError, match="learning rate must be positive"):
        StudyConfig(lr=0.0)


def test_a_family_may_train_a_multiple_of_the_configured_epochs():
    from dnncost.training.recipe import Recipe

    assert Recipe(0.1).epochs(3) == 3
    assert Recipe(0.1, epoch_multiple=2).epochs(3) == 6  # 2 x 3
    assert Recipe(0.1, epoch_multiple=2).epochs(0) == 0  # no training stays none
    assert "2x the epochs" in Recipe(0.1, epoch_multiple=2).describe()
    with pytest.raises(ValueError, match="epoch multiple"):
        Recipe(0.1, epoch_multiple=0)
    longer = [f for f, r in RECIPES.items() if r.epoch_multiple > 1]
    assert longer == ["alexnet"]  # the one network under 90% in 3 epochs (recipe.py's table)
    assert "alexnet 2x the configured epochs" in describe_recipes()


def test_the_study_plans_each_familys_epochs():
    """The progress bar's plan: per network its count, 2 x repeats timed repeats and a training
    run capped at its family's epochs; AlexNet's recipe doubles its cap, so its run is planned at
    twice the prior epoch's seconds."""
    from dnncost.study.config import StudyConfig
    from dnncost.study.plan import plan_units
    from dnncost.study.progress import COUNT_S, EPOCH_S, REPEAT_OVERHEAD_S
    from dnncost.study.stages import Stage

    config = StudyConfig(models=("lenet5", "alexnet_cifar"), epochs=3, repeats=2, breakdown=False,
                         work=False, predictor=False)
    units = {u.key: u.seconds for u in plan_units(config, ["lenet5", "alexnet_cifar"])}
    assert units[(Stage.TRAIN, "lenet5", "seed 0")] == 3 * EPOCH_S
    assert units[(Stage.TRAIN, "alexnet_cifar", "seed 0")] == 2 * 3 * EPOCH_S
    assert units[(Stage.TIME, "lenet5", "train")] == 2 * (0.5 + REPEAT_OVERHEAD_S)  # 2 repeats
    assert units[(Stage.COUNT, "alexnet_cifar", "")] == COUNT_S
    assert (Stage.OPERATOR_MODEL, None, "") not in units and (Stage.CALIBRATE, None, "") in units
