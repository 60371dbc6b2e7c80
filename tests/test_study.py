"""The sweep on tiny networks: every stage stored, a failing network recorded while the sweep goes
on, resuming skips what is stored, --repeats adds repeats, Ctrl-C keeps results and prints a resume
command that works, unknown names are listed, and the default selection covers the seven families."""
from __future__ import annotations

import shlex
import textwrap

import pytest

from dnncost.cli import main
from dnncost.core.errors import InputSpecError
from dnncost.study.config import StudyConfig, default_config, select_models
from dnncost.study.store import open_store
from dnncost.study.sweep import run_study

TINY_MODELS = textwrap.dedent("""
    from torch import nn

    def tiny():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, 10))

    def wider():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("this network is broken on purpose")

    def broken():
        return Broken()
""")


@pytest.fixture()
def specs(tmp_path):
    path = tmp_path / "tiny_models.py"
    path.write_text(TINY_MODELS)
    return {name: f"{path}:{name}" for name in ("tiny", "wider", "broken")}


def _config(*names: str, **overrides) -> StudyConfig:
    base = dict(models=names, batch_size=8, epochs=1, repeats=2, step_budget_s=None, steps=2,
                predictor=False,
                warmup=0, train_limit=16)
    base.update(overrides)
    return StudyConfig(**base)


def _planned(result, mode: str) -> int:
    """The planned repeats stored of a step (re-measures of repeats whose probe drifted are extra)."""
    return sum(1 for t in result.steps(mode) if not t.conditions.remeasure)


def test_failing_network_is_recorded_and_the_sweep_goes_on(tmp_path, specs):
    config = _config(specs["tiny"], specs["broken"], specs["wider"])
    with open_store(tmp_path / "s.sqlite") as store:
        summary = run_study(config, store, progress=False)
        results = {r.name: r for r in store.network_results()}
        runs = store.runs()
    assert list(summary.failed) == [specs["broken"]] and "count" in summary.failed[specs["broken"]]
    assert not summary.complete and runs[-1].status == "failed"
    broken = results[specs["broken"]]
    assert broken.errors[0].stage == "count" and "broken on purpose" in broken.errors[0].message
    assert "Traceback" in broken.errors[0].traceback
    for name in ("tiny", "wider"):  # the network after the broken one was measured too
        r = results[specs[name]]
        assert set(r.counts) == {"train", "eval"} and r.input_shape == "3x32x32"
        assert _planned(r, "train") == 2 and _planned(r, "eval") == 2
        assert all(len(t.samples) == 2 for t in r.timings)  # 2 timed steps per repeat, raw
        (training,) = r.completed_trainings
        assert [e.epoch for e in training.epochs] == [1] and training.epochs[0].train_samples == 16
        assert "Conv2d" in r.breakdown and r.breakdown["Conv2d"][1] > 0  # time and FLOPs by type


def test_rerun_resumes_and_more_repeats_add_repeats(tmp_path, specs):
    config = _config(specs["tiny"], specs["wider"], breakdown=False)
    with open_store(tmp_path / "s.sqlite") as store:
        first = run_study(config, store, progress=False)
        again = run_study(config, store, progress=False)
        # per network: 1 count + 2 repeats x (train + eval) + 1 epoch = 6 units
        assert (first.measured, first.skipped) == (12, 0)
        assert (again.measured, again.skipped) == (0, 12)
        more = StudyConfig(**{**config.__dict__, "repeats": 3})
        assert more.config_hash == config.config_hash  # repeats do not change what is measured
        added = run_study(more, store, progress=False)
        assert added.measured == 4  # one more train and one more eval repeat per network
        for r in store.network_results():
            assert _planned(r, "train") == 3 and _planned(r, "eval") == 3
            assert len(r.completed_trainings) == 1


