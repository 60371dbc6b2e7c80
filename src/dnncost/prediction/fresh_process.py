"""Time a group of networks round robin in a fresh Python process, as ``dnncost time`` would.

A process that has trained large networks runs the validation steps it times next slower than a
fresh one: on a 2-core Xeon VM, 12 of 12 timm networks' 32x32 validation steps by a median of
8-14% after the 32x32 training steps of the same 12 (four runs, fresh and trained processes
alternated), with no page faults in either to account for it, and neither trimming the heap nor a
64x larger oneDNN primitive cache undid it (``benchmarks/process_history.py``, docs/results.md);
after a calibration, its process ran both steps 16-25% slower than a fresh one
(``benchmarks/calibration_process.py``).
``evaluate --unseen`` timed its training groups before its validation groups, so in one process it
read validation steps slower than ``dnncost time`` does. Through this module each of its groups
(one input size and step) runs in a process of its own, started fresh, and so does each step of a
recheck (:mod:`dnncost.prediction.recheck`), so that the judge and the machine's level read a step
as a user does.

The request goes to the child as JSON on stdin: each job's name, its builder (a function in the
``dnncost`` package, named ``module:function``, and its JSON arguments), one sample's input shape
and its step options. Each repeat comes back as one JSON line on stdout, as it finishes, so the
caller keeps it at once. Nothing is pickled. The child dies with its caller
(:func:`dnncost.distributed.orphans.die_with_parent`) and is killed if the caller stops early.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import IO, Any

import torch
from torch import nn

from dnncost.core.device import using_threads
from dnncost.core.errors import DnncostError
from dnncost.distributed.orphans import die_with_parent
from dnncost.measuring.interleave import TimingJob, time_interleaved
from dnncost.measuring.measurement import STUDY_ESTIMATOR, Measurement, estimate
from dnncost.measuring.probe import Probe, ProbeReading
from dnncost.measuring.timing import StepOptions, StepTiming

PACKAGE = "dnncost."  # builders are looked up only inside the package: a request names no other code
FRESH = True  # time_round_robin's default: a fresh process (tests that stand in for the timer in
# this process set it False)


@dataclass(frozen=True)
class FreshJob:
    """One network to time: a name unique in the group, the builder that makes a fresh instance
    for each repeat (``"dnncost.module:function"``, called with ``args``), one sample's input
    shape, and the step options."""

    name: str
    builder: str
    args: tuple[Any, ...]
    input_shape: tuple[int, ...]
    options: StepOptions

    def to_dict(self) -> dict[str, object]:
        options = {f.name: getattr(self.options, f.name) for f in dataclasses.fields(StepOptions)}
        options["mode"], options["optimizer"] = self.options.mode.value, self.options.optimizer.value
        return {"name": self.name, "builder": self.builder, "args": list(self.args),
                "input_shape": list(self.input_shape), "options": options}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FreshJob:
        return cls(str(data["name"]), str(data["builder"]), tuple(data["args"]),
                   tuple(int(s) for s in data["input_shape"]), StepOptions(**data["options"]))

    def build(self) -> nn.Module:
        """A fresh instance, from the builder inside the ``dnncost`` package."""
        module_name, _, function = self.builder.partition(":")
        if not module_name.startswith(PACKAGE) or not function:
            raise ValueError(f"a builder is 'dnncost.module:function', got '{self.builder}'")
        return getattr(importlib.import_module(module_name), function)(*self.args)


@dataclass(frozen=True)
class Repeat:
    """One repeat of one job: its timed steps, the reference probe around it, and (when asked
    for) the probe read steady right after it (``Probe.steady``, as the calibration reads it)."""

    measurement: Measurement
    probe: ProbeReading | None = None
    steady_probe_s: float | None = None

    @property
    def step_s(self) -> float:
        """The repeat's measured step: STUDY_ESTIMATOR over its timed steps."""
        return estimate([self.measurement.samples], STUDY_ESTIMATOR)

    def to_dict(self) -> dict[str, object]:
        return {"samples": list(self.measurement.samples),
                "probe": dataclasses.asdict(self.probe) if self.probe is not None else None,
                "steady_probe_s": self.steady_probe_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Repeat:
        probe = data.get("probe")
        return cls(Measurement(tuple(float(s) for s in data["samples"])),
                   ProbeReading(**probe) if probe else None, data.get("steady_probe_s"))


class FreshProcessError(RuntimeError):
    """The fresh process hit an error that is not dnncost's (a bug, not a bad input), or stopped
    before finishing its group."""


OnRepeat = Callable[[str, int, Repeat], None]
OnError = Callable[[str, Exception], None]


def time_round_robin(jobs: Sequence[FreshJob], *, repeats: int, on_repeat: OnRepeat,
                     on_error: OnError, steady_probe: Collection[str] = (),
                     fresh: bool | None = None) -> None:
    """Time every job ``repeats`` times round robin (:func:`time_interleaved`, no re-measures),
    in a fresh process (``fresh``; default FRESH) or in this one; a job that leaves its thread
    count to the process runs at this process's. ``on_repeat`` gets (job, repeat index,
    :class:`Repeat`) as each repeat finishes; ``on_error`` gets a job whose repeat raised, and the
    job is dropped while the others go on; from a fresh process the error comes as a
    :class:`DnncostError` with the message where it was one, else as :class:`FreshProcessError`
    naming the job and the exception's type. ``steady_probe``: the jobs after whose repeats the
    reference probe is read steady, in the process that times."""
    if not (FRESH if fresh is None else fresh):
        _run(jobs, repeats=repeats, on_repeat=on_repeat, on_error=on_error, steady_probe=steady_probe)
        return
    threads = torch.get_num_threads()  # the child's default may differ from this process's setting
    jobs = [dataclasses.replace(j, options=j.options.replace(threads=j.options.threads or threads))
            for j in jobs]
    request = json.dumps({"parent": os.getpid(), "repeats": repeats,
                          "steady_probe": sorted(steady_probe),
                          "jobs": [job.to_dict() for job in jobs]})
    child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(request)
        child.stdin.close()
        for line in child.stdout:
            event = json.loads(line)
            if "repeat" in event:
                on_repeat(event["name"], int(event["index"]), Repeat.from_dict(event["repeat"]))
            elif "error" in event:
                on_error(event["name"], DnncostError(event["error"]) if event["dnncost"]
                         else FreshProcessError(f"timing '{event['name']}' in a fresh process "
                                                f"raised {event['type']}: {event['error']}"))
        if child.wait() != 0:
            raise FreshProcessError(f"the fresh timing process exited with status {child.returncode} "
                                    "before finishing its group (its error is above; -9: killed, "
                                    "as when memory runs out)")
    finally:
        if child.poll() is None:  # interrupted, or the caller's callback raised: no child left
            child.kill()
            child.wait()


def _run(jobs: Sequence[FreshJob], *, repeats: int, on_repeat: OnRepeat, on_error: OnError,
         steady_probe: Collection[str]) -> None:
    """The group itself, in whichever process runs it."""
    reference = Probe("cpu") if steady_probe else None
    threads = {job.name: job.options.threads for job in jobs}

    def done(name: str, index: int, timing: StepTiming) -> None:
        steady = None
        if reference is not None and name in steady_probe:
            with using_threads(threads[name]):  # at the step's thread count, as it was timed
                steady = reference.steady()
        on_repeat(name, index, Repeat(timing.measurement, timing.probe, steady))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # per-repeat noise warnings: the repeats carry the noise
        time_interleaved([TimingJob(job.name, job.build, job.input_shape, job.options) for job in jobs],
                         repeats=repeats, remeasure=0, on_repeat=done, on_error=on_error)


def _child(stdin: IO[str], stdout: IO[str]) -> None:
    """The fresh process: read the request, time the group, write one JSON line per event."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's: it stops, then kills this
    request = json.loads(stdin.read())
    die_with_parent(int(request["parent"]))
    jobs = [FreshJob.from_dict(j) for j in request["jobs"]]

    def emit(event: dict[str, object]) -> None:
        stdout.write(json.dumps(event) + "\n")
        stdout.flush()

    def repeat(name: str, index: int, result: Repeat) -> None:
        emit({"name": name, "index": index, "repeat": result.to_dict()})

    def error(name: str, exc: Exception) -> None:  # the job is dropped; the caller decides
        emit({"name": name, "error": str(exc) or type(exc).__name__, "type": type(exc).__name__,
              "dnncost": isinstance(exc, DnncostError)})

    _run(jobs, repeats=int(request["repeats"]), on_repeat=repeat, on_error=error,
         steady_probe=frozenset(request["steady_probe"]))


if __name__ == "__main__":
    _child(sys.stdin, sys.stdout)


__all__ = ["FreshJob", "FreshProcessError", "Repeat", "time_round_robin"]
