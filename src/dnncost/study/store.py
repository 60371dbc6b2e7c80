"""The study's results store: one SQLite file that keeps every measurement as soon as it is made.

Why SQLite: one file, transactions (a result is either wholly stored or absent, even after SIGKILL),
and readable by anyone with ``sqlite3``. Layout (schema version in ``PRAGMA user_version``, the file
marked as dnncost's by ``PRAGMA application_id``):

- ``environments``: one row per machine fingerprint, with its environment, calibrated peak and
  (schema 3) the per-operator time model the study found for the machine;
- ``runs``: one row per invocation of a study (its configuration, status, start and end);
- ``networks``: one row per resume key (network name, configuration hash, machine fingerprint);
- ``counts``: the counter's figures per network and mode (eval = forward, train = whole step);
- ``step_timings``: one row per repeat of a timed step, raw samples kept as JSON; (schema 7) the
  reference probe, the machine's load and the CPU time per step around each repeat, and whether it
  re-measured a drifted one (:class:`RepeatConditions`);
- ``trainings`` and ``epochs``: real training runs and each finished epoch;
- ``breakdowns``: measured time and counted FLOPs per layer type;
- ``errors``: what failed, where, with its traceback;
- ``allreduce_timings`` (schema 2): for a data-parallel step timing (world size > 1), the
  time with a gradient all-reduce in flight, its bytes, and the single-process reference.
- ``whatif_results`` (schema 4): ``dnncost whatif`` per transformation and step mode: counted
  ratios to the original, the interleaved time ratios and raw samples, or why it does not apply; with
  ``--train`` (schema 8) the validation accuracy of the original and of the transformed network.
- ``work_points`` (schema 5): cost vs work, one network's step timed at several batch and input
  sizes (dnncost.study.work), with the counted FLOPs of each.
- ``unseen_results`` (schema 6): ``dnncost evaluate --unseen``, one row per network, input
  configuration and step mode: measured time and samples, the per-kernel and baseline predictions,
  and the calibration that made them (dnncost.study.unseen); (schema 9) the per-kernel
  prediction's interval and its stated coverage.

Rows are written and read by column name: each table has a frozen row dataclass below whose fields
are its columns (plus keys such as ``network_id`` passed beside it); :func:`_insert` builds the
INSERT from the fields, :func:`_record` builds the dataclass from an ``sqlite3.Row``. Fields with
``metadata=_JSON_DICT`` (or ``_JSON_SAMPLES``) are stored as JSON text.

**Adding a column**: add the field to the row dataclass and a migration
``N: "ALTER TABLE t ADD COLUMN c ...;"`` to :data:`MIGRATIONS` (``SCHEMA_VERSION`` follows).
**Adding a table**: a migration with its ``CREATE TABLE``, a row dataclass, a writer that calls
``_insert(c, "t", row, **keys)`` inside ``self.transaction(...)``, a reader that calls
``_record(Row, r)``, and the table's name in :data:`MERGE_ORDER` (after the tables it references;
its ``network_id`` column, if any, is mapped by :func:`merge`). Migrations never change a version
that has shipped: a store is migrated one version at a time, each in one transaction.

Measurements carry a ``uid`` so that :func:`merge` can combine stores from several machines (or
copies of one) without duplicates. One study writes to a store at a time (a lock file enforces it).
Commands that only read open the store read-only (:func:`open_store` with ``read_only``): the file
is never written, and an older schema is migrated in a copy held in memory.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import shutil
import sqlite3
import tempfile
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from dnncost.core.errors import StoreError
from dnncost.distributed.records import DataParallelStep
from dnncost.training.records import EpochRecord

APPLICATION_ID = 0x646E6E63  # source: our choice, ASCII 'dnnc'; marks the file as a dnncost store
SQLITE_HEADER = b"SQLite format 3\x00"  # source: https://www.sqlite.org/fileformat.html section 1.3
BUSY_TIMEOUT_S = 30.0  # source: our choice; a second process waits this long for a writer's
# transaction (the longest is a migration or a merge) before giving up with "locked"

_SCHEMA_V1 = """
CREATE TABLE environments (
    fingerprint TEXT PRIMARY KEY,
    environment TEXT NOT NULL,                -- JSON of dnncost.core.environment.Environment
    peak_flops_per_s REAL,                    -- calibrated float32 peak, NULL if unknown: the
    -- faster of a matmul and a 3x3 convolution benchmark (rows written before dnncost had the
    -- convolution benchmark: the matmul alone)
    bandwidth_bytes_per_s REAL,
    calibration TEXT                          -- where the peak came from
);
CREATE TABLE runs (
    uid TEXT PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'interrupted', 'failed')),
    command TEXT NOT NULL,
    config TEXT NOT NULL,                     -- JSON of the StudyConfig
    config_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL REFERENCES environments(fingerprint)
);
CREATE TABLE networks (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    family TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL REFERENCES environments(fingerprint),
    config TEXT NOT NULL,
    input_shape TEXT NOT NULL,                -- one sample, e.g. '3x32x32'
    batch_size INTEGER NOT NULL,
    dataset TEXT NOT NULL,
    device TEXT NOT NULL,
    threads INTEGER NOT NULL,
    world_size INTEGER NOT NULL DEFAULT 1,    -- data-parallel processes
    backend TEXT NOT NULL DEFAULT 'none',     -- torch.distributed backend, 'none' for one process
    UNIQUE (name, config_hash, fingerprint)
);
CREATE TABLE counts (
    network_id INTEGER NOT NULL REFERENCES networks(id),
    mode TEXT NOT NULL CHECK (mode IN ('eval', 'train')),
    params INTEGER NOT NULL,
    trainable_params INTEGER NOT NULL,
    macs INTEGER NOT NULL,
    flops INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    op_count INTEGER NOT NULL,                -- aten operator calls in one step
    activation_bytes INTEGER NOT NULL,
    peak_bytes INTEGER NOT NULL,
    by_layer_type TEXT NOT NULL,              -- JSON {type: {macs, flops, bytes}}
    unsupported TEXT NOT NULL,                -- JSON {op: calls}
    PRIMARY KEY (network_id, mode)
);
CREATE TABLE step_timings (
    uid TEXT PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id),
    run_uid TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('eval', 'train')),
    samples TEXT NOT NULL,                    -- JSON list of seconds, one per timed step
    median_s REAL NOT NULL,
    iqr_s REAL NOT NULL,
    threads INTEGER NOT NULL,
    peak_memory_bytes INTEGER,
    world_size INTEGER NOT NULL DEFAULT 1,
    backend TEXT NOT NULL DEFAULT 'none',
    measured TEXT NOT NULL
);
CREATE TABLE trainings (
    uid TEXT PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id),
    run_uid TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'interrupted', 'failed')),
    epochs_planned INTEGER NOT NULL,
    dataset TEXT NOT NULL,                    -- description of the data actually used
    started TEXT NOT NULL,
    finished TEXT
);
CREATE TABLE epochs (
    uid TEXT PRIMARY KEY,
    training_uid TEXT NOT NULL REFERENCES trainings(uid),
    epoch INTEGER NOT NULL,
    train_time_s REAL NOT NULL,
    val_time_s REAL NOT NULL,
    train_data_time_s REAL NOT NULL,
    val_data_time_s REAL NOT NULL,
    train_loss REAL,
    train_accuracy REAL,
    val_loss REAL,
    val_accuracy REAL,
    train_samples INTEGER NOT NULL,
    val_samples INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    UNIQUE (training_uid, epoch)
);
CREATE TABLE breakdowns (
    network_id INTEGER NOT NULL REFERENCES networks(id),
    layer_type TEXT NOT NULL,
    time_s REAL NOT NULL,                     -- measured forward + backward time of the type
    flops INTEGER NOT NULL,                   -- counted training-step FLOPs of the type
    PRIMARY KEY (network_id, layer_type)
);
CREATE TABLE errors (
    uid TEXT PRIMARY KEY,
    network_id INTEGER REFERENCES networks(id),
    run_uid TEXT NOT NULL,
    stage TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX step_timings_network ON step_timings(network_id, mode);
CREATE INDEX trainings_network ON trainings(network_id);
"""

_SCHEMA_V2 = """
CREATE TABLE allreduce_timings (
    timing_uid TEXT PRIMARY KEY REFERENCES step_timings(uid),  -- its step, world_size > 1
    samples TEXT NOT NULL,                    -- JSON list of seconds with an all-reduce in flight
    allreduce_s_per_step REAL NOT NULL,       -- median of samples
    allreduce_bytes_per_step INTEGER NOT NULL,  -- what each worker hands to all-reduce
    buckets_per_step INTEGER NOT NULL,
    gradient_bytes INTEGER NOT NULL,          -- dnncost.counting.counter's figure
    single_process_median_s REAL,             -- one plain process, same batch and threads
    efficiency REAL,                          -- weak scaling t1 / tN
    launcher TEXT NOT NULL                    -- 'spawn' or 'torchrun'
);
"""

_SCHEMA_V3 = """
-- the per-operator time model (dnncost.prediction.model.OperatorModel.to_dict) of the machine,
-- as the study found it in the machine's calibration; NULL when it had none
ALTER TABLE environments ADD COLUMN operator_model TEXT;
"""

_SCHEMA_V4 = """
-- dnncost whatif (dnncost.whatif.runner.WhatIfResult): one row per transformation, step mode and
-- run; ratios are transformed / original per sample, time ratios one per interleaved A/B pair
CREATE TABLE whatif_results (
    uid TEXT PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id),
    run_uid TEXT NOT NULL,
    transformation TEXT NOT NULL,             -- name or name:value, e.g. prune_channels:0.5
    mode TEXT NOT NULL,
    applicable INTEGER NOT NULL,              -- 0: note says why it does not apply
    note TEXT NOT NULL,
    flops_ratio REAL,
    nominal_flops_ratio REAL,                 -- unstructured pruning: pruned zeros skipped
    params_ratio REAL,
    bytes_ratio REAL,
    activation_ratio REAL,
    time_ratios TEXT,                         -- JSON list, one per A/B pair
    time_ratio_median REAL,
    original_samples TEXT,                    -- JSON list of seconds per step
    transformed_samples TEXT,
    original_flops INTEGER,
    flops INTEGER,
    batch_size INTEGER,
    threads INTEGER,
    measured TEXT NOT NULL
);
CREATE INDEX whatif_network ON whatif_results(network_id, mode);
"""

_SCHEMA_V5 = """
-- cost vs work (dnncost.study.work.WorkPoint): one network's step at one batch and input size
CREATE TABLE work_points (
    uid TEXT PRIMARY KEY,
    network_id INTEGER NOT NULL REFERENCES networks(id),
    run_uid TEXT NOT NULL,
    mode TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    input_size INTEGER NOT NULL,              -- height = width of the input image
    step_s REAL NOT NULL,                     -- median seconds per step
    flops REAL NOT NULL                       -- counted FLOPs of that step
);
CREATE INDEX work_network ON work_points(network_id);
"""

_SCHEMA_V6 = """
-- dnncost evaluate --unseen (dnncost.prediction.unseen): one row per network, input configuration
-- and step mode, timed on the machine `fingerprint` and predicted with calibration `calibration_id`;
-- measured_s NULL: the network was left out there, `note` says why
CREATE TABLE unseen_results (
    uid TEXT PRIMARY KEY,
    run_uid TEXT NOT NULL,
    config_hash TEXT NOT NULL,                -- the protocol (calibration, rounds, timing): runs.config
    fingerprint TEXT NOT NULL REFERENCES environments(fingerprint),
    network TEXT NOT NULL,                    -- torchvision name
    input_shape TEXT NOT NULL,                -- one sample, e.g. '3x32x32'
    batch_size INTEGER NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('eval', 'train')),
    threads INTEGER NOT NULL,
    measured_s REAL,                          -- seconds per step by `estimator`; NULL: left out
    estimator TEXT,                           -- how measured_s comes from the samples
    measured_low_s REAL,                      -- its interval, NULL when the timing gives none
    measured_high_s REAL,
    samples TEXT,                             -- JSON list of seconds, every timed step
    round_medians TEXT,                       -- JSON list, the median of each round-robin round
    predicted_s REAL,                         -- the per-kernel model
    flops_s REAL,                             -- baselines: FLOPs-only, params-only, roofline
    params_s REAL,
    roofline_s REAL,
    gflops REAL,                              -- counted FLOPs of the step / 1e9
    calibration_id TEXT NOT NULL,
    calibration TEXT NOT NULL,                -- JSON summary: quick, held-out error, networks, ...
    note TEXT NOT NULL,                       -- why left out; '' when measured
    measured TEXT NOT NULL
);
CREATE INDEX unseen_group ON unseen_results(config_hash, fingerprint);
"""

_SCHEMA_V7 = """
-- the machine around each repeat of a timed step (dnncost.study.store.RepeatConditions): the
-- reference probe (dnncost.measuring.probe) before and after it with the fastest probe on record
-- then, the machine's load (dnncost.core.environment.MachineLoad), this process's CPU time per
-- step, and whether the repeat re-measured one whose probe drifted; NULL where not recorded
ALTER TABLE step_timings ADD COLUMN cpu_samples TEXT;       -- JSON list, CPU s per step / threads
ALTER TABLE step_timings ADD COLUMN probe_before_s REAL;
ALTER TABLE step_timings ADD COLUMN probe_after_s REAL;
ALTER TABLE step_timings ADD COLUMN probe_reference_s REAL;
ALTER TABLE step_timings ADD COLUMN load_average REAL;      -- 1-minute load average at the end
ALTER TABLE step_timings ADD COLUMN steal_share REAL;       -- shares of the machine's CPU time
ALTER TABLE step_timings ADD COLUMN others_share REAL;
ALTER TABLE step_timings ADD COLUMN cpu_mhz REAL;
ALTER TABLE step_timings ADD COLUMN remeasure INTEGER NOT NULL DEFAULT 0;  -- 1: an extra repeat
"""

_SCHEMA_V8 = """
-- dnncost whatif --train (dnncost.whatif.accuracy): validation accuracy (0-1) of the trained original
-- and of the transformed network, and how it was found (or why there is none); NULL without --train
ALTER TABLE whatif_results ADD COLUMN original_accuracy REAL;
ALTER TABLE whatif_results ADD COLUMN accuracy REAL;
ALTER TABLE whatif_results ADD COLUMN accuracy_note TEXT;
"""

_SCHEMA_V9 = """
-- the interval of each unseen network's per-kernel prediction (dnncost.prediction.interval) and its
-- stated coverage (e.g. 0.8), so the report can say how many measurements fell inside; NULL where
-- the calibration gave none
ALTER TABLE unseen_results ADD COLUMN predicted_low_s REAL;
ALTER TABLE unseen_results ADD COLUMN predicted_high_s REAL;
ALTER TABLE unseen_results ADD COLUMN interval_level REAL;
"""

#: version -> SQL that takes a store from version-1 to version. Applied in order, each in one
#: transaction with the version bump, so a store is never left half-migrated.
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4,
                              5: _SCHEMA_V5, 6: _SCHEMA_V6, 7: _SCHEMA_V7, 8: _SCHEMA_V8,
                              9: _SCHEMA_V9}
SCHEMA_VERSION = max(MIGRATIONS)  # a new schema version is a new entry in MIGRATIONS

#: Every table, in the order :func:`merge` copies them (a table after those it references).
MERGE_ORDER = ("environments", "runs", "networks", "counts", "step_timings", "trainings", "epochs",
               "breakdowns", "errors", "allreduce_timings", "whatif_results", "work_points",
               "unseen_results")


def now() -> str:
    """UTC time stamp, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_uid() -> str:
    return uuid.uuid4().hex


