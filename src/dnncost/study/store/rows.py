"""The store's rows: one frozen record per table whose fields are its columns (plus keys such as
``network_id`` passed beside it), and the one mapping between records and SQL rows, by column name:
:func:`insert_row` builds the INSERT from a record's fields, :func:`from_row` builds the record from
an ``sqlite3.Row``. Fields with ``metadata=JSON_DICT`` (or ``JSON_SAMPLES``) are stored as JSON
text; a field with ``metadata={"nested": cls}`` is a record whose fields are columns of the same row.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from dnncost.core.errors import StoreError
from dnncost.training.records import EpochRecord, TimeToTarget, ValidationRecord


def now() -> str:
    """UTC time stamp, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_uid() -> str:
    return uuid.uuid4().hex


# -- record <-> row: the one mapping, by field name --------------------------------------------------
def _samples(value: Any) -> tuple[float, ...]:
    return tuple(float(s) for s in value)


# field(metadata=...) of a column stored as JSON text: "json" turns the parsed JSON into the type
JSON_DICT: Mapping[str, Callable[[Any], Any]] = {"json": dict}
JSON_SAMPLES: Mapping[str, Callable[[Any], Any]] = {"json": _samples}


def row_columns(record: object) -> dict[str, object]:
    """A row dataclass as {column: SQL value}: its fields, JSON ones encoded."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        value = getattr(record, f.name)
        if "nested" in f.metadata:  # a record whose fields are columns of this same row
            out.update(row_columns(value))
            continue
        if "json" in f.metadata and value is not None:
            value = json.dumps(dict(value) if isinstance(value, Mapping) else
                               [float(v) for v in value] if isinstance(value, tuple) else value,
                               sort_keys=True)
        out[f.name] = value
    return out


R = TypeVar("R")


def from_row(cls: type[R], row: sqlite3.Row, **given: object) -> R:
    """The dataclass ``cls`` from ``row`` by column name; ``given`` supplies fields that are not
    columns (or overrides them). JSON fields are decoded; SQLite keeps NaN as NULL, so a NULL in a
    field typed plain ``float`` reads back as NaN."""
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            kwargs[f.name] = given[f.name]
        elif "nested" in f.metadata:
            kwargs[f.name] = from_row(f.metadata["nested"], row)
        elif f.name in row.keys():
            value = row[f.name]
            if "json" in f.metadata and value is not None:
                try:
                    value = f.metadata["json"](json.loads(value))
                except (ValueError, TypeError) as exc:
                    raise StoreError(f"a stored {cls.__name__}.{f.name} is unreadable ({exc}): the "
                                     "results database is damaged") from exc
            elif value is None and f.type == "float":
                value = math.nan
            kwargs[f.name] = value
    return cls(**kwargs)


def insert_row(c: sqlite3.Connection, table: str, record: object = None, *, verb: str = "INSERT",
            suffix: str = "", **keys: object) -> None:
    """INSERT one row of ``table``: the fields of ``record`` and the ``keys`` beside them, by name."""
    values = {**keys, **(row_columns(record) if record is not None else {})}
    names = ", ".join(f'"{name}"' for name in values)  # quoted: a field may be an SQL word (index)
    marks = ", ".join(f":{name}" for name in values)
    c.execute(f"{verb} INTO {table} ({names}) VALUES ({marks}) {suffix}", values)


# -- records written and read back ---------------------------------------------------------------------
@dataclass(frozen=True)
class EnvironmentRow:
    """A machine (fingerprint) with its environment, calibrated peak and per-operator time model."""

    fingerprint: str
    environment: Mapping[str, object] = field(metadata=JSON_DICT)
    peak_flops_per_s: float | None = None
    bandwidth_bytes_per_s: float | None = None
    calibration: str | None = None  # where the peak came from
    operator_model: Mapping[str, object] | None = field(default=None, metadata=JSON_DICT)


@dataclass(frozen=True)
class RunRow:
    """One invocation of a study."""

    uid: str
    started: str
    finished: str | None
    status: str
    command: str
    config: Mapping[str, object] = field(metadata=JSON_DICT)
    config_hash: str
    fingerprint: str


@dataclass(frozen=True)
class NetworkRow:
    """A resume key (name, config_hash, fingerprint) and what the network was measured with."""

    name: str
    family: str
    config_hash: str
    fingerprint: str
    config: Mapping[str, object] = field(metadata=JSON_DICT)
    input_shape: str
    batch_size: int
    dataset: str
    device: str
    threads: int
    world_size: int = 1  # data-parallel processes
    backend: str = "none"  # torch.distributed backend, 'none' for one process


@dataclass(frozen=True)
class CountRow:
    """The counter's figures for one network and mode, as stored."""

    mode: str
    params: int
    trainable_params: int
    macs: int
    flops: int
    bytes: int
    op_count: int
    activation_bytes: int
    peak_bytes: int
    by_layer_type: Mapping[str, Mapping[str, int]] = field(metadata=JSON_DICT)
    unsupported: Mapping[str, int] = field(metadata=JSON_DICT)


