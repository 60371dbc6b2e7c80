"""The study's one progress bar, weighted by expected seconds, and the clock of its stages: a unit's
plan is credited as it runs, a unit found stored or of a failed network leaves the total, a run
stopped at its target early gives back the rest of its cap and one that runs long grows it; the
stages' wall times add up and read as one line."""
from __future__ import annotations

import pytest

from dnncost.study.progress import NullBar, Progress, Unit, training_seconds
from dnncost.study.stages import Stage, StageClock, describe_split


class Bar(NullBar):
    """A bar that records its refreshes."""

    def __init__(self) -> None:
        self.total, self.n, self.refreshed = 0.0, 0.0, 0

    def refresh(self) -> None:
        self.refreshed += 1


def _progress() -> tuple[Progress, Bar]:
    bar = Bar()
    units = [Unit(Stage.COUNT, "a", seconds=2.0), Unit(Stage.TIME, "a", "train", 10.0),
             Unit(Stage.TRAIN, "a", "seed 0", 30.0), Unit(Stage.COUNT, "b", seconds=2.0),
             Unit(Stage.TRAIN, "b", "seed 0", 30.0), Unit(Stage.CALIBRATE, None, seconds=6.0)]
    return Progress(bar, units), bar


def test_the_total_is_the_plan_and_each_unit_is_credited_as_it_runs():
    progress, bar = _progress()
    assert bar.total == 80.0  # 2 + 10 + 30 + 2 + 30 + 6
    progress.finish((Stage.COUNT, "a", ""))
    progress.reach((Stage.TIME, "a", "train"), 4.0)  # 2 of 5 repeats
    progress.reach((Stage.TIME, "a", "train"), 4.0)  # cumulative: nothing new
    assert bar.n == 6.0
    progress.finish((Stage.TIME, "a", "train"))
    assert (bar.n, bar.total) == (12.0, 80.0)


def test_an_early_stop_gives_back_the_rest_and_a_long_run_grows_the_plan():
    progress, bar = _progress()
    key = (Stage.TRAIN, "a", "seed 0")
    progress.reach(key, 10.0)
    progress.finish(key, worth=progress.credited[key])  # stopped at its target after a third
    assert (bar.n, bar.total) == (10.0, 60.0)  # 80 - 20 given back
    other = (Stage.TRAIN, "b", "seed 0")
    progress.reach(other, 45.0)  # beyond its 30 s plan
    assert (bar.n, bar.total) == (55.0, 75.0)
    progress.plan(other, 20.0)  # a plan never drops below what is credited
    assert bar.total == 75.0


def test_the_bar_never_runs_past_its_total() -> None:
    """Sums of many fractional plans round differently from sums of their credits: the last
    credit must not leave n above total (tqdm warns 'clamping frac' and shows a negative time)."""
    bar = Bar()
    units = [Unit(Stage.TIME, "a", str(i), 0.1) for i in range(10)]
    progress = Progress(bar, units)
    bar.total -= 1e-12  # what a total summed in another order can come to
    for unit in units:
        progress.finish(unit.key)
    assert bar.n <= bar.total


def test_stored_units_and_a_failed_networks_units_leave_the_plan():
    progress, bar = _progress()
    progress.skip((Stage.COUNT, "a", ""))  # found stored: it took no time, it counts for nothing
    assert (bar.n, bar.total) == (0.0, 78.0)
    progress.reach((Stage.TRAIN, "b", "seed 0"), 3.0)
    progress.skip_network("b")  # failed: its count and the rest of its training leave
    assert (bar.n, bar.total) == (3.0, 78.0 - 2.0 - 27.0)
    assert progress.planned[(Stage.CALIBRATE, None, "")] == 6.0  # the study's own units stay


def test_a_training_run_is_planned_from_its_timed_steps():
    # 45 steps of 0.1 s and 2 passes of 12 batches of 0.05 s an epoch: 4.5 + 1.2 = 5.7 s, x 1.1
    seconds = training_seconds(cap_epochs=3, steps_per_epoch=45, val_batches=12, validations_per_epoch=2,
                               train_step_s=0.1, eval_step_s=0.05)
    assert seconds == pytest.approx(3 * 5.7 * 1.1)
    from dnncost.study.progress import EPOCH_S

    assert training_seconds(cap_epochs=2, steps_per_epoch=45, val_batches=12, validations_per_epoch=2,
                            train_step_s=float("nan"), eval_step_s=0.05) == 2 * EPOCH_S  # not timed


def test_the_stage_clock_adds_up_the_pieces_of_a_stage(monkeypatch):
    from dnncost.study import stages

    ticks = iter([0.0, 1.5, 10.0, 12.0, 20.0, 20.25])
    monkeypatch.setattr(stages.time, "perf_counter", lambda: next(ticks))
    clock = StageClock()
    with clock.timing(Stage.TRAIN):
        pass  # 1.5 s
    with pytest.raises(RuntimeError), clock.timing(Stage.TRAIN):
        raise RuntimeError("a stage that fails still took its time")  # 2 s
    with clock.timing(Stage.COUNT):
        pass  # 0.25 s
    assert clock.by_name() == {"count": 0.25, "train": 3.5}  # in stage order


def test_the_split_reads_as_one_line_with_the_rest_as_other():
    # 100 s measured, 90 s in stages: 10 s other; the 0.3 s stage is too small to name
    text = describe_split({"time": 30.0, "train": 59.7, "predict": 0.3}, total_s=100.0)
    assert text == ("100 s (1 min 40 s): step timings 30 s (30%), training 60 s (60%), other 10 s "
                    "(10%)")
    assert describe_split({"report": 12.0}) == "12 s: report 12 s (100%)"