# -- record <-> row: the one mapping, by field name --------------------------------------------------
def _samples(value: Any) -> tuple[float, ...]:
    return tuple(float(s) for s in value)


# field(metadata=...) of a column stored as JSON text: "json" turns the parsed JSON into the type
_JSON_DICT: Mapping[str, Callable[[Any], Any]] = {"json": dict}
_JSON_SAMPLES: Mapping[str, Callable[[Any], Any]] = {"json": _samples}


def _columns(record: object) -> dict[str, object]:
    """A row dataclass as {column: SQL value}: its fields, JSON ones encoded."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        value = getattr(record, f.name)
        if "nested" in f.metadata:  # a record whose fields are columns of this same row
            out.update(_columns(value))
            continue
        if "json" in f.metadata and value is not None:
            value = json.dumps(dict(value) if isinstance(value, Mapping) else
                               [float(v) for v in value] if isinstance(value, tuple) else value,
                               sort_keys=True)
        out[f.name] = value
    return out


R = TypeVar("R")


def _record(cls: type[R], row: sqlite3.Row, **given: object) -> R:
    """The dataclass ``cls`` from ``row`` by column name; ``given`` supplies fields that are not
    columns (or overrides them). JSON fields are decoded; SQLite keeps NaN as NULL, so a NULL in a
    field typed plain ``float`` reads back as NaN."""
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given:
            kwargs[f.name] = given[f.name]
        elif "nested" in f.metadata:
            kwargs[f.name] = _record(f.metadata["nested"], row)
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


def _insert(c: sqlite3.Connection, table: str, record: object = None, *, verb: str = "INSERT",
            suffix: str = "", **keys: object) -> None:
    """INSERT one row of ``table``: the fields of ``record`` and the ``keys`` beside them, by name."""
    values = {**keys, **(_columns(record) if record is not None else {})}
    names = ", ".join(values)
    marks = ", ".join(f":{name}" for name in values)
    c.execute(f"{verb} INTO {table} ({names}) VALUES ({marks}) {suffix}", values)


# -- records written and read back ---------------------------------------------------------------------
@dataclass(frozen=True)
class EnvironmentRow:
    """A machine (fingerprint) with its environment, calibrated peak and per-operator time model."""

    fingerprint: str
    environment: Mapping[str, object] = field(metadata=_JSON_DICT)
    peak_flops_per_s: float | None = None
    bandwidth_bytes_per_s: float | None = None
    calibration: str | None = None  # where the peak came from
    operator_model: Mapping[str, object] | None = field(default=None, metadata=_JSON_DICT)


@dataclass(frozen=True)
class RunRow:
    """One invocation of a study."""

    uid: str
    started: str
    finished: str | None
    status: str
    command: str
    config: Mapping[str, object] = field(metadata=_JSON_DICT)
    config_hash: str
    fingerprint: str


@dataclass(frozen=True)
class NetworkRow:
    """A resume key (name, config_hash, fingerprint) and what the network was measured with."""

    name: str
    family: str
    config_hash: str
    fingerprint: str
    config: Mapping[str, object] = field(metadata=_JSON_DICT)
    input_shape: str
    batch_size: int
    dataset: str
    device: str
    threads: int
    world_size: int
    backend: str


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
    by_layer_type: Mapping[str, Mapping[str, int]] = field(metadata=_JSON_DICT)
    unsupported: Mapping[str, int] = field(metadata=_JSON_DICT)


@dataclass(frozen=True)
class RepeatConditions:
    """The machine around one repeat of a timed step (schema 7), None where not recorded: the
    reference probe before and after the repeat and the fastest probe on record then
    (dnncost.measuring.probe.ProbeReading), the machine's load during it
    (dnncost.core.environment.MachineLoad), this process's CPU time per step divided by the
    threads (dnncost.measuring.measurement.Measurement.cpu_samples), and ``remeasure``: the repeat
    was taken beyond the planned ones because a repeat's probe drifted."""

    cpu_samples: tuple[float, ...] | None = field(default=None, metadata=_JSON_SAMPLES)
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
    """One repeat of a timed step: raw samples (seconds), their median, and the machine around it."""

    uid: str
    mode: str
    samples: tuple[float, ...] = field(metadata=_JSON_SAMPLES)
    median_s: float
    iqr_s: float
    threads: int
    peak_memory_bytes: int | None
    world_size: int
    backend: str
    measured: str
    conditions: RepeatConditions = field(default_factory=RepeatConditions,
                                         metadata={"nested": RepeatConditions})