@dataclass(frozen=True)
class RepeatConditions:
    """The machine around one repeat of a timed step (schema 7), None where not recorded: the
    reference probe before and after the repeat and the fastest probe on record then
    (dnncost.measuring.probe.ProbeReading), the machine's load during it
    (dnncost.core.environment.MachineLoad), this process's CPU time per step divided by the
    threads (dnncost.measuring.measurement.Measurement.cpu_samples), and ``remeasure``: the repeat
    was taken beyond the planned ones because a repeat's probe drifted."""

    cpu_samples: tuple[float, ...] | None = field(default=None, metadata=JSON_SAMPLES)
    probe_before_s: float | None = None
    probe_after_s: float | None = None
    probe_reference_s: float | None = None
    load_average: float | None = None
    steal_share: float | None = None
    others_share: float | None = None
    cpu_mhz: float | None = None
    remeasure: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "remeasure", bool(self.remeasure))  # SQLite gives 0 or 1

    @property
    def probe_s(self) -> float | None:
        """The probe around the repeat: the mean of before and after (None when not probed)."""
        if self.probe_before_s is None or self.probe_after_s is None:
            return None
        return (self.probe_before_s + self.probe_after_s) / 2


@dataclass(frozen=True)
class TimingRow:
    """One repeat of a timed step: raw samples (seconds), their median, and the machine around it;
    a new row gets a new ``uid`` and the time it is ``measured``."""

    mode: str
    samples: tuple[float, ...] = field(metadata=JSON_SAMPLES)
    median_s: float
    iqr_s: float
    threads: int
    peak_memory_bytes: int | None = None
    world_size: int = 1
    backend: str = "none"
    conditions: RepeatConditions = field(default_factory=RepeatConditions,
                                         metadata={"nested": RepeatConditions})
    uid: str = field(default_factory=new_uid)
    measured: str = field(default_factory=now)

    def __post_init__(self) -> None:
        object.__setattr__(self, "samples", tuple(float(s) for s in self.samples))


@dataclass(frozen=True)
class AllreduceRow:
    """The communication of a data-parallel step timing (the TimingRow ``timing_uid``)."""

    timing_uid: str
    samples: tuple[float, ...] = field(metadata=JSON_SAMPLES)
    allreduce_s_per_step: float
    allreduce_bytes_per_step: int
    buckets_per_step: int
    gradient_bytes: int
    single_process_median_s: float | None
    efficiency: float | None
    launcher: str  # 'spawn' or 'torchrun'


@dataclass(frozen=True)
class TrainingRow:
    """A training run: its finished epochs, (schema 11) the seed it trained from, its validations
    and, for a run to a target accuracy, its time to the target (None in the fixed-epoch
    protocol); only 'complete' runs count in the analysis. ``epochs_planned`` is the cap of a run
    to a target."""

    uid: str
    status: str
    epochs_planned: int
    dataset: str
    epochs: tuple[EpochRecord, ...]
    seed: int = 0
    validations: tuple[ValidationRecord, ...] = ()
    time_to_target: TimeToTarget | None = None


@dataclass(frozen=True)
class ErrorRow:
    stage: str
    error_type: str
    message: str
    traceback: str
    at: str
    run_uid: str


@dataclass(frozen=True)
class WhatIfRow:
    """One what-if result (schema 4): a transformation's counted and measured ratios."""

    uid: str
    transformation: str
    mode: str
    applicable: bool
    note: str
    flops_ratio: float | None
    nominal_flops_ratio: float | None
    params_ratio: float | None
    bytes_ratio: float | None
    activation_ratio: float | None
    time_ratios: tuple[float, ...] | None = field(metadata=JSON_SAMPLES)
    time_ratio_median: float | None
    original_samples: tuple[float, ...] | None = field(metadata=JSON_SAMPLES)
    transformed_samples: tuple[float, ...] | None = field(metadata=JSON_SAMPLES)
    original_flops: int | None
    flops: int | None
    batch_size: int | None
    threads: int | None
    measured: str
    original_accuracy: float | None = None  # schema 8: whatif --train
    accuracy: float | None = None
    accuracy_note: str | None = None


@dataclass(frozen=True)
class WorkRow:
    """One cost-vs-work point (schema 5): a step's median time at one batch and input size."""

    mode: str
    batch_size: int
    input_size: int
    step_s: float
    flops: float


