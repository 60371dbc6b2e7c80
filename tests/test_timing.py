"""dnncost.measuring.timing: Measurement statistics, time_model's steps, threads, state, devices, errors."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from dnncost.core.device import BatchTooLargeError, StepClock, resolve_device
from dnncost.core.environment import MachineLoad
from dnncost.core.errors import (
    DeviceError,
    DnncostError,
    InputSpecError,
    ModelFailedError,
    TrainingDivergedError,
)
from dnncost.core.step import Mode, primary_output, random_targets
from dnncost.measuring.measurement import Measurement, NoisyMeasurementWarning
from dnncost.measuring.probe import Probe as ReferenceProbe
from dnncost.measuring.probe import record_probe
from dnncost.measuring.timing import BusyMachineWarning, time_model

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
pytestmark = pytest.mark.filterwarnings("ignore::dnncost.measuring.measurement.NoisyMeasurementWarning")
QUIET = MachineLoad(load_average=0.0, steal_share=0.0, others_share=0.0, cpu_mhz=None, cores=2,
                    threads=1)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe references and calibrations go to a fresh cache, not the user's."""
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))


def tiny_net(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, classes))


class Probe(nn.Module):
    """Records, at each forward, the training flag, grad mode and thread count it runs under."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.seen: list[tuple[bool, bool, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_grad_enabled(), torch.get_num_threads()))
        return self.fc(x)


# -- Measurement ----------------------------------------------------------------------------------
def test_measurement_statistics_match_hand_arithmetic() -> None:
    m = Measurement(tuple(float(i) for i in range(1, 11)))  # 1..10 seconds
    assert m.median == 5.5  # (5 + 6) / 2
    assert m.iqr == pytest.approx(4.5)  # numpy linear percentiles: q3 7.75 - q1 3.25
    assert m.cv == pytest.approx(3.0276504 / 5.5)  # sample std of 1..10 = sqrt(55/6) / mean 5.5
    # n = 10: P(Bin(10, 1/2) <= 1) = 11/1024, so [x(2), x(9)] covers the median with 97.9% >= 95%,
    # while [x(3), x(8)] gives only 1 - 2 * 56/1024 = 89%.
    assert m.ci95 == (2.0, 9.0)
    assert m.noisy  # IQR/median = 4.5/5.5 > 10%


def test_measurement_quiet_and_too_few_for_an_interval() -> None:
    quiet = Measurement((1.00, 1.01, 0.99, 1.00, 1.02, 0.98))
    assert not quiet.noisy  # IQR 0.0175 / median 1.0 < 10%
    few = Measurement((1.0, 2.0, 3.0))
    assert all(math.isnan(v) for v in few.ci95)  # the (min, max) interval covers only 75% at n = 3
    with pytest.raises(ValueError):
        Measurement(())


# -- time_model -----------------------------------------------------------------------------------
def test_train_step_samples_environment_and_flops() -> None:
    model = tiny_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    timing = time_model(model, (1, 6, 6), batch_size=4, mode="train", threads=1, warmup=1, steps=7)
    m = timing.measurement
    assert m.n == 7 and all(s > 0 for s in m.samples)
    assert (timing.mode, timing.batch_size, timing.threads, timing.device) == (Mode.TRAIN, 4, 1, "cpu")
    assert timing.environment.threads == 1 and timing.environment.torch_version == torch.__version__
    from dnncost.counting.counter import count

    expected = count(model, mode="train", batch_size=4, input_shape=(1, 6, 6)).total().flops
    assert timing.flops == expected
    assert timing.achieved_flops_per_s == pytest.approx(expected / m.median)
    assert timing.optimizer == "sgd" and timing.dtype == "float32"
    # time_model trains for a few steps but leaves the model as it found it
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_eval_step_runs_in_eval_mode_without_grad_and_restores_flags() -> None:
    probe = Probe()
    probe.train()
    threads_before = torch.get_num_threads()
    timing = time_model(probe, (4,), batch_size=2, mode="eval", threads=1, warmup=2, steps=3,
                        count_flops=False)
    assert probe.seen == [(False, False, 1)] * 5  # 2 warm-up + 3 timed, eval mode, no grad, 1 thread
    assert timing.optimizer is None and timing.flops is None and timing.efficiency is None
    assert probe.training and torch.get_num_threads() == threads_before


def test_train_step_runs_in_train_mode_with_the_requested_threads() -> None:
    probe = Probe()
    probe.eval()
    time_model(probe, (4,), batch_size=2, mode="train", threads=1, warmup=1, steps=2,
               count_flops=False)
    # the first call infers the labels (no grad); then 1 warm-up + 2 timed steps with grad
    assert probe.seen == [(True, False, 1)] + [(True, True, 1)] * 3
    assert not probe.training


def test_budget_runs_at_least_enough_samples_for_an_interval() -> None:
    timing = time_model(tiny_net(), (1, 6, 6), batch_size=2, warmup=0, budget_s=1e-9,
                        count_flops=False)
    assert timing.measurement.n == 6  # the budget is spent at once; MIN_SAMPLES_FOR_CI = 6
    assert not any(math.isnan(v) for v in timing.measurement.ci95)


def test_noisy_run_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = iter([0.001, 0.002] * 10)  # alternating 1 ms / 2 ms: IQR 1 ms on a 1.5 ms median
    monkeypatch.setattr(StepClock, "stop", lambda self: next(fake))
    with pytest.warns(NoisyMeasurementWarning, match="noisy"):
        timing = time_model(tiny_net(), (1, 6, 6), batch_size=1, warmup=0, steps=10,
                            count_flops=False, probe=False)
    assert timing.measurement.noisy


def test_quiet_run_does_not_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(StepClock, "stop", lambda self: 0.001)  # the probe's clock too: no drift
    monkeypatch.setattr("dnncost.measuring.timing.machine_load", lambda *a, **k: QUIET)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoisyMeasurementWarning)
        timing = time_model(tiny_net(), (1, 6, 6), batch_size=1, warmup=0, steps=6, count_flops=False)
    assert timing.measurement.median == 0.001 and not timing.measurement.noisy
    assert timing.probe is not None and timing.probe.drift == 0.0 and not timing.shifted


def test_run_carries_its_probe_and_machine_load() -> None:
    timing = time_model(tiny_net(), (1, 6, 6), batch_size=2, threads=1, warmup=0, steps=3,
                        count_flops=False)
    probe = timing.probe
    assert probe is not None and probe.before_s > 0 and probe.after_s > 0
    assert probe.reference_s is not None and probe.reference_s <= min(probe.before_s, probe.after_s)
    assert timing.load is not None and timing.load.threads == 1
    data = timing.to_dict()
    assert data["probe"]["reference_s"] == probe.reference_s and "others_share" in data["load"]
    assert timing.to_row()["probe_drift"] == probe.drift
    cpu = timing.measurement.cpu_samples  # per step, this process's CPU time / 1 thread
    assert len(cpu) == 3 and all(c >= 0 for c in cpu)


def test_whole_run_shift_warns_from_the_probe_although_the_steps_agree(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lenet5 case: every step 100x slower, within-run spread nil; only the probe can tell."""
    record_probe(1e-3, "cpu", threads=1)  # the quiet machine's probe, on record
    monkeypatch.setattr(StepClock, "stop", lambda self: 0.274)  # steps agree to the microsecond
    monkeypatch.setattr(ReferenceProbe, "run", lambda self, reps=3: 2e-3)  # the machine is 2x slower now
    monkeypatch.setattr("dnncost.measuring.timing.machine_load", lambda *a, **k: QUIET)
    with pytest.warns(BusyMachineWarning, match=r"probe took \+100% longer") as caught:
        timing = time_model(tiny_net(), (1, 6, 6), batch_size=1, threads=1, warmup=0, steps=6,
                            count_flops=False)
    assert not timing.measurement.noisy and timing.shifted
    assert timing.probe is not None and timing.probe.drift == pytest.approx(1.0)  # 2 / 1 - 1
    assert len(caught) == 1  # the probe's warning only: the steps are not noisy, the machine quiet