@dataclass(frozen=True)
class AllreduceRow:
    """The communication of a data-parallel step timing (the TimingRow ``timing_uid``)."""

    timing_uid: str
    samples: tuple[float, ...] = field(metadata=_JSON_SAMPLES)
    allreduce_s_per_step: float
    allreduce_bytes_per_step: int
    buckets_per_step: int
    gradient_bytes: int
    single_process_median_s: float | None
    efficiency: float | None
    launcher: str  # 'spawn' or 'torchrun'


@dataclass(frozen=True)
class TrainingRow:
    """A training run and its finished epochs; only 'complete' runs count in the analysis."""

    uid: str
    status: str
    epochs_planned: int
    dataset: str
    epochs: tuple[EpochRecord, ...]


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
    time_ratios: tuple[float, ...] | None = field(metadata=_JSON_SAMPLES)
    time_ratio_median: float | None
    original_samples: tuple[float, ...] | None = field(metadata=_JSON_SAMPLES)
    transformed_samples: tuple[float, ...] | None = field(metadata=_JSON_SAMPLES)
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
class UnseenRow:
    """One unseen-network result (schema 6): a network at one input configuration and step mode,
    measured (or left out: ``measured_s`` None, ``note`` says why) and predicted."""

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
    samples: tuple[float, ...] | None = field(metadata=_JSON_SAMPLES)
    round_medians: tuple[float, ...] | None = field(metadata=_JSON_SAMPLES)
    predicted_s: float | None
    flops_s: float | None
    params_s: float | None
    roofline_s: float | None
    gflops: float | None
    calibration_id: str
    calibration: Mapping[str, object] = field(metadata=_JSON_DICT)
    note: str
    measured: str
    predicted_low_s: float | None = None  # schema 9: the per-kernel prediction's interval
    predicted_high_s: float | None = None
    interval_level: float | None = None  # its stated coverage


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


