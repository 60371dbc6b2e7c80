"""A group of networks timed round robin in a fresh process: every repeat comes back as it
finishes, a failing network is dropped while the others go on, a request names only the package's
own builders, and no process is left behind when the caller stops."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from torch import nn

from dnncost.core.errors import DnncostError
from dnncost.core.kinds import Mode
from dnncost.measuring.measurement import Measurement
from dnncost.measuring.probe import ProbeReading
from dnncost.measuring.timing import StepOptions
from dnncost.prediction.fresh_process import (
    FreshJob,
    FreshProcessError,
    Repeat,
    time_round_robin,
)
from dnncost.prediction.recheck import RecheckError

OPTIONS = StepOptions(batch_size=2, mode=Mode.EVAL, warmup=1, steps=2)


def job(name: str, network: str = "random1", builder: str = "dnncost.prediction.recheck:rebuild_network"
        ) -> FreshJob:
    return FreshJob(name, builder, (network, 32), (3, 32, 32), OPTIONS)


def children() -> set[int]:
    """This process's child processes (Linux; the suite's other tests may keep some of their own,
    such as multiprocessing's resource tracker, so tests compare before and after)."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        found |= {int(p) for p in (task / "children").read_text().split()}
    return found


def test_a_job_and_a_repeat_survive_the_trip_as_json() -> None:
    j = job("a")
    assert FreshJob.from_dict(j.to_dict()) == j
    assert isinstance(j.build(), nn.Module)  # the builder in the package, called with its arguments
    r = Repeat(Measurement((0.01, 0.02)), ProbeReading(1e-3, 2e-3, 1e-3), 1.5e-3)
    assert Repeat.from_dict(r.to_dict()) == r


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="lists child processes via /proc")
def test_a_group_runs_round_robin_in_a_fresh_process_and_drops_what_fails() -> None:
    before = children()
    seen: list[tuple[str, int, int]] = []
    errors: dict[str, Exception] = {}
    jobs = [job("a"), job("gone", network="nosuch"), job("b", network="random2"),
            job("outside", builder="os:getcwd")]

    def failed(name: str, exc: Exception) -> None:
        errors[name] = exc

    time_round_robin(jobs, repeats=2, fresh=True, on_error=failed,
                     on_repeat=lambda name, i, r: seen.append((name, i, r.measurement.n)))
    assert seen == [("a", 0, 2), ("b", 0, 2), ("a", 1, 2), ("b", 1, 2)]  # A B A B, 2 steps each
    assert isinstance(errors["gone"], DnncostError) and not isinstance(errors["gone"], RecheckError)
    assert "cannot rebuild the calibration's network 'nosuch'" in str(errors["gone"])
    assert isinstance(errors["outside"], FreshProcessError)  # not the package's: refused there
    assert "'dnncost.module:function', got 'os:getcwd'" in str(errors["outside"])
    assert children() <= before


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="lists child processes via /proc")
def test_a_caller_that_stops_leaves_no_process_behind() -> None:
    before = children()

    def stop(name: str, index: int, result: Repeat) -> None:
        assert children() - before  # the fresh process is there while it times
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        time_round_robin([job("a"), job("b")], repeats=3, fresh=True, on_repeat=stop,
                         on_error=lambda name, exc: None)
    assert children() <= before


def test_in_this_process_the_same_callbacks_are_called_with_the_steady_probe_where_asked() -> None:
    seen: list[tuple[str, int, float | None]] = []
    time_round_robin([job("a"), job("b")], repeats=2, fresh=False, steady_probe={"a"},
                     on_repeat=lambda name, i, r: seen.append((name, i, r.steady_probe_s)),
                     on_error=lambda name, exc: pytest.fail(str(exc)))
    assert [(name, i) for name, i, _ in seen] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert all(probe is not None and probe > 0 for name, _, probe in seen if name == "a")
    assert all(probe is None for name, _, probe in seen if name == "b")  # not asked for: not read