def test_busy_machine_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    busy = MachineLoad(load_average=3.0, steal_share=0.0, others_share=0.9, cpu_mhz=None, cores=2,
                       threads=1)
    monkeypatch.setattr("dnncost.measuring.timing.machine_load", lambda *a, **k: busy)
    with pytest.warns(BusyMachineWarning, match="busy during this run .*other processes used 1.8"):
        timing = time_model(tiny_net(), (1, 6, 6), batch_size=1, threads=1, warmup=0, steps=2,
                            count_flops=False, probe=False)
    assert timing.load is busy and timing.probe is None


def test_efficiency_uses_the_stored_calibration(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dnncost.core.environment import machine_fingerprint
    from dnncost.measuring.calibrate import Calibration, MatmulPeak, save_calibration

    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))
    peak = MatmulPeak("float32", 64, 1e12, Measurement((1e-6,)))
    save_calibration(Calibration(machine_fingerprint("cpu", threads=1), "cpu", 1, "now", {},
                                 matmul={"float32": peak}))
    timing = time_model(tiny_net(), (1, 6, 6), batch_size=2, threads=1, warmup=0, steps=2)
    assert timing.peak_flops_per_s == 1e12
    assert timing.efficiency == pytest.approx(timing.achieved_flops_per_s / 1e12)


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["tpu", "cdua", "meta", "cuda:99"])
def test_unknown_or_absent_devices_are_device_errors(device: str) -> None:
    if device == "cuda:99" and not torch.cuda.is_available():
        device = "cuda"  # without CUDA any cuda request must fail
    with pytest.raises(DeviceError):
        resolve_device(device)
    with pytest.raises(DeviceError):
        time_model(tiny_net(), (1, 6, 6), batch_size=1, device=device, count_flops=False)