# -- errors in plain words --------------------------------------------------------------------------
def _friendly(exc: sqlite3.Error, path: Path, what: str) -> StoreError:
    text = str(exc)
    low = text.lower()
    if "full" in low:
        return StoreError(
            f"the disk holding '{path}' is full ({text}) while writing {what}; every result "
            "finished before it is kept -- free some space and rerun the same command to resume")
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        return StoreError(f"cannot write {what} to '{path}': the file or its folder is read-only "
                          f"or missing ({text})")
    if "locked" in low or "busy" in low:
        return StoreError(f"'{path}' is locked by another process ({text}); wait for it or use "
                          "another results database")
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return _damaged(path, text)
    return StoreError(f"results database '{path}' failed while {what}: {text}")


def _damaged(path: Path, detail: str) -> StoreError:
    return StoreError(f"results database '{path}' is damaged ({detail}); restore it from a copy, "
                      "or recover what is readable with `sqlite3 FILE .recover`")


# -- the store --------------------------------------------------------------------------------------
class Store:
    """An open results store. Use :func:`open_store`; close with :meth:`close` or ``with``."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, read_only: bool = False) -> None:
        conn.row_factory = sqlite3.Row
        self.conn = conn
        self.path = path
        self.read_only = read_only
        self._lock_file: int | None = None

    # -- life cycle -----------------------------------------------------------------------------
    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.unlock()
        self.conn.close()

    def lock(self) -> None:
        """Take the store for one writer (a study); StoreError when another process holds it.

        The lock is an flock on ``PATH.lock``, released by the kernel even when the holder is
        killed, so a killed study never blocks the next one.
        """
        if self.read_only:
            raise StoreError(f"'{self.path}' is open read-only; it cannot be written")
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file '{lock_path}' beside the results "
                             f"database ({exc.strerror}); results can only be written to a "
                             "database in a writable folder") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"another study is writing to '{self.path}' right now; wait for it to "
                             "finish or use another results database") from None
        self._lock_file = fd

    def unlock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    @contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: wholly committed or wholly rolled back; disk full -> StoreError."""
        if self.read_only:
            raise StoreError(f"'{self.path}' is open read-only; cannot write {what}")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _friendly(exc, self.path, what) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise _friendly(exc, self.path, what) from exc
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (e.g. after a full disk); nothing is half-kept

    def _rows(self, sql: str, params: Sequence[object] | Mapping[str, object] = ()) -> list[sqlite3.Row]:
        """Every row of a query; a damaged or unreadable file -> StoreError in plain words."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _friendly(exc, self.path, "reading results") from exc

    def _scalar(self, sql: str, params: Sequence[object] = ()) -> int:
        return int(self._rows(sql, params)[0][0])

    # -- writing --------------------------------------------------------------------------------
    def put_environment(self, fingerprint: str, environment: Mapping[str, object], *,
                        peak_flops_per_s: float | None, bandwidth_bytes_per_s: float | None,
                        calibration: str | None,
                        operator_model: Mapping[str, object] | None = None) -> None:
        """Record (or refresh) the machine's environment, calibrated peak and per-operator model;
        a value given as None keeps the stored one."""
        row = EnvironmentRow(fingerprint, environment, peak_flops_per_s, bandwidth_bytes_per_s,
                             calibration, operator_model)
        keep = ", ".join(f"{name} = COALESCE(excluded.{name}, {name})"
                         for name in _columns(row) if name != "fingerprint")
        with self.transaction("the environment") as c:
            _insert(c, "environments", row, suffix=f"ON CONFLICT(fingerprint) DO UPDATE SET {keep}")

    def environment(self, fingerprint: str) -> EnvironmentRow | None:
        """What is stored about a machine, or None when it has no row."""
        rows = self._rows("SELECT * FROM environments WHERE fingerprint = ?", (fingerprint,))
        return _record(EnvironmentRow, rows[0]) if rows else None

    def start_run(self, *, command: str, config: Mapping[str, object], config_hash: str,
                  fingerprint: str) -> str:
        """A new run row (status 'running'); runs left 'running' by a killed study become
        'interrupted' (the lock guarantees no live study holds them)."""
        row = RunRow(uid=new_uid(), started=now(), finished=None, status="running", command=command,
                     config=config, config_hash=config_hash, fingerprint=fingerprint)
        with self.transaction("the start of the run") as c:
            c.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            c.execute("UPDATE trainings SET status = 'interrupted' WHERE status = 'running'")
            _insert(c, "runs", row)
        return row.uid

    def finish_run(self, run_uid: str, status: str) -> None:
        with self.transaction("the end of the run") as c:
            c.execute("UPDATE runs SET status = ?, finished = ? WHERE uid = ?", (status, now(), run_uid))

    def network_id(self, *, name: str, family: str, config_hash: str, fingerprint: str,
                   config: Mapping[str, object], input_shape: str, batch_size: int, dataset: str,
                   device: str, threads: int, world_size: int = 1, backend: str = "none") -> int:
        """The id of the resume key (name, config_hash, fingerprint), created on first use."""
        row = NetworkRow(name=name, family=family, config_hash=config_hash, fingerprint=fingerprint,
                         config=config, input_shape=input_shape, batch_size=batch_size,
                         dataset=dataset, device=device, threads=threads, world_size=world_size,
                         backend=backend)
        with self.transaction(f"network {name}") as c:
            return _network_id(c, row)

    def put_count(self, network_id: int, row: CountRow) -> None:
        with self.transaction(f"the {row.mode} count") as c:
            _insert(c, "counts", row, verb="INSERT OR REPLACE", network_id=network_id)

    def add_timing(self, network_id: int, run_uid: str, *, mode: str, samples: Sequence[float],
                   median_s: float, iqr_s: float, threads: int, peak_memory_bytes: int | None,
                   world_size: int = 1, backend: str = "none",
                   conditions: RepeatConditions | None = None) -> str:
        """Store one repeat of a timed step (``conditions``: the machine around it); returns its uid."""
        row = TimingRow(uid=new_uid(), mode=mode, samples=tuple(samples), median_s=median_s,
                        iqr_s=iqr_s, threads=threads, peak_memory_bytes=peak_memory_bytes,
                        world_size=world_size, backend=backend, measured=now(),
                        conditions=conditions or RepeatConditions())
        with self.transaction(f"a {mode}-step timing") as c:
            _insert(c, "step_timings", row, network_id=network_id, run_uid=run_uid)
        return row.uid

    def add_data_parallel_timing(self, network_id: int, run_uid: str, step: DataParallelStep) -> str:
        """Store a data-parallel training step and its all-reduce in one transaction (so a resumed
        study never finds one without the other); returns the step timing's uid."""
        if step.world_size < 2:
            raise StoreError(f"a data-parallel timing needs world_size >= 2, got {step.world_size}")
        uid = new_uid()
        timing = TimingRow(uid=uid, mode="train", samples=tuple(step.samples), median_s=step.median_s,
                           iqr_s=step.iqr_s, threads=step.threads, peak_memory_bytes=None,
                           world_size=step.world_size, backend=step.backend, measured=now())
        shared = {f.name: getattr(step, f.name) for f in dataclasses.fields(AllreduceRow)
                  if f.name not in ("timing_uid", "samples")}  # the other fields share their names
        allreduce = AllreduceRow(timing_uid=uid, samples=tuple(step.allreduce_samples), **shared)
        with self.transaction("a data-parallel step timing") as c:
            _insert(c, "step_timings", timing, network_id=network_id, run_uid=run_uid)
            _insert(c, "allreduce_timings", allreduce)
        return timing.uid

    def start_training(self, network_id: int, run_uid: str, *, epochs_planned: int,
                       dataset: str) -> str:
        uid = new_uid()
        with self.transaction("the start of a training run") as c:
            _insert(c, "trainings", uid=uid, network_id=network_id, run_uid=run_uid,
                    status="running", epochs_planned=epochs_planned, dataset=dataset,
                    started=now(), finished=None)
        return uid

    def add_epoch(self, training_uid: str, record: EpochRecord) -> None:
        with self.transaction(f"epoch {record.epoch}") as c:
            _insert(c, "epochs", record, uid=new_uid(), training_uid=training_uid)

    def finish_training(self, training_uid: str, status: str) -> None:
        with self.transaction("the end of a training run") as c:
            c.execute("UPDATE trainings SET status = ?, finished = ? WHERE uid = ?",
                      (status, now(), training_uid))

    def put_breakdown(self, network_id: int, rows: Mapping[str, tuple[float, int]]) -> None:
        """Measured time and counted FLOPs per layer type, all in one transaction."""
        with self.transaction("a per-layer-type breakdown") as c:
            for layer_type, (time_s, flops) in rows.items():
                _insert(c, "breakdowns", verb="INSERT OR REPLACE", network_id=network_id,
                        layer_type=layer_type, time_s=float(time_s), flops=int(flops))

    def add_error(self, network_id: int | None, run_uid: str, *, stage: str, error: BaseException,
                  traceback: str) -> None:
        row = ErrorRow(stage=stage, error_type=type(error).__name__,
                       message=str(error) or type(error).__name__, traceback=traceback, at=now(),
                       run_uid=run_uid)
        with self.transaction("an error record") as c:
            _insert(c, "errors", row, uid=new_uid(), network_id=network_id)

    def add_whatif(self, network_id: int, run_uid: str, row: WhatIfRow) -> None:
        """Store one what-if result."""
        with self.transaction(f"the what-if result {row.transformation}") as c:
            _insert(c, "whatif_results", row, network_id=network_id, run_uid=run_uid)

    def whatif_rows(self, network_id: int | None = None) -> list[tuple[str, WhatIfRow]]:
        """(network name, row) of every what-if result (of one network, when given), in the order
        they were stored."""
        rows = self._rows(
            "SELECT w.*, n.name AS network FROM whatif_results w JOIN networks n "
            "ON n.id = w.network_id WHERE (:nid IS NULL OR w.network_id = :nid) ORDER BY w.rowid",
            {"nid": network_id})
        return [(r["network"], _record(WhatIfRow, r)) for r in rows]

    def add_work(self, network_id: int, run_uid: str, rows: Sequence[WorkRow]) -> None:
        """Store one network's cost-vs-work points (all or none)."""
        with self.transaction("the cost-vs-work points") as c:
            for row in rows:
                _insert(c, "work_points", row, uid=new_uid(), network_id=network_id, run_uid=run_uid)

    def work_rows(self, group: Group) -> list[tuple[str, WorkRow]]:
        """(network name, row) of every cost-vs-work point of ``group``'s networks."""
        rows = self._rows(
            "SELECT w.*, n.name AS network FROM work_points w JOIN networks n ON n.id = w.network_id "
            "WHERE n.config_hash = :config AND n.fingerprint = :machine ORDER BY w.rowid",
            {"config": group.config_hash, "machine": group.fingerprint})
        return [(r["network"], _record(WorkRow, r)) for r in rows]

    def put_unseen(self, row: UnseenRow) -> None:
        """Store one unseen-network result; a left-out row stored before for the same network,
        configuration, mode, protocol and machine is replaced (it was tried again)."""
        with self.transaction(f"the unseen-network result {row.network} {row.mode}") as c:
            c.execute("DELETE FROM unseen_results WHERE measured_s IS NULL AND config_hash = ? AND "
                      "fingerprint = ? AND network = ? AND input_shape = ? AND batch_size = ? AND "
                      "mode = ?", (row.config_hash, row.fingerprint, row.network, row.input_shape,
                                   row.batch_size, row.mode))
            _insert(c, "unseen_results", row)

    def unseen_rows(self, *, config_hash: str | None = None,
                    fingerprint: str | None = None) -> list[UnseenRow]:
        """Every stored unseen-network result (of one protocol / machine, when given), in the
        order stored."""
        rows = self._rows(
            "SELECT * FROM unseen_results WHERE (:config_hash IS NULL OR config_hash = :config_hash) "
            "AND (:fingerprint IS NULL OR fingerprint = :fingerprint) ORDER BY rowid",
            {"config_hash": config_hash, "fingerprint": fingerprint})
        return [_record(UnseenRow, r) for r in rows]

    def has_work(self, network_id: int) -> bool:
        return self._scalar("SELECT COUNT(*) FROM work_points WHERE network_id = ?", (network_id,)) > 0

    # -- what is done (for resuming) -------------------------------------------------------------
    def has_count(self, network_id: int, mode: str) -> bool:
        return self._scalar("SELECT COUNT(*) FROM counts WHERE network_id = ? AND mode = ?",
                            (network_id, mode)) > 0

    def count_row(self, network_id: int, mode: str) -> CountRow | None:
        """The stored count of one network and mode, or None."""
        rows = self._rows("SELECT * FROM counts WHERE network_id = ? AND mode = ?", (network_id, mode))
        return _record(CountRow, rows[0]) if rows else None

    def timing_repeats(self, network_id: int, mode: str, *, world_size: int = 1) -> int:
        """How many of the planned repeats of the ``mode`` step of ``world_size`` processes are
        stored (re-measures of drifted repeats not counted)."""
        return self._scalar("SELECT COUNT(*) FROM step_timings WHERE network_id = ? AND mode = ? "
                            "AND world_size = ? AND remeasure = 0", (network_id, mode, world_size))

    def timing_rows(self, network_id: int, mode: str, *, world_size: int = 1) -> tuple[TimingRow, ...]:
        """Every stored repeat of the ``mode`` step of ``world_size`` processes, re-measures
        included, in the order they were stored."""
        return tuple(_record(TimingRow, t) for t in self._rows(
            "SELECT * FROM step_timings WHERE network_id = ? AND mode = ? AND world_size = ? "
            "ORDER BY measured, rowid", (network_id, mode, world_size)))

    def has_data_parallel(self, network_id: int, *, world_size: int, backend: str) -> bool:
        """True when a data-parallel step of ``world_size`` ``backend`` workers, with its
        all-reduce, is stored."""
        return self._scalar(
            "SELECT COUNT(*) FROM step_timings t JOIN allreduce_timings a ON a.timing_uid = t.uid "
            "WHERE t.network_id = ? AND t.world_size = ? AND t.backend = ?",
            (network_id, world_size, backend)) > 0

    def has_complete_training(self, network_id: int) -> bool:
        return self._scalar("SELECT COUNT(*) FROM trainings WHERE network_id = ? AND "
                            "status = 'complete'", (network_id,)) > 0

    def has_breakdown(self, network_id: int) -> bool:
        return self._scalar("SELECT COUNT(*) FROM breakdowns WHERE network_id = ?", (network_id,)) > 0

    def result_count(self) -> int:
        """How many measurements the store holds (counts, timings, epochs, breakdowns)."""
        return sum(self._scalar(f"SELECT COUNT(*) FROM {t}")  # noqa: S608 -- our own table names
                   for t in ("counts", "step_timings", "epochs", "breakdowns"))

    # -- reading --------------------------------------------------------------------------------
    def runs(self) -> list[RunRow]:
        """Every run, oldest first."""
        return [_record(RunRow, r) for r in self._rows("SELECT * FROM runs ORDER BY started, rowid")]

    def groups(self) -> list[Group]:
        """Stored results grouped by (configuration, machine), most networks first."""
        keys = self._rows(
            "SELECT config_hash, fingerprint, MIN(config) AS config FROM networks "
            "GROUP BY config_hash, fingerprint ORDER BY COUNT(*) DESC, MIN(id)")
        out = []
        for key in keys:
            env = self.environment(key["fingerprint"]) or EnvironmentRow(key["fingerprint"], {})
            out.append(Group(
                config_hash=key["config_hash"], fingerprint=key["fingerprint"],
                config=json.loads(key["config"]), environment=env.environment,
                peak_flops_per_s=env.peak_flops_per_s, calibration=env.calibration,
                operator_model=env.operator_model,
                networks=tuple(self.network_results(config_hash=key["config_hash"],
                                                    fingerprint=key["fingerprint"]))))
        return out

    def network_results(self, *, config_hash: str | None = None,
                        fingerprint: str | None = None) -> list[NetworkResult]:
        """Every stored network (optionally of one configuration / machine), in storage order."""
        rows = self._rows(
            "SELECT * FROM networks WHERE (:config_hash IS NULL OR config_hash = :config_hash) "
            "AND (:fingerprint IS NULL OR fingerprint = :fingerprint) ORDER BY id",
            {"config_hash": config_hash, "fingerprint": fingerprint})
        return [self._network(r) for r in rows]

    def _network(self, r: sqlite3.Row) -> NetworkResult:
        nid = (r["id"],)
        counts = {c["mode"]: _record(CountRow, c)
                  for c in self._rows("SELECT * FROM counts WHERE network_id = ?", nid)}
        timings = tuple(_record(TimingRow, t) for t in self._rows(
            "SELECT * FROM step_timings WHERE network_id = ? ORDER BY measured, rowid", nid))
        trainings = tuple(
            _record(TrainingRow, t, epochs=tuple(_record(EpochRecord, e) for e in self._rows(
                "SELECT * FROM epochs WHERE training_uid = ? ORDER BY epoch", (t["uid"],))))
            for t in self._rows("SELECT * FROM trainings WHERE network_id = ? "
                                "ORDER BY started, rowid", nid))
        breakdown = {b["layer_type"]: (b["time_s"], b["flops"]) for b in self._rows(
            "SELECT * FROM breakdowns WHERE network_id = ?", nid)}
        errors = tuple(_record(ErrorRow, e) for e in self._rows(
            "SELECT * FROM errors WHERE network_id = ? ORDER BY at, rowid", nid))
        allreduce = {a["timing_uid"]: _record(AllreduceRow, a) for a in self._rows(
            "SELECT a.* FROM allreduce_timings a JOIN step_timings t ON t.uid = a.timing_uid "
            "WHERE t.network_id = ?", nid)}
        return _record(NetworkResult, r, counts=counts, timings=timings, trainings=trainings,
                       breakdown=breakdown, errors=errors, allreduce=allreduce)


