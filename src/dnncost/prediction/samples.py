"""The calibration's raw samples, kept beside its cache so the time model can be refitted offline.

``dnncost calibrate --ops`` times the kernels and steps of random networks
(:mod:`dnncost.prediction.calibration`); each timed step is a
:class:`~dnncost.prediction.fitting.NetworkSample` (counted calls, kernel seconds, module and
parameter-tensor counts, step seconds). They are stored here as gzip-compressed JSON -- plain data
that any reader can load safely, never a pickle -- one file per machine fingerprint beside the
calibration file (``<fingerprint>.ops-samples.json.gz``), so a changed model is refitted on the
same measurements without timing again (``dnncost calibrate --ops --refit``).
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnncost.core.cache import cache_dir, write_cache_file
from dnncost.core.errors import DnncostError
from dnncost.core.kinds import Mode
from dnncost.counting.cost import Cost, CostReport, OpRecord, Phase
from dnncost.prediction.errors import CALIBRATE_COMMAND
from dnncost.prediction.fitting import NetworkSample

FORMAT = "dnncost-op-samples"  # source: our choice, names what the file holds
VERSION = 2  # bump when a stored field changes meaning; older files are then refused (2: step_s is
# STUDY_ESTIMATOR over every pass's plain steps, kept in step_samples; 1 held the fastest pass)
SUFFIX = ".ops-samples.json.gz"  # source: our choice, beside '<fingerprint>.json'


class NoSamplesError(DnncostError):
    """No readable stored calibration samples (never calibrated with them, or unreadable)."""


@dataclass(frozen=True)
class StoredSamples:
    """The timed networks of one calibration (fitted on, held out, the transfer set) and the
    model's identifying fields (fingerprint, threads, torch_version, quick)."""

    fitted: tuple[NetworkSample, ...]
    held_out: tuple[NetworkSample, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)
    transfer: tuple[NetworkSample, ...] = ()


def samples_path(fingerprint: str) -> Path:
    """Where the samples of the calibration with ``fingerprint`` are stored."""
    return cache_dir() / "calibration" / f"{fingerprint}{SUFFIX}"


def _report_dict(report: CostReport, ops: dict[str, int]) -> dict[str, Any]:
    records = [[ops.setdefault(r.op, len(ops)), r.phase.value, r.module, r.module_type,
                r.cost.macs, r.cost.flops, r.cost.bytes_read, r.cost.bytes_written,
                [list(s) for s in r.shapes], r.channels_last, list(r.stride), list(r.padding)]
               for r in report.records]
    return {"model": report.model, "mode": report.mode, "input_shape": list(report.input_shape),
            "batch_size": report.batch_size, "params": report.params,
            "trainable_params": report.trainable_params, "param_bytes": report.param_bytes,
            "activation_bytes": report.activation_bytes, "peak_bytes": report.peak_bytes,
            "unsupported_ops": [list(u) for u in report.unsupported_ops],
            "counted_on": report.counted_on, "inputs": report.inputs, "dtype": report.dtype,
            "records": records}


def _record(row: Sequence[Any], ops: Sequence[str]) -> OpRecord:
    """One stored record; samples kept before the layout, or before the stride and padding, lack
    them (False, (), ())."""
    op, phase, module, module_type, macs, flops, read, written, shapes, *rest = row
    layout, stride, padding = (list(rest) + [False, [], []][len(rest):])[:3]
    return OpRecord(ops[op], Phase(phase), module, module_type,
                    Cost(int(macs), int(flops), int(read), int(written)),
                    tuple(tuple(int(d) for d in s) for s in shapes), layout is True,
                    tuple(int(d) for d in stride), tuple(int(d) for d in padding))


def _report(data: Mapping[str, Any], ops: Sequence[str]) -> CostReport:
    records = tuple(_record(row, ops) for row in data["records"])
    return CostReport(model=str(data["model"]), mode=Mode(str(data["mode"])),
                      input_shape=tuple(int(d) for d in data["input_shape"]),
                      batch_size=int(data["batch_size"]), records=records,
                      params=int(data["params"]), trainable_params=int(data["trainable_params"]),
                      param_bytes=int(data["param_bytes"]),
                      activation_bytes=int(data["activation_bytes"]),
                      peak_bytes=int(data["peak_bytes"]),
                      unsupported_ops=tuple((str(o), int(n)) for o, n in data["unsupported_ops"]),
                      counted_on=str(data["counted_on"]), inputs=str(data["inputs"]),
                      dtype=str(data["dtype"]))


def _sample_dict(sample: NetworkSample, ops: dict[str, int]) -> dict[str, Any]:
    return {"name": sample.name, "report": _report_dict(sample.report, ops),
            "kernel_s": list(sample.kernel_s), "modules": sample.modules,
            "param_tensors": sample.param_tensors, "step_s": sample.step_s,
            "pass_steps": list(sample.pass_steps),
            "step_samples": [list(steps) for steps in sample.step_samples]}


def _sample(data: Mapping[str, Any], ops: Sequence[str]) -> NetworkSample:
    return NetworkSample(str(data["name"]), _report(data["report"], ops),
                         tuple(float(t) for t in data["kernel_s"]), int(data["modules"]),
                         int(data["param_tensors"]), float(data["step_s"]),
                         tuple(float(t) for t in data["pass_steps"]),
                         tuple(tuple(float(t) for t in steps) for steps in data["step_samples"]))


def save_samples(stored: StoredSamples, path: Path) -> Path:
    """Write ``stored`` to ``path`` (gzip JSON, atomically: a reader never sees half a file);
    OutputError, with nothing left behind, when its folder cannot take it."""
    ops: dict[str, int] = {}
    body = {"fitted": [_sample_dict(s, ops) for s in stored.fitted],
            "held_out": [_sample_dict(s, ops) for s in stored.held_out],
            "transfer": [_sample_dict(s, ops) for s in stored.transfer]}
    data = {"format": FORMAT, "version": VERSION, "meta": dict(stored.meta),
            "ops": sorted(ops, key=ops.__getitem__), **body}
    return write_cache_file(path, gzip.compress(json.dumps(data, separators=(",", ":")).encode()))


def load_samples(path: Path) -> StoredSamples:
    """The samples stored at ``path``; NoSamplesError (naming the command to run) when the file is
    absent, unreadable or of another format version."""
    again = f"run `{CALIBRATE_COMMAND}` to time them"
    if not path.is_file():
        raise NoSamplesError(f"no stored calibration samples at '{path}' (a calibration keeps "
                             f"them since this version): {again}")
    try:
        data = json.loads(gzip.decompress(path.read_bytes()))
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise NoSamplesError(f"'{path}' holds samples of format {data.get('format')} "
                                 f"version {data.get('version')}, this dnncost reads {FORMAT} "
                                 f"version {VERSION}: {again}")
        ops = [str(o) for o in data["ops"]]
        return StoredSamples(tuple(_sample(s, ops) for s in data["fitted"]),
                             tuple(_sample(s, ops) for s in data["held_out"]),
                             dict(data.get("meta", {})),
                             tuple(_sample(s, ops) for s in data["transfer"]))
    except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise NoSamplesError(f"stored calibration samples '{path}' are unreadable "
                             f"({type(exc).__name__}: {exc}): {again}") from None


__all__ = ["NoSamplesError", "StoredSamples", "load_samples", "samples_path", "save_samples"]
