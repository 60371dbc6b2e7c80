"""dnncost.measuring.interleave: round-robin repeats over networks, probe-driven re-measuring."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from dnncost.core.device import StepClock
from dnncost.core.errors import InputSpecError
from dnncost.measuring.interleave import StoredRepeats, TimingJob, time_interleaved
from dnncost.measuring.measurement import Estimator
from dnncost.measuring.probe import Probe, ProbeReading
from dnncost.measuring.timing import StepOptions

OPTS = StepOptions(batch_size=2, threads=1, warmup=0, steps=2)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNNCOST_CACHE_DIR", str(tmp_path))


class Logged(nn.Module):
    """A linear layer that appends its name to a shared log at every forward."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log, self.fc = name, log, nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        return self.fc(x)


def jobs(log: list[str], names: str = "ABC") -> list[TimingJob]:
    torch.manual_seed(0)
    return [TimingJob(n, Logged(n, log), (4,), OPTS) for n in names]


def test_repeats_go_round_robin() -> None:
    log: list[str] = []
    seen: list[tuple[str, int]] = []
    run = time_interleaved(jobs(log), repeats=3, probe=False,
                           on_repeat=lambda name, i, timing: seen.append((name, i)))
    # each repeat: 1 label-inference forward + 2 timed steps of one network, then the next network
    runs = [k for k, _ in itertools.groupby(log)]
    assert runs == list("ABC" * 3)
    assert seen == [(n, i) for i in range(3) for n in "ABC"]
    assert run.remeasured == 0 and run.drift == () and run.reference_s is None
    assert all(len(job.timings) == 3 for job in run.jobs.values())


def test_shifted_repeats_are_remeasured_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # probe before/after of each repeat, in order: A0 B0 at 1 ms; A1 at 3 ms (shifted); B1 1 ms;
    # then A's re-measure at 1 ms
    probes = iter([1e-3, 1e-3, 1e-3, 1e-3, 3e-3, 3e-3, 1e-3, 1e-3, 1e-3, 1e-3])
    monkeypatch.setattr(Probe, "run", lambda self, reps=3: next(probes))
    times = iter([1.0, 1.0] * 2 + [5.0, 5.0] + [2.0, 2.0] + [1.1, 1.1])  # per step, same order
    monkeypatch.setattr(StepClock, "stop", lambda self: next(times))
    log: list[str] = []
    run = time_interleaved(jobs(log, "AB"), repeats=2)
    a, b = run.jobs["A"], run.jobs["B"]
    assert run.reference_s == 1e-3 and run.remeasured == 1
    assert [k for k, _ in itertools.groupby(log)] == list("ABABA")
    assert a.shifted == (False, True, False)  # 3 ms / 1 ms - 1 = 200% > DRIFT_THRESHOLD
    assert a.repeats.medians == (1.0, 5.0, 1.1)  # every repeat kept, the shifted one too
    assert a.kept.medians == (1.0, 1.1)  # the estimate leaves the shifted one out
    assert a.estimate(Estimator.MEDIAN) == pytest.approx(1.05)  # (1.0 + 1.1) / 2
    assert a.estimate(Estimator.MIN_OF_MEDIANS) == 1.0
    assert b.shifted == (False, False) and b.estimate(Estimator.MEDIAN) == 1.5  # (1 + 2) / 2
    assert run.max_drift == pytest.approx(2.0)
    assert [p.job for p in run.drift] == list("ABABA")
    assert run.to_dict()["remeasured"] == 1
    # the probes recorded the first 1 ms as the best on record: the run's quiet level is that too
    assert run.record_s == 1e-3 and run.shift == pytest.approx(0.0)


def test_remeasure_budget_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    slow = itertools.chain([1e-3, 1e-3], itertools.repeat(5e-3))  # every repeat after the first shifted
    monkeypatch.setattr(Probe, "run", lambda self, reps=3: next(slow))
    run = time_interleaved(jobs([], "A"), repeats=2, remeasure=3)
    assert run.remeasured == 3 and len(run.jobs["A"].timings) == 5  # 2 + at most 3 more


def test_job_names_must_be_unique() -> None:
    with pytest.raises(InputSpecError, match="unique"):
        time_interleaved(jobs([], "AA"), repeats=1, probe=False)


def test_resume_joins_at_the_stored_round_and_errors_drop_only_their_job() -> None:
    log: list[str] = []
    torch.manual_seed(0)
    bad = TimingJob("X", nn.Linear(5, 3), (4,), OPTS)  # wrong input width: its forward raises
    errors: list[str] = []
    seen: list[tuple[str, int]] = []
    run = time_interleaved([*jobs(log, "AB"), bad], repeats=3, probe=False, already={"A": 2},
                           on_repeat=lambda name, i, t: seen.append((name, i)),
                           on_error=lambda name, exc: errors.append(name))
    # A had 2 stored repeats: it joins in round 3; X fails at once and is dropped, B goes on
    assert seen == [("B", 0), ("B", 1), ("A", 2), ("B", 2)]
    assert errors == ["X"] and set(run.jobs) == {"A", "B"} and len(run.jobs["A"].timings) == 1


def test_resume_counts_stored_probes_and_spent_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Probe, "run", lambda self, reps=3: 1e-3)  # every new repeat: a quiet machine
    quiet, drifted = ProbeReading(1e-3, 1e-3, 1e-3), ProbeReading(3e-3, 3e-3, 1e-3)  # 3/1 - 1 = 200%
    seen: list[tuple[str, int]] = []
    run = time_interleaved(
        jobs([], "ABC"), repeats=2, remeasure=1,
        already={"A": StoredRepeats(planned=2, probes=(quiet, drifted)),
                 "B": StoredRepeats(planned=2, remeasured=1, probes=(drifted, drifted, drifted)),
                 "C": 2},  # no probes known: nothing to re-measure
        on_repeat=lambda name, i, t: seen.append((name, i)))
    # A: both planned repeats stored, one drifted -> one re-measure, numbered after the planned ones;
    # B: drifted too, but the interrupted run spent its budget of 1
    assert seen == [("A", 2)] and run.remeasured == 1 and set(run.jobs) == {"A"}
    assert [p.repeat for p in run.drift] == [2] and run.reference_s == 1e-3