def _network_id(c: sqlite3.Connection, row: NetworkRow) -> int:
    """The id of ``row``'s resume key, inserted on first use (inside the caller's transaction)."""
    _insert(c, "networks", row, verb="INSERT OR IGNORE")
    found = c.execute("SELECT id FROM networks WHERE name = ? AND config_hash = ? AND fingerprint = ?",
                      (row.name, row.config_hash, row.fingerprint)).fetchone()
    return int(found[0])


# -- opening ----------------------------------------------------------------------------------------
def open_store(path: str | os.PathLike[str], *, create: bool = True, read_only: bool = False) -> Store:
    """Open (``create``: or create) the results store at ``path``, migrating an older schema.

    ``read_only``: for commands that only read; the file is opened with SQLite's ``mode=ro`` and
    never written (never created either), and an older schema is migrated in a copy in memory.

    StoreError for a path that is a folder, a file that is not SQLite (an empty file too, unless
    creating), an SQLite file that is not a dnncost store, a damaged store, a store written by a
    newer dnncost, or a missing file when not ``create``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise StoreError(f"'{path}' is a folder; a results database is a file such as {path}/study.sqlite")
    create = create and not read_only
    if path.exists():
        _check_header(path, empty_ok=create)
    elif not create:
        raise StoreError(f"no results database at '{path}'; run `dnncost study --db {path}` first")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for '{path}': {exc}") from exc
    try:
        if read_only:
            conn = _connect_read_only(path)
        else:
            conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        hint = "" if path.exists() else " (a new database needs a writable folder)"
        raise StoreError(f"cannot open results database '{path}': {exc}{hint}") from exc
    store = Store(conn, path)
    try:
        _check_intact(store)
        store = _prepare(store, read_only=read_only)
        store.conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        store.close()
        raise _friendly(exc, path, "opening it") from exc
    except BaseException:
        store.close()
        raise
    return store


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write ``path`` (SQLite ``mode=ro``). When a writer was killed in
    the middle of a transaction, its rollback journal is hot and a read-only connection cannot
    undo it: the committed state is then read from a copy of the file and its journal, which
    SQLite rolls back, held in memory; the user's files stay as they are."""
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        journal = path.with_name(path.name + "-journal")
        if "readonly" not in str(exc).lower() or not journal.is_file():
            return conn  # any other problem is reported by the checks that follow
        conn.close()
        with tempfile.TemporaryDirectory(prefix="dnncost-read-") as tmp:
            shutil.copyfile(path, Path(tmp) / path.name)
            shutil.copyfile(journal, Path(tmp) / journal.name)
            disk = sqlite3.connect(str(Path(tmp) / path.name), isolation_level=None)
            conn = sqlite3.connect(":memory:", isolation_level=None)
            try:
                disk.backup(conn)  # the copy's hot journal is rolled back first
            finally:
                disk.close()
    return conn


