"""Time-to-accuracy: training until the validation accuracy first reaches a target, the crossing
placed by validating several times an epoch, validation time counted; the fixed-epoch mode as it
was. Most tests script the validation accuracy (a fake validation pass of known accuracy, time and
data-loading time), so where the crossing falls is known by hand."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from dnncost.core.errors import InputSpecError
from dnncost.training import trainer
from dnncost.training.data import load_dataset
from dnncost.training.records import ValidationRecord, reaches, time_to_target
from dnncost.training.trainer import TrainOptions, train, validation_steps

VAL = 360  # digits' validation images (1797 x 0.2, stratified)
FAKE_VAL_S, FAKE_VAL_DATA_S = 0.5, 0.125  # a scripted validation pass's time (exact in binary)


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", input_shape=(1, 8, 8), seed=0)


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def _scripted(monkeypatch: pytest.MonkeyPatch, correct: list[int]) -> list[int]:
    """Make the n-th validation pass report ``correct[n]`` of VAL right (the last one thereafter),
    taking FAKE_VAL_S of which FAKE_VAL_DATA_S waiting for data; returns the list of calls."""
    calls: list[int] = []

    def fake(model, loader, device, precision):
        model.eval()  # as the real pass leaves it
        right = correct[min(len(calls), len(correct) - 1)]
        calls.append(right)
        return trainer._Pass(time_s=FAKE_VAL_S, data_s=FAKE_VAL_DATA_S, loss_sum=1.0 * VAL,
                             correct=right, samples=VAL)

    monkeypatch.setattr(trainer, "_val_pass", fake)
    return calls


def test_validation_points_split_the_epoch_into_equal_parts() -> None:
    assert validation_steps(45, 4) == (11, 22, 33, 45)  # floor(45 j / 4), j = 1..4
    assert validation_steps(8, 4) == (2, 4, 6, 8)
    assert validation_steps(45, 1) == (45,)  # the fixed-epoch mode: the epoch's end
    assert validation_steps(3, 4) == (1, 2, 3)  # floor(3 j / 4) = 0, 1, 2, 3: step 0 dropped


def test_the_crossing_is_the_first_validation_at_or_above_the_target(monkeypatch, digits8) -> None:
    # batch 180: ceil(1437 / 180) = 8 steps an epoch (7 of 180, one of 1437 - 1260 = 177), so 4
    # validations an epoch fall after steps 2, 4, 6, 8. 324 / 360 = 0.9 exactly: the 5th reaches.
    calls = _scripted(monkeypatch, [180, 252, 306, 320, 324, 342])
    seen: list[ValidationRecord] = []
    epochs_seen = []
    options = TrainOptions(epochs=3, batch_size=180, threads=1, target_accuracy=0.9,
                           validations_per_epoch=4)
    result = train(_linear(), digits8, options=options, progress=False, on_validation=seen.append,
                   on_epoch=epochs_seen.append)
    t = result.time_to_target
    assert t is not None and t.reached
    assert len(calls) == 5 and tuple(seen) == result.validations  # stopped at the crossing
    assert [v.index for v in seen] == [1, 2, 3, 4, 5]
    assert [v.steps for v in seen] == [2, 4, 6, 8, 10]
    assert [v.epoch for v in seen] == [1, 1, 1, 1, 2]
    assert (t.validations, t.steps, t.samples) == (5, 10, 1797)  # 8 + 2 steps; 1437 + 2 * 180
    assert t.epochs == pytest.approx(1797 / 1437)
    assert (t.val_accuracy, t.best_val_accuracy) == (0.9, 0.9)
    assert (t.max_epochs, t.validations_per_epoch, t.target_accuracy) == (3, 4, 0.9)
    # validation time counted: 5 passes x 0.5 s, 5 x 0.125 s waiting for data
    assert t.val_time_s == 2.5 and t.val_data_time_s == 0.625
    assert 0 < t.train_data_time_s < t.train_time_s
    assert t.total_time_s == t.train_time_s + 2.5
    # the epochs: the first whole, the second stopped after 2 of its 8 steps
    assert tuple(epochs_seen) == result.epochs
    first, second = result.epochs
    assert (first.steps, first.train_samples, second.steps, second.train_samples) == (8, 1437, 2, 360)
    assert (first.val_time_s, first.val_samples, first.val_accuracy) == (2.0, 4 * VAL, 320 / VAL)
    assert (second.val_time_s, second.val_samples, second.val_accuracy) == (0.5, VAL, 0.9)
    assert sum(e.train_time_s for e in result.epochs) == pytest.approx(t.train_time_s)
    assert result.total_time_s == pytest.approx(t.total_time_s)  # the epochs hold all the time
    assert result.to_dict()["time_to_target"]["total_time_s"] == t.total_time_s


def test_the_cap_is_honoured_and_not_reaching_is_recorded(monkeypatch, digits8) -> None:
    calls = _scripted(monkeypatch, [180])  # 0.5 for ever
    options = TrainOptions(epochs=2, batch_size=180, threads=1, target_accuracy=0.9)
    result = train(_linear(), digits8, options=options, progress=False)
    t = result.time_to_target
    assert t is not None and not t.reached
    assert len(calls) == 8 and len(result.epochs) == 2  # 2 epochs x 4 validations (the default)
    assert (t.validations, t.steps, t.samples, t.epochs) == (8, 16, 2 * 1437, 2.0)
    assert (t.val_accuracy, t.best_val_accuracy) == (0.5, 0.5)
    assert t.val_time_s == 8 * FAKE_VAL_S  # 4.0 s: the lower bound counts every validation


def test_the_schedule_is_planned_over_the_cap_when_training_stops_early(monkeypatch, digits8) -> None:
    _scripted(monkeypatch, [324])  # the first validation reaches 0.9
    planned = []
    factor = trainer._factor

    def spy(step: int, **kwargs: object) -> float:
        planned.append(kwargs["total_steps"])
        return factor(step, **kwargs)

    monkeypatch.setattr(trainer, "_factor", spy)
    options = TrainOptions(epochs=3, batch_size=180, threads=1, target_accuracy=0.9,
                           schedule="cosine", warmup_steps=1)
    result = train(_linear(), digits8, options=options, progress=False)
    assert result.time_to_target is not None and result.time_to_target.steps == 2
    assert set(planned) == {3 * 8}  # the cosine spans the 3-epoch cap's 24 steps, not the 2 run


def test_fixed_epoch_mode_validates_once_an_epoch_and_has_no_target(digits8) -> None:
    options = TrainOptions(epochs=2, batch_size=256, threads=1)
    result = train(_linear(), digits8, options=options, progress=False)
    assert result.time_to_target is None
    assert len(result.validations) == 2 and [v.steps for v in result.validations] == [6, 12]  # 1437/256
    for epoch, validation in zip(result.epochs, result.validations, strict=True):
        assert (validation.val_accuracy, validation.val_loss) == (epoch.val_accuracy, epoch.val_loss)
        assert epoch.val_samples == VAL
    last = result.validations[-1]  # the epochs also hold the wait for the end of the last one's data
    assert 0 < last.total_time_s <= result.total_time_s


def test_validating_more_often_leaves_the_training_itself_unchanged(digits8) -> None:
    """A validation pass neither updates weights nor draws random numbers, so four an epoch give
    the same losses and end-of-epoch accuracies as one -- only more validation time."""
    runs = [train(_linear(), digits8, options=TrainOptions(epochs=2, batch_size=128, threads=1,
                                                           validations_per_epoch=k), progress=False)
            for k in (1, 4)]
    once, four = (r.epochs for r in runs)
    assert [(e.train_loss, e.val_accuracy, e.val_loss) for e in once] == \
        [(e.train_loss, e.val_accuracy, e.val_loss) for e in four]
    assert [e.val_samples for e in four] == [4 * VAL, 4 * VAL]
    assert len(runs[1].validations) == 8


def test_fixed_epoch_mode_gives_the_figures_it_gave_before() -> None:
    """Pinned with the trainer as it was before time-to-accuracy (same model, data, options,
    1 thread); another CPU's float sums may move the last digits, hence the tolerances."""
    data = load_dataset("digits", input_shape=(1, 8, 8))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    options = TrainOptions(epochs=3, batch_size=64, lr=0.05, threads=1, seed=3, schedule="cosine",
                           warmup_steps=5)
    result = train(model, data, options=options, progress=False)
    assert [e.steps for e in result.epochs] == [23, 23, 23]  # ceil(1437 / 64)
    assert [e.train_loss for e in result.epochs] == pytest.approx(
        [1.1995178011551282, 0.241785127791416, 0.1408081907123099], rel=1e-3)
    assert [e.val_loss for e in result.epochs] == pytest.approx(
        [0.3253200570742289, 0.22680302460988364, 0.19182162351078458], rel=1e-3)
    assert [e.val_accuracy for e in result.epochs] == pytest.approx(
        [325 / VAL, 339 / VAL, 341 / VAL], abs=1.5 / VAL)