@pytest.mark.parametrize("batch_size", [0, -3])
def test_non_positive_batch_size_is_an_input_error(batch_size: int) -> None:
    with pytest.raises(InputSpecError, match="batch size"):
        time_model(tiny_net(), (1, 6, 6), batch_size=batch_size, count_flops=False)


def test_non_positive_threads_is_refused() -> None:
    with pytest.raises(DeviceError, match="threads"):
        time_model(tiny_net(), (1, 6, 6), batch_size=1, threads=0, count_flops=False)


class OutOfMemoryAt(nn.Module):
    """Raises the allocator's out-of-memory error from the forward pass."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.exc = exc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise self.exc


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
])
def test_out_of_memory_names_batch_and_device_and_loses_nothing(exc: Exception) -> None:
    model = OutOfMemoryAt(exc)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    with pytest.raises(BatchTooLargeError, match=r"batch size 4096 .* cpu") as info:
        time_model(model, (4,), batch_size=4096, threads=1, count_flops=False)
    assert isinstance(info.value, DnncostError)
    assert torch.get_num_threads() == threads
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_other_runtime_errors_are_not_disguised_as_out_of_memory() -> None:
    # the model's own error is named as such (dnncost.core.failure), never as a batch too large
    with pytest.raises(ModelFailedError, match="shape mismatch") as info:
        time_model(OutOfMemoryAt(RuntimeError("shape mismatch")), (4,), batch_size=2, count_flops=False)
    assert not isinstance(info.value, BatchTooLargeError)


class NaNOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * float("nan")


def test_nan_loss_is_a_divergence_error() -> None:
    with pytest.raises(TrainingDivergedError, match="warm-up step 0"):
        time_model(NaNOutput(), (4,), batch_size=2, warmup=1, count_flops=False)
    with pytest.raises(TrainingDivergedError, match="timed step 0"):
        time_model(NaNOutput(), (4,), batch_size=2, warmup=0, count_flops=False)


# -- helpers ------------------------------------------------------------------------------------------
def test_primary_output_and_random_targets() -> None:
    logits = torch.zeros(2, 5)
    assert primary_output(logits) is logits
    assert primary_output((logits, torch.ones(1))) is logits
    assert primary_output({"aux": torch.ones(1), "out": logits}) is logits
    seg = random_targets(torch.zeros(2, 5, 3, 3), generator=torch.Generator().manual_seed(0))
    assert seg.shape == (2, 3, 3) and seg.dtype == torch.long and int(seg.max()) < 5


# -- GPU ------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@requires_cuda
def test_gpu_step_uses_cuda_events_and_reports_device_memory() -> None:
    model = tiny_net()
    timing = time_model(model, (1, 6, 6), batch_size=8, device="cuda", warmup=2, steps=6)
    assert timing.device.startswith("cuda") and timing.measurement.n == 6
    assert timing.peak_memory_bytes > 0 and "cuda.max_memory_allocated" in timing.peak_memory_source
    assert next(model.parameters()).device.type == "cpu"  # moved back home
    clock = StepClock(torch.device("cuda"))
    clock.start()
    torch.cuda._sleep(1_000_000)  # ~ milliseconds of GPU work queued asynchronously
    assert clock.stop() > 0  # the end event was waited for, so the sleep was inside the interval


def test_machine_load_describes_what_it_could_read() -> None:
    load = MachineLoad(load_average=1.5, steal_share=0.011, others_share=0.25, cpu_mhz=2596.0,
                       cores=2, threads=2)
    # others: 0.25 of the machine's CPU time x 2 cores = 0.50 cores
    assert load.describe() == ("load average 1.50, other processes 0.50 of 2 cores, steal 1.1%, "
                               "CPU 2596 MHz")
    unread = MachineLoad(load_average=None, steal_share=None, others_share=None, cpu_mhz=None,
                         cores=2, threads=2)
    assert unread.describe() == "unknown"