def _check_header(path: Path, *, empty_ok: bool) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot read results database '{path}': {exc.strerror}") from exc
    if not head and not empty_ok:
        raise StoreError(f"'{path}' is an empty file, not a dnncost results database; point at "
                         "the file a study wrote")
    if head and head != SQLITE_HEADER:
        raise StoreError(f"'{path}' is not an SQLite database (it starts with {head[:8]!r}); "
                         "point at a dnncost results file or a new path")


def _check_intact(store: Store) -> None:
    """StoreError naming the damage when SQLite's quick_check finds a damaged page or index."""
    try:
        problems = [str(r[0]) for r in store.conn.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc).lower() or "busy" in str(exc).lower():
            raise
        raise _damaged(store.path, str(exc)) from exc
    if problems != ["ok"]:
        raise _damaged(store.path, "; ".join(problems))


def _prepare(store: Store, *, read_only: bool) -> Store:
    """Check the file is ours, then bring its schema up to SCHEMA_VERSION (``read_only``: in a
    copy held in memory, the file untouched). Returns the store to use."""
    conn, path = store.conn, store.path
    # one read transaction: another process's first migration (tables, application id and version
    # in one commit) lands wholly before these reads or after them, never between two of them
    conn.execute("BEGIN")
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    finally:
        conn.execute("COMMIT")
    if app_id != APPLICATION_ID:
        if tables or version:
            raise StoreError(
                f"'{path}' is an SQLite database but not a dnncost results store (it holds tables "
                f"{', '.join(sorted(tables)) or 'none'}); point at a dnncost file or a new path")
        if read_only:
            raise StoreError(f"'{path}' holds no dnncost results (an empty SQLite database)")
        version = 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"'{path}' was written by a newer dnncost (schema version {version}; this dnncost reads "
            f"up to {SCHEMA_VERSION}); upgrade dnncost to read it")
    if not read_only:
        migrate(store, version)
        return store
    if version < SCHEMA_VERSION:  # read an older store through a migrated copy; the file stays as it is
        copy = sqlite3.connect(":memory:", isolation_level=None)
        conn.backup(copy)
        store.close()
        store = Store(copy, path)
        migrate(store, version)
    store.read_only = True
    return store