def _v(index: int, accuracy: float) -> ValidationRecord:
    # one validation per step of 100 samples, 1 s of training and 0.25 s of validation each
    return ValidationRecord(index=index, epoch=1, epochs=index / 4, steps=index, samples=100 * index,
                            train_time_s=1.0 * index, val_time_s=0.25 * index, train_data_time_s=0.0,
                            val_data_time_s=0.0, val_loss=1.0, val_accuracy=accuracy)


def test_time_to_target_reads_the_first_validation_that_reaches_it() -> None:
    runs = [_v(1, 0.5), _v(2, math.nan), _v(3, 0.92), _v(4, 0.95)]
    t = time_to_target(runs, target_accuracy=0.9, max_epochs=1, validations_per_epoch=4)
    assert t.reached and (t.validations, t.steps, t.samples, t.epochs) == (3, 3, 300, 0.75)
    assert (t.train_time_s, t.val_time_s, t.total_time_s) == (3.0, 0.75, 3.75)  # 3 x 1 s + 3 x 0.25 s
    assert t.best_val_accuracy == 0.92  # NaN left out
    short = time_to_target(runs[:2], target_accuracy=0.9, max_epochs=1, validations_per_epoch=4)
    assert not short.reached and (short.validations, short.best_val_accuracy) == (2, 0.5)
    assert not reaches(math.nan, 0.5) and reaches(0.9, 0.9)
    with pytest.raises(ValueError, match="at least one validation"):
        time_to_target([], target_accuracy=0.9, max_epochs=1, validations_per_epoch=4)


