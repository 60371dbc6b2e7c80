"""`dnncost time`, `dnncost train` and `dnncost calibrate` in-process: output formats and exit codes."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from dnncost.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::dnncost.measuring.measurement.NoisyMeasurementWarning")
QUICK = ["--batch-size", "4", "--steps", "3", "--warmup", "1", "--threads", "1"]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_time_json_has_raw_samples_and_environment(capsys) -> None:
    assert main(["time", "lenet5", *QUICK, "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    (timing,) = payload["timings"]
    assert timing["mode"] == "train" and timing["batch_size"] == 4 and timing["threads"] == 1
    assert len(timing["measurement"]["samples_s"]) == 3
    assert timing["input_shape"] == [1, 32, 32] and timing["flops"] > 0
    assert timing["environment"]["cpu_cores"] >= 1 and payload["breakdowns"] == []


def test_time_both_modes_as_csv(capsys) -> None:
    assert main(["time", "lenet5", *QUICK, "--mode", "both", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["mode"] for r in rows] == ["train", "eval"]
    assert all(float(r["median_ms"]) > 0 for r in rows)


def test_time_table_with_breakdown_states_the_gap(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import dnncost.counting.counter as counter
    import dnncost.measuring.timing as timing

    counted = []

    def counting(real):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            counted.append(kwargs.get("mode"))
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(timing, "count", counting(timing.count))
    monkeypatch.setattr(counter, "count", counting(counter.count))
    assert main(["time", "lenet5", *QUICK, "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "lenet5: step time" in out and "where the train step's time goes" in out
    assert "Conv2d" in out and "gap" in out and "flops_share" in out
    assert counted == ["train"]  # the breakdown reuses the timer's count of the same step
    # no calibration in the empty cache: the command to run is quoted whole
    assert "run 'dnncost calibrate --threads 1'" in out


def test_mnasnet_can_be_timed(capsys) -> None:
    """Issue 11 #1: MNASNet's loader needs the state dict's version metadata, which timing's
    preserved() must keep when it puts the weights back."""
    assert main(["time", "torchvision:mnasnet0_5", "--input", "3x32x32", "--batch-size", "2",
                 "--repeats", "1", "--warmup", "0", "--threads", "1", "--format", "json"]) == 0
    (timing,) = json.loads(capsys.readouterr().out)["timings"]
    assert timing["model"] == "mnasnet0_5" and timing["mode"] == "train"


def test_calibrate_then_time_reports_efficiency(capsys, cache: Path) -> None:
    assert main(["calibrate", "--quick", "--threads", "1", "--format", "json"]) == 0
    (stored,) = json.loads(capsys.readouterr().out)["calibrations"]
    assert Path(stored["path"]).parent == cache / "calibration"
    assert stored["matmul"]["float32"]["flops_per_s"] > 0 and stored["bandwidth"]["bytes_per_s"] > 0
    assert main(["time", "lenet5", *QUICK, "--format", "json"]) == 0
    (timing,) = json.loads(capsys.readouterr().out)["timings"]
    peak = max(stored["matmul"]["float32"]["flops_per_s"], stored["conv"]["float32"]["flops_per_s"])
    assert timing["efficiency"] == pytest.approx(timing["achieved_flops_per_s"] / peak)


@pytest.mark.parametrize("argv, message", [
    (["time", "lenet5", "--device", "tpu"], "unknown device 'tpu'"),
    (["time", "lenet5", "--device", "cuda:7"], "cuda"),
    (["time", "lenet5", "--batch-size", "0"], "batch size must be a positive integer"),
    (["train", "lenet5", "--dataset", "cifar10:/no/such/dir", "--no-progress"], "cifar-10-batches-py"),
    (["train", "lenet5", "--dataset", "imagenet", "--no-progress"], "unknown dataset"),
    (["calibrate", "--dtypes", "float8", "--quick"], "unknown dtype"),
    (["calibrate", "--threads", "two", "--quick"], "--threads takes positive integers"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv: list[str], message: str) -> None:
    import torch

    if "cuda:7" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_train_reports_each_epoch(capsys) -> None:
    argv = ["train", "lenet5", "--epochs", "2", "--batch-size", "64", "--threads", "1",
            "--no-progress", "--format", "json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    first = result["epochs"][0]
    assert first["train_time_s"] > 0 and first["val_time_s"] > 0 and first["data_time_s"] > 0
    assert first["train_samples"] == 1437 and result["dataset"] == "digits"
    assert "scikit-learn digits" in result["dataset_description"]


def test_train_cli_defaults_mirror_the_library() -> None:
    from dnncost.commands import train as command
    from dnncost.training.trainer import (
        DEFAULT_BATCH_SIZE,
        DEFAULT_EPOCHS,
        DEFAULT_LR,
        VALIDATIONS_PER_EPOCH,
    )

    assert (command.DEFAULT_EPOCHS, command.DEFAULT_BATCH_SIZE, command.DEFAULT_LR,
            command.VALIDATIONS_PER_EPOCH) == (DEFAULT_EPOCHS, DEFAULT_BATCH_SIZE, DEFAULT_LR,
                                               VALIDATIONS_PER_EPOCH)


def test_time_warns_when_the_machine_was_busy(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import dnncost.measuring.timing as timing
    from dnncost.core.environment import MachineLoad

    busy = MachineLoad(load_average=3.5, steal_share=0.0, others_share=0.9, cpu_mhz=None, cores=2,
                       threads=1)  # others used 0.9 x 2 = 1.8 cores while 1 thread was timed
    monkeypatch.setattr(timing, "machine_load", lambda *a, **k: busy)
    assert main(["time", "lenet5", *QUICK]) == 0
    out, err = capsys.readouterr()
    assert "warning: lenet5 train step: the machine was busy during this run (other processes " \
           "used 1.8 of 2 cores while 1 thread(s) were timed)" in err
    assert "machine during the train step (BUSY): " in out and "load average 3.50" in out


def test_steps_is_the_flag_and_repeats_its_hidden_old_name(capsys) -> None:
    from dnncost.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["time", "lenet5", "--steps", "4"]).steps == 4
    assert parser.parse_args(["time", "lenet5", "--repeats", "4"]).steps == 4  # still understood
    assert parser.parse_args(["time", "lenet5"]).steps == 10
    with pytest.raises(SystemExit):
        main(["time", "--help"])
    text = capsys.readouterr().out
    assert "--steps N" in text and "--repeats" not in text