def test_interrupt_keeps_results_and_the_printed_command_resumes(tmp_path, specs, monkeypatch, capsys):
    import dnncost.measuring.timing

    real = dnncost.measuring.timing.time_model
    calls = []

    def interrupted_on_third_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dnncost.measuring.timing, "time_model", interrupted_on_third_call)
    db, out = tmp_path / "s.sqlite", tmp_path / "report"
    argv = ["study", "--models", f"{specs['tiny']},{specs['wider']}", "--input-size", "32",
            "--epochs", "1", "--batch-size", "8",
            "--repeats", "2", "--step-budget", "0", "--steps", "2", "--warmup", "0",
            "--train-limit", "16",
            "--no-breakdown", "--no-predictor", "--db", str(db), "--out", str(out), "--no-progress"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Resume with:" in err
    with open_store(db) as store:
        assert store.runs()[-1].status == "interrupted"
        # both networks counted (2 counts each), then repeat 1 of tiny (train + eval) before the
        # third timing -- repeat 1 of wider's train step -- was interrupted: 4 + 2 results
        assert store.result_count() == 4 + 2
    monkeypatch.setattr(dnncost.measuring.timing, "time_model", real)
    resume = shlex.split(err.split("Resume with:")[1].strip())
    assert resume[:2] == ["dnncost", "study"]
    assert main(resume[1:] + ["--no-progress"]) == 0
    out_text = capsys.readouterr().out
    assert "report:" in out_text and (out / "report.html").is_file()
    assert "wall time " in out_text  # stages under half a second are left out of the line
    with open_store(db) as store:
        for r in store.network_results():
            assert _planned(r, "train") == 2 and _planned(r, "eval") == 2  # once each, no extra
        runs = list(store.stage_times(config_hash=r.config_hash, fingerprint=r.fingerprint).values())
    assert "time" in runs[-1] and "train" in runs[-1]  # the resumed run timed and trained


def test_unknown_networks_are_listed_before_anything_is_stored(tmp_path, capsys):
    db = tmp_path / "s.sqlite"
    code = main(["study", "--models", "resnet20,resnett20,nosuchnet", "--db", str(db)])
    err = capsys.readouterr().err
    assert code == 2 and "resnett20" in err and "nosuchnet" in err and "(did you mean: resnet20" in err
    assert not db.exists()


def test_bad_dataset_fails_before_anything_is_stored(tmp_path, capsys):
    db = tmp_path / "s.sqlite"
    assert main(["study", "--quick", "--dataset", "imagenet", "--db", str(db)]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    with open_store(db) as store:
        assert store.runs() == []


def test_configuration_hash_covers_what_is_measured():
    base = StudyConfig()
    assert StudyConfig(models=("lenet5",), repeats=9).config_hash == base.config_hash
    assert StudyConfig(batch_size=16).config_hash != base.config_hash
    assert StudyConfig(dataset="synthetic").config_hash != base.config_hash


@pytest.mark.parametrize("argv", [
    [], ["--quick"], ["--input-size", "224"], ["--models", "resnet50"],
    ["--models", "resnet50", "--input-size", "32", "--repeats", "7"], ["--family", "vgg"],
    ["--quick", "--models", "alexnet_cifar", "--step-budget", "0.2", "--no-breakdown"],
    ["--fixed-epochs"], ["--quick", "--fixed-epochs", "--validations-per-epoch", "3"],
    ["--target-accuracy", "0.8", "--validations-per-epoch", "4", "--seeds", "3"],
])
def test_printed_command_reproduces_the_configuration(argv):
    from dnncost.cli import build_parser
    from dnncost.commands.study import config_from_args, reproduce_command

    parser = build_parser()
    config = config_from_args(parser.parse_args(["study", *argv]))
    again = shlex.split(reproduce_command(config, db="x.sqlite"))
    assert again[:2] == ["dnncost", "study"]
    assert config_from_args(parser.parse_args(again[1:])) == config


@pytest.mark.parametrize("bad", [dict(input_size=64), dict(batch_size=0), dict(repeats=0),
                                 dict(epochs=-1), dict(models=("a",), family="vgg"),
                                 dict(optimizer="rmsprop"), dict(input_size=None)])
def test_bad_configuration_is_refused(bad):
    with pytest.raises(InputSpecError):
        StudyConfig(**bad)


def test_default_selection_covers_the_seven_families():
    from dnncost import models

    cifar = select_models(StudyConfig())
    assert cifar[0] == "lenet5"
    families = {models.get_model_info(n).family for n in cifar}
    assert families == set(models.STUDY_FAMILIES)
    imagenet = select_models(default_config(224))
    assert {models.get_model_info(n).family for n in imagenet} == set(models.STUDY_FAMILIES)
    assert default_config(224).epochs == 0  # step timing only at 224 by default


def test_missing_dataset_path_is_refused_at_once(tmp_path, capsys):
    db = tmp_path / "s.sqlite"
    missing = tmp_path / "nonexistent"
    assert main(["study", "--models", "lenet5", "--dataset", f"cifar10:{missing}",
                 "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert not db.exists()  # refused before the store was opened


def test_report_folder_that_is_a_file_is_refused_before_the_study(tmp_path, capsys):
    db, out = tmp_path / "s.sqlite", tmp_path / "report.txt"
    out.write_text("not a folder")
    assert main(["study", "--quick", "--db", str(db), "--out", str(out)]) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert not db.exists() and out.read_text() == "not a folder"


def test_corrupt_calibration_is_a_warning_and_the_run_completes(tmp_path, specs, monkeypatch):
    import dnncost.measuring.calibrate as cal

    monkeypatch.setenv(cal.CACHE_ENV, str(tmp_path / "cache"))
    path = cal.calibration_path("cpu", threads=1)
    path.parent.mkdir(parents=True)
    path.write_text("{ this is not json")
    measured = []

    def fake_calibrate(device, *, threads=None, **kwargs):  # the real one takes seconds
        measured.append(threads)
        return cal.Calibration(fingerprint="x", device="cpu", threads=1, created="now",
                               environment={})

    monkeypatch.setattr(cal, "calibrate", fake_calibrate)
    config = _config(specs["tiny"], epochs=0, repeats=1, breakdown=False, threads=1)
    with open_store(tmp_path / "s.sqlite") as store:
        with pytest.warns(cal.CalibrationWarning, match="unreadable.*ignored"):
            summary = run_study(config, store, progress=False)
        assert summary.complete and store.runs()[-1].status == "complete"
        assert measured == [1]  # the corrupt file was set aside and the study measured its own


def test_run_that_fails_is_marked_failed_not_left_running(tmp_path, specs, monkeypatch):
    import dnncost.study.sweep as sweep

    def broken(*args, **kwargs):
        raise RuntimeError("calibration broke on purpose")

    monkeypatch.setattr(sweep, "machine_calibration", broken)
    config = _config(specs["tiny"], epochs=0, repeats=1, breakdown=False)
    with open_store(tmp_path / "s.sqlite") as store:
        with pytest.raises(RuntimeError, match="on purpose"):
            run_study(config, store, progress=False)
        assert store.runs()[-1].status == "failed"


def test_drifted_repeats_are_remeasured_and_stored_with_the_machine_around_them(
        tmp_path, specs, monkeypatch):
    import itertools

    import dnncost.study.sweep as sweep
    from dnncost.measuring.probe import Probe

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path / "cache"))  # a fresh probe reference
    monkeypatch.setattr(sweep, "machine_calibration", lambda *a: (None, None, None, None))
    calls = itertools.count()  # the probe: 3 ms around the first repeat timed (train), then 1 ms
    monkeypatch.setattr(Probe, "run", lambda self, reps=5: 3e-3 if next(calls) < 2 else 1e-3)
    config = _config(specs["tiny"], epochs=0, breakdown=False, repeats=2)
    with open_store(tmp_path / "s.sqlite") as store:
        first = run_study(config, store, progress=False)
        again = run_study(config, store, progress=False)
        (r,) = store.network_results()
    train, evals = r.steps("train"), r.steps("eval")
    # train repeat 1 ran with the probe 3/1 - 1 = 200% slow (> DRIFT_THRESHOLD): re-measured once,
    # within the budget of ceil(0.5 * 2) = 1; eval never drifted
    assert [t.conditions.remeasure for t in train] == [False, False, True]
    assert [t.conditions.remeasure for t in evals] == [False, False]
    assert (first.measured, first.remeasured) == (5, 1)  # 1 count + 2 x (train + eval), 1 extra
    assert (again.measured, again.remeasured) == (0, 0)  # resumed: the budget stays spent
    shifted, later = train[0].conditions, train[2].conditions
    assert shifted.probe_s == 3e-3 and later.probe_s == 1e-3 and later.probe_reference_s == 1e-3
    assert later.cpu_samples is not None and len(later.cpu_samples) == 2  # one per timed step
    assert later.load_average is None or later.load_average >= 0


def test_noisy_cost_vs_work_points_make_one_warning(tmp_path, monkeypatch):
    import warnings

    from dnncost.measuring.measurement import NoisyMeasurementWarning
    from dnncost.study import sweep
    from dnncost.study.work import WorkPoint

    def fake_measure_work(name, **kwargs):
        for i in range(3):  # three noisy points, as time_model warns for each
            warnings.warn(f"{name} train step timing is noisy ({i})", NoisyMeasurementWarning,
                          stacklevel=2)
        warnings.warn("something else", RuntimeWarning, stacklevel=2)  # passed on as it is
        return [WorkPoint(name, b, 32, 1e-3 * b, 1e6 * b) for b in (1, 2, 4, 8)]

    monkeypatch.setattr(sweep, "measure_work", fake_measure_work)
    with open_store(tmp_path / "s.sqlite") as store, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_study(_config("lenet5", work=True, epochs=0), store, progress=False)
    noisy = [str(w.message) for w in caught if issubclass(w.category, NoisyMeasurementWarning)
             and "cost vs work" in str(w.message)]
    assert noisy == ["lenet5 cost vs work: 3 of 4 points timed with an IQR above 10% of the "
                     "median; the machine may be busy"]
    assert not any("timing is noisy (" in str(w.message) for w in caught)
    assert any(str(w.message) == "something else" for w in caught)


# -- time-to-accuracy ---------------------------------------------------------------------------------
def _scripted_validation(monkeypatch, accuracies: list[float]) -> list[float]:
    """Make the n-th validation pass of the study report ``accuracies[n]`` (the last thereafter),
    taking 0.25 s; returns the accuracies handed out."""
    from dnncost.training import trainer

    calls: list[float] = []

    def fake(model, loader, device, precision):
        model.eval()
        accuracy = accuracies[min(len(calls), len(accuracies) - 1)]
        calls.append(accuracy)
        return trainer._Pass(time_s=0.25, data_s=0.0, loss_sum=4.0, correct=round(4 * accuracy),
                             samples=4)  # train_limit 16: 4 validation images

    monkeypatch.setattr(trainer, "_val_pass", fake)
    return calls


def test_training_to_a_target_stores_every_validation_and_the_time_to_it(tmp_path, specs, monkeypatch):
    # train_limit 16 at batch 8: 2 steps an epoch, 2 validations an epoch (after steps 1 and 2).
    # tiny reaches 0.75 >= 0.7 at its 2nd validation; wider never does: 2 epochs x 2 validations
    calls = _scripted_validation(monkeypatch, [0.5, 0.75, 0.25, 0.5, 0.5, 0.5])
    config = _config(specs["tiny"], specs["wider"], epochs=2, target_accuracy=0.7,
                     validations_per_epoch=2, breakdown=False)
    with open_store(tmp_path / "s.sqlite") as store:
        summary = run_study(config, store, progress=False)
        tiny, wider = store.network_results()
        stages = store.stage_times(config_hash=config.config_hash, fingerprint=summary.fingerprint)
    assert len(calls) == 2 + 4
    (run,) = tiny.completed_trainings
    assert [v.val_accuracy for v in run.validations] == [0.5, 0.75]
    t = run.time_to_target
    assert t.reached and (t.steps, t.samples, t.epochs, t.validations) == (2, 16, 1.0, 2)
    assert t.val_time_s == 0.5 and t.max_epochs == 2  # 2 passes x 0.25 s; the cap
    assert [e.epoch for e in run.epochs] == [1]  # stopped at the end of epoch 1
    (missed,) = wider.completed_trainings
    assert [v.index for v in missed.validations] == [1, 2, 3, 4]
    assert not missed.time_to_target.reached and missed.time_to_target.steps == 4
    # the run's stages, stored with it and returned
    (stored,) = stages.values()
    assert {"count", "time", "train", "calibrate", "predict"} <= set(stored)
    assert stored == pytest.approx(dict(summary.stage_seconds))
    assert all(s >= 0 for s in stored.values())


def test_fixed_epochs_train_every_epoch_and_validate_once_each(tmp_path, specs, monkeypatch):
    calls = _scripted_validation(monkeypatch, [1.0])  # would reach any target at once
    config = _config(specs["tiny"], epochs=2, target_accuracy=None, breakdown=False)
    assert config.effective_validations_per_epoch == 1
    with open_store(tmp_path / "s.sqlite") as store:
        run_study(config, store, progress=False)
        (result,) = store.network_results()
    (run,) = result.completed_trainings
    assert len(calls) == 2 and [e.epoch for e in run.epochs] == [1, 2]  # no early stop
    assert [v.epoch for v in run.validations] == [1, 2] and run.time_to_target is None


def test_more_seeds_train_only_the_seeds_not_stored(tmp_path, specs, monkeypatch):
    _scripted_validation(monkeypatch, [0.9])
    one = _config(specs["tiny"], specs["wider"], epochs=1, breakdown=False)
    two = StudyConfig(**{**one.__dict__, "seeds": 2})
    assert two.config_hash == one.config_hash  # seeds, like repeats, add to the stored results
    with open_store(tmp_path / "s.sqlite") as store:
        first = run_study(one, store, progress=False)
        added = run_study(two, store, progress=False)
        results = store.network_results()
    # per network: 1 count + 2 repeats x (train + eval) + 1 training run = 6
    assert (first.measured, first.skipped) == (12, 0)
    assert (added.measured, added.skipped) == (2, 12)  # seed 1 of each network, nothing else
    for r in results:
        assert [t.seed for t in r.completed_trainings] == [0, 1]
        assert all(t.time_to_target.reached for t in r.completed_trainings)


def test_the_training_protocol_enters_the_configuration_hash():
    fixed = StudyConfig(target_accuracy=None)
    assert "target_accuracy" not in fixed.measured and "validations_per_epoch" not in fixed.measured
    assert StudyConfig().measured["target_accuracy"] == 0.9
    assert StudyConfig().measured["validations_per_epoch"] == 2  # the study's cadence, stated
    assert StudyConfig(validations_per_epoch=2).config_hash == StudyConfig().config_hash
    assert StudyConfig(validations_per_epoch=4).config_hash != StudyConfig().config_hash
    assert StudyConfig(target_accuracy=0.95).config_hash != StudyConfig().config_hash
    assert fixed.config_hash != StudyConfig().config_hash
    assert StudyConfig(seeds=3).config_hash == StudyConfig().config_hash


@pytest.mark.parametrize(("bad", "phrase"), [
    (dict(target_accuracy=1.5), r"target accuracy must lie in \(0, 1\]"),
    (dict(target_accuracy=0.0), r"target accuracy must lie in \(0, 1\]"),
    (dict(validations_per_epoch=0), "validations per epoch must be a positive integer"),
    (dict(seeds=0), "seeds must be a positive integer"),
])
def test_a_bad_training_protocol_is_one_clear_line(bad, phrase):
    with pytest.raises(InputSpecError, match=phrase):
        StudyConfig(**bad)


def test_fixed_epochs_and_a_target_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["study", "--fixed-epochs", "--target-accuracy", "0.8"])
    assert exit_.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_quick_model_is_drawn_in_a_child_process_that_does_not_outlive_it(tmp_path,
                                                                               monkeypatch):
    """fit_quick_model spawns one process for the calibration (a fresh process, as `dnncost
    calibrate` is), gets its model back as plain data, saves it to the cache, and leaves no
    process behind."""
    import multiprocessing
    import os

    from dnncost.prediction.calibration import Focus
    from dnncost.prediction.model import OperatorModel
    from dnncost.prediction.storage import load_operator_model
    from dnncost.study.calibration import fit_quick_model

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path / "cache"))
    seen: list[int] = []
    real = multiprocessing.get_context

    def spy(method=None):  # noqa: ANN001, ANN202
        seen.append(os.getpid())
        return real(method)

    monkeypatch.setattr(multiprocessing, "get_context", spy)
    data = fit_quick_model(1, Focus((3, 16, 16), 2), budget_s=0.0, min_networks=2)
    model = OperatorModel.from_dict(data)
    assert model.quick and model.focus == "2x3x16x16" and model.threads == 1
    assert seen and not multiprocessing.active_children()
    assert load_operator_model("cpu", threads=1).to_dict() == data  # saved as `calibrate` saves


def test_the_quick_model_is_drawn_here_when_no_child_can_run_it(tmp_path, monkeypatch):
    """A script without `if __name__ == "__main__":` cannot spawn: the study warns and draws the
    quick calibration in its own process rather than losing its predictor."""
    import concurrent.futures
    from concurrent.futures.process import BrokenProcessPool

    from dnncost.prediction.calibration import Focus
    from dnncost.prediction.model import OperatorModel
    from dnncost.study.calibration import fit_quick_model

    class Unspawnable:
        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            raise BrokenProcessPool("a child process terminated abruptly")

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Unspawnable)
    with pytest.warns(UserWarning, match="could not run in a fresh process"):
        data = fit_quick_model(1, Focus((3, 16, 16), 2), budget_s=0.0, min_networks=2)
    assert OperatorModel.from_dict(data).quick