@dataclass(frozen=True)
class PredictionRow:
    """The per-kernel model's prediction of one network's step (schema 9), made by the study with
    the model ``calibration_id``; ``low_s``/``high_s`` its interval (None while the model gives
    none), ``roofline_s`` the plain roofline (None without a calibrated peak and bandwidth)."""

    mode: str
    calibration_id: str
    predicted_s: float
    low_s: float | None = None
    high_s: float | None = None
    roofline_s: float | None = None


@dataclass(frozen=True)
class UnseenRow:
    """One unseen-network result (schema 6): a network at one input configuration and step mode,
    measured (or left out: ``measured_s`` None, ``note`` says why) and predicted; (schema 10) the
    per-kernel prediction's interval and its stated coverage; (schema 12) the reference probe
    after its rounds; (schema 13) the machine's level its predictions were scaled by."""

    uid: str
    run_uid: str
    config_hash: str
    fingerprint: str
    network: str
    input_shape: str
    batch_size: int
    mode: str
    threads: int
    measured_s: float | None
    estimator: str | None
    measured_low_s: float | None
    measured_high_s: float | None
    samples: tuple[float, ...] | None = field(metadata=JSON_SAMPLES)
    round_medians: tuple[float, ...] | None = field(metadata=JSON_SAMPLES)
    predicted_s: float | None
    flops_s: float | None
    params_s: float | None
    roofline_s: float | None
    gflops: float | None
    calibration_id: str
    calibration: Mapping[str, object] = field(metadata=JSON_DICT)
    note: str
    measured: str
    predicted_low_s: float | None = None  # schema 10: the per-kernel prediction's interval
    predicted_high_s: float | None = None
    interval_level: float | None = None  # its stated coverage
    probe_s: float | None = None  # schema 12: the reference probe's median after its rounds
    level: float | None = None  # schema 13: the machine's level the predictions were scaled by


@dataclass(frozen=True)
class NetworkResult:
    """Everything stored about one network under one configuration on one machine."""

    name: str
    family: str
    config_hash: str
    fingerprint: str
    input_shape: str
    batch_size: int
    dataset: str
    device: str
    threads: int
    world_size: int
    backend: str
    counts: Mapping[str, CountRow] = field(default_factory=dict)
    timings: tuple[TimingRow, ...] = ()
    trainings: tuple[TrainingRow, ...] = ()
    breakdown: Mapping[str, tuple[float, int]] = field(default_factory=dict)  # type -> (s, flops)
    errors: tuple[ErrorRow, ...] = ()
    allreduce: Mapping[str, AllreduceRow] = field(default_factory=dict)  # timing uid -> row
    id: int | None = None  # the networks row's id (None for a record not read from a store)

    def steps(self, mode: str, *, world_size: int | None = None) -> tuple[TimingRow, ...]:
        """The stored repeats of the ``mode`` ('train' or 'eval') step (of ``world_size``
        processes only, when given)."""
        return tuple(t for t in self.timings if t.mode == mode
                     and (world_size is None or t.world_size == world_size))

    def data_parallel(self) -> tuple[tuple[TimingRow, AllreduceRow], ...]:
        """The data-parallel training steps stored with their communication, oldest first."""
        return tuple((t, self.allreduce[t.uid]) for t in self.timings
                     if t.world_size > 1 and t.uid in self.allreduce)

    @property
    def completed_trainings(self) -> tuple[TrainingRow, ...]:
        return tuple(t for t in self.trainings if t.status == "complete")

    def training(self, seed: int) -> TrainingRow | None:
        """The latest complete training run from ``seed`` (None when there is none)."""
        done = [t for t in self.completed_trainings if t.seed == seed]
        return done[-1] if done else None

    def seed_trainings(self) -> tuple[TrainingRow, ...]:
        """The latest complete training run of each seed, by seed."""
        latest = {t.seed: t for t in self.completed_trainings}
        return tuple(latest[s] for s in sorted(latest))


@dataclass(frozen=True)
class Group:
    """Results comparable with each other: one configuration on one machine."""

    config_hash: str
    fingerprint: str
    config: Mapping[str, object]
    environment: Mapping[str, object]
    peak_flops_per_s: float | None
    calibration: str | None
    networks: tuple[NetworkResult, ...]
    operator_model: Mapping[str, object] | None = None  # as the study stored it (schema 3)



__all__ = ["JSON_DICT", "JSON_SAMPLES", "AllreduceRow", "CountRow", "EnvironmentRow", "ErrorRow", "Group",
           "NetworkResult", "NetworkRow", "PredictionRow", "RepeatConditions", "RunRow", "TimingRow",
           "TrainingRow", "UnseenRow", "WhatIfRow", "WorkRow", "from_row", "insert_row", "new_uid", "now",
           "row_columns"]