def test_the_records_need_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; import dnncost.training.records; "
            "assert 'torch' not in sys.modules, 'records imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(("changes", "phrase"), [
    ({"target_accuracy": 1.5}, r"target accuracy must lie in \(0, 1\]"),
    ({"target_accuracy": 0.0}, r"target accuracy must lie in \(0, 1\]"),
    ({"target_accuracy": math.nan}, r"target accuracy must lie in \(0, 1\]"),
    ({"target_accuracy": 90}, r"\(0.9 for 90%\), got 90"),
    ({"validations_per_epoch": 0}, "validations per epoch must be a positive integer, got 0"),
    ({"validations_per_epoch": 2.5}, "validations per epoch must be a positive integer, got 2.5"),
    ({"target_accuracy": 0.9, "epochs": 0}, r"epochs \(the cap of a run to a target accuracy\)"),
    ({"num_workers": -1}, "data-loading workers"),
])
def test_a_bad_option_is_one_clear_line(changes: dict[str, object], phrase: str) -> None:
    with pytest.raises(InputSpecError, match=phrase) as caught:
        TrainOptions(**changes)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_the_default_validations_follow_the_mode_and_a_recipe_fills_the_rate() -> None:
    from dnncost.training.recipe import LrSchedule, Recipe

    assert TrainOptions().effective_validations_per_epoch == 1
    assert TrainOptions(target_accuracy=0.9).effective_validations_per_epoch == trainer.VALIDATIONS_PER_EPOCH
    assert TrainOptions(target_accuracy=0.9, validations_per_epoch=2).effective_validations_per_epoch == 2
    options = TrainOptions(epochs=6).with_recipe(Recipe(0.01, weight_decay=5e-4, epoch_multiple=2))
    assert (options.lr, options.schedule, options.warmup_steps, options.weight_decay, options.epochs) == (
        0.01, LrSchedule.COSINE, 15, 5e-4, 6)  # the epochs stay the caller's


MODEL = ("from torch import nn\n"
         "def tiny():\n"
         "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n")


def test_train_cli_shows_the_crossing(tmp_path, capsys, monkeypatch) -> None:
    from dnncost.cli import main

    (tmp_path / "m.py").write_text(MODEL)
    base = ["train", f"{tmp_path / 'm.py'}:tiny", "--input", "1x8x8", "--batch-size", "180",
            "--threads", "1", "--no-progress", "--target-accuracy", "0.9", "--max-epochs", "3"]
    _scripted(monkeypatch, [180, 252, 306, 320, 324])
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "to validation accuracy 0.9" in out
    assert "Reached 0.9 (validation accuracy 0.9000) at validation 5, placed to within 1/4 epoch: " \
           "1.25 epochs, 10 steps, 1797 samples, 5 validations; " in out
    assert "2.50 s validation" in out  # 5 x 0.5 s
    _scripted(monkeypatch, [180, 252, 306, 320, 324])
    assert main([*base, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("validation,epochs,steps,samples,train_s,val_s,total_s,data_s,val_loss,val_acc,"
                        "crossing")
    assert len(lines) == 6 and lines[-1].endswith(",yes") and not lines[-2].endswith(",yes")
    _scripted(monkeypatch, [180])
    assert main([*base, "--max-epochs", "1", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    t = payload["time_to_target"]
    assert (t["reached"], t["validations"], t["max_epochs"], t["val_time_s"]) == (False, 4, 1, 2.0)
    assert len(payload["validations"]) == 4
    _scripted(monkeypatch, [180])
    assert main([*base, "--max-epochs", "1", "--validations-per-epoch", "2"]) == 0
    assert "Did not reach 0.9 within 1 epoch (best 0.5000): at the cap, 1.00 epochs, 8 steps, " \
           "1437 samples, 2 validations;" in capsys.readouterr().out