def migrate(store: Store, version: int, *, migrations: Mapping[int, str] | None = None) -> int:
    """Apply every migration after ``version``, each with its version bump in one transaction.

    The version is read again inside each (IMMEDIATE) transaction, so two processes opening a new
    or old store at once both succeed: the second waits for the first and finds its work done.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    for target in sorted(v for v in migrations if v > version):
        with store.transaction(f"the migration to schema version {target}") as c:
            if c.execute("PRAGMA user_version").fetchone()[0] >= target:
                continue  # another process migrated it while we waited
            for statement in _statements(migrations[target]):
                c.execute(statement)
            c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            c.execute(f"PRAGMA user_version = {int(target)}")
        version = target
    return version


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (sqlite3.complete_statement finds the ends)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


# -- merging ----------------------------------------------------------------------------------------
def merge(sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> dict[str, int]:
    """Combine the stores ``sources`` into ``out`` (created or extended) without duplicates.

    Sources are opened read-only and never modified. Networks are matched by their resume key
    (name, configuration hash, machine fingerprint); measurements by their uid, so merging a copy
    of a store, or merging twice, adds nothing. Returns how many rows of each table were added.
    """
    out_path = Path(out).expanduser()
    added: dict[str, int] = dict.fromkeys(MERGE_ORDER, 0)
    with open_store(out_path) as dst:
        dst.lock()
        for source in sources:
            src_path = Path(source).expanduser()
            if src_path.exists() and out_path.exists() and src_path.samefile(out_path):
                continue
            with open_store(src_path, read_only=True) as src:
                with dst.transaction(f"the merge of '{src_path}'") as c:
                    for table, n in _merge_one(src, c).items():
                        added[table] += n
    return added


def _merge_one(src: Store, c: sqlite3.Connection) -> dict[str, int]:
    """Copy every row of ``src`` into ``c``'s store by column name, network ids mapped to ours."""
    added: dict[str, int] = {}
    ids: dict[int, int] = {}
    for table in MERGE_ORDER:
        before = c.total_changes
        for row in src._rows(f"SELECT * FROM {table}"):  # noqa: S608 -- our own table names
            values = {name: row[name] for name in row.keys()}  # noqa: SIM118 -- sqlite3.Row
            if table == "networks":
                ids[values.pop("id")] = _network_id(c, _record(NetworkRow, row))
                continue
            if values.get("network_id") is not None:
                values["network_id"] = ids[values["network_id"]]
            _insert(c, table, verb="INSERT OR IGNORE", **values)
        added[table] = c.total_changes - before
    return added


__all__ = [
    "APPLICATION_ID", "MERGE_ORDER", "MIGRATIONS", "SCHEMA_VERSION", "AllreduceRow", "CountRow",
    "EnvironmentRow", "ErrorRow", "Group", "NetworkResult", "NetworkRow", "RepeatConditions", "RunRow",
    "Store", "TimingRow", "TrainingRow", "UnseenRow", "WhatIfRow", "merge", "migrate", "open_store",
]
