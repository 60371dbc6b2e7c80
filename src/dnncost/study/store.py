"""The study's results store: one SQLite file that keeps every measurement as soon as it is made.

Why SQLite: one file, transactions (a result is either wholly stored or absent, even after SIGKILL),
and readable by anyone with ``sqlite3``. Layout (schema version in ``PRAGMA user_version``, the file
marked as dnncost's by ``PRAGMA application_id``):

- ``environments``: one row per machine fingerprint, with its environment and calibrated peak;
- ``runs``: one row per invocation of a study (its configuration, status, start and end);
- ``networks``: one row per resume key (network name, configuration hash, machine fingerprint);
- ``counts``: the counter's figures per network and mode (eval = forward, train = whole step);
- ``step_timings``: one row per repeat of a timed step, raw samples kept as JSON;
- ``trainings`` and ``epochs``: real training runs and each finished epoch;
- ``breakdowns``: measured time and counted FLOPs per layer type;
- ``errors``: what failed, where, with its traceback;
- ``allreduce_timings`` (schema version 2): for a data-parallel step timing (world size > 1), the
  time with a gradient all-reduce in flight, its bytes, and the single-process reference.

Measurements carry a ``uid`` so that :func:`merge` can combine stores from several machines (or
copies of one) without duplicates. One study writes to a store at a time (a lock file enforces it).
"""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dnncost.errors import StoreError

SCHEMA_VERSION = 2  # bump with a new entry in MIGRATIONS whenever the layout changes
APPLICATION_ID = 0x646E6E63  # source: our choice, ASCII 'dnnc'; marks the file as a dnncost store
SQLITE_HEADER = b"SQLite format 3\x00"  # source: https://www.sqlite.org/fileformat.html section 1.3

_SCHEMA_V1 = """
CREATE TABLE environments (
    fingerprint TEXT PRIMARY KEY,
    environment TEXT NOT NULL,                -- JSON of dnncost.measuring.environment.Environment
    peak_flops_per_s REAL,                    -- calibrated float32 matmul peak, NULL if unknown
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

#: version -> SQL that takes a store from version-1 to version. Applied in order, each in one
#: transaction with the version bump, so a store is never left half-migrated.
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2}

_TABLES = ("environments", "runs", "networks", "counts", "step_timings", "trainings", "epochs",
           "breakdowns", "errors", "allreduce_timings")


def now() -> str:
    """UTC time stamp, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_uid() -> str:
    return uuid.uuid4().hex


# -- records read back ------------------------------------------------------------------------------
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
    by_layer_type: Mapping[str, Mapping[str, int]]
    unsupported: Mapping[str, int]


@dataclass(frozen=True)
class TimingRow:
    """One repeat of a timed step: raw samples (seconds) and their median."""

    uid: str
    mode: str
    samples: tuple[float, ...]
    median_s: float
    iqr_s: float
    threads: int
    peak_memory_bytes: int | None
    world_size: int
    backend: str
    measured: str


@dataclass(frozen=True)
class AllreduceRow:
    """The communication of a data-parallel step timing (the TimingRow ``timing_uid``)."""

    timing_uid: str
    samples: tuple[float, ...]
    allreduce_s_per_step: float
    allreduce_bytes_per_step: int
    buckets_per_step: int
    gradient_bytes: int
    single_process_median_s: float | None
    efficiency: float | None
    launcher: str


@dataclass(frozen=True)
class EpochRow:
    """One finished epoch of a training run."""

    epoch: int
    train_time_s: float
    val_time_s: float
    train_data_time_s: float
    val_data_time_s: float
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    train_samples: int
    val_samples: int
    steps: int


@dataclass(frozen=True)
class TrainingRow:
    """A training run and its finished epochs; only 'complete' runs count in the analysis."""

    uid: str
    status: str
    epochs_planned: int
    dataset: str
    epochs: tuple[EpochRow, ...]


@dataclass(frozen=True)
class ErrorRow:
    stage: str
    error_type: str
    message: str
    traceback: str
    at: str
    run_uid: str


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


# -- the store --------------------------------------------------------------------------------------
def _friendly(exc: sqlite3.Error, path: Path, what: str) -> StoreError:
    text = str(exc)
    if "full" in text.lower():
        return StoreError(
            f"the disk holding '{path}' is full ({text}) while writing {what}; every result "
            "finished before it is kept -- free some space and rerun the same command to resume")
    if "readonly" in text.lower() or "read-only" in text.lower():
        return StoreError(f"cannot write {what} to '{path}': the file or its folder is read-only ({text})")
    if "locked" in text.lower():
        return StoreError(f"'{path}' is locked by another process ({text}); wait for it or use --db")
    return StoreError(f"results database '{path}' failed while {what}: {text}")


class Store:
    """An open results store. Use :func:`open_store`; close with :meth:`close` or ``with``."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
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
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(f"another study is writing to '{self.path}' right now; wait for it to "
                             "finish or pass a different --db") from None
        self._lock_file = fd

    def unlock(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    @contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: wholly committed or wholly rolled back; disk full -> StoreError."""
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
            self.conn.execute("ROLLBACK")

    # -- writing --------------------------------------------------------------------------------
    def put_environment(self, fingerprint: str, environment: Mapping[str, object], *,
                        peak_flops_per_s: float | None, bandwidth_bytes_per_s: float | None,
                        calibration: str | None) -> None:
        """Record (or refresh) the machine's environment and calibrated peak."""
        with self.transaction("the environment") as c:
            c.execute(
                "INSERT INTO environments VALUES (?, ?, ?, ?, ?) ON CONFLICT(fingerprint) DO UPDATE "
                "SET environment = excluded.environment, "
                "peak_flops_per_s = COALESCE(excluded.peak_flops_per_s, peak_flops_per_s), "
                "bandwidth_bytes_per_s = COALESCE(excluded.bandwidth_bytes_per_s, bandwidth_bytes_per_s), "
                "calibration = COALESCE(excluded.calibration, calibration)",
                (fingerprint, json.dumps(dict(environment)), peak_flops_per_s,
                 bandwidth_bytes_per_s, calibration))

    def calibration(self, fingerprint: str) -> tuple[float | None, float | None, str | None] | None:
        """(peak FLOP/s, bandwidth, source) stored for a machine, or None when it has no row."""
        row = self.conn.execute("SELECT peak_flops_per_s, bandwidth_bytes_per_s, calibration FROM "
                                "environments WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return tuple(row) if row else None

    def start_run(self, *, command: str, config: Mapping[str, object], config_hash: str,
                  fingerprint: str) -> str:
        """A new run row (status 'running'); runs left 'running' by a killed study become
        'interrupted' (the lock guarantees no live study holds them)."""
        uid = new_uid()
        with self.transaction("the start of the run") as c:
            c.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            c.execute("UPDATE trainings SET status = 'interrupted' WHERE status = 'running'")
            c.execute("INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?, ?, ?)",
                      (uid, now(), command, json.dumps(dict(config), sort_keys=True), config_hash,
                       fingerprint))
        return uid

    def finish_run(self, run_uid: str, status: str) -> None:
        with self.transaction("the end of the run") as c:
            c.execute("UPDATE runs SET status = ?, finished = ? WHERE uid = ?", (status, now(), run_uid))

    def network_id(self, *, name: str, family: str, config_hash: str, fingerprint: str,
                   config: Mapping[str, object], input_shape: str, batch_size: int, dataset: str,
                   device: str, threads: int, world_size: int = 1, backend: str = "none") -> int:
        """The id of the resume key (name, config_hash, fingerprint), created on first use."""
        with self.transaction(f"network {name}") as c:
            c.execute(
                "INSERT OR IGNORE INTO networks (name, family, config_hash, fingerprint, config, "
                "input_shape, batch_size, dataset, device, threads, world_size, backend) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, family, config_hash, fingerprint, json.dumps(dict(config), sort_keys=True),
                 input_shape, batch_size, dataset, device, threads, world_size, backend))
            row = c.execute("SELECT id FROM networks WHERE name = ? AND config_hash = ? AND "
                            "fingerprint = ?", (name, config_hash, fingerprint)).fetchone()
        return int(row[0])

    def put_count(self, network_id: int, row: CountRow) -> None:
        with self.transaction(f"the {row.mode} count") as c:
            c.execute("INSERT OR REPLACE INTO counts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (network_id, row.mode, row.params, row.trainable_params, row.macs, row.flops,
                       row.bytes, row.op_count, row.activation_bytes, row.peak_bytes,
                       json.dumps(dict(row.by_layer_type)), json.dumps(dict(row.unsupported))))

    def add_timing(self, network_id: int, run_uid: str, *, mode: str, samples: Sequence[float],
                   median_s: float, iqr_s: float, threads: int, peak_memory_bytes: int | None,
                   world_size: int = 1, backend: str = "none") -> str:
        """Store one repeat of a timed step; returns its uid."""
        uid = new_uid()
        with self.transaction(f"a {mode}-step timing") as c:
            c.execute("INSERT INTO step_timings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (uid, network_id, run_uid, mode, json.dumps([float(s) for s in samples]),
                       median_s, iqr_s, threads, peak_memory_bytes, world_size, backend, now()))
        return uid

    def add_data_parallel_timing(
            self, network_id: int, run_uid: str, *, samples: Sequence[float], median_s: float,
            iqr_s: float, threads: int, world_size: int, backend: str,
            allreduce_samples: Sequence[float], allreduce_s_per_step: float,
            allreduce_bytes_per_step: int, buckets_per_step: int, gradient_bytes: int,
            single_process_median_s: float | None, efficiency: float | None,
            launcher: str) -> str:
        """Store a data-parallel training step and its all-reduce in one transaction (so a resumed
        study never finds one without the other); returns the step timing's uid."""
        if world_size < 2:
            raise StoreError(f"a data-parallel timing needs world_size >= 2, got {world_size}")
        uid = new_uid()
        with self.transaction("a data-parallel step timing") as c:
            c.execute("INSERT INTO step_timings VALUES (?, ?, ?, 'train', ?, ?, ?, ?, NULL, ?, ?, ?)",
                      (uid, network_id, run_uid, json.dumps([float(s) for s in samples]),
                       median_s, iqr_s, threads, world_size, backend, now()))
            c.execute("INSERT INTO allreduce_timings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (uid, json.dumps([float(s) for s in allreduce_samples]),
                       allreduce_s_per_step, int(allreduce_bytes_per_step), int(buckets_per_step),
                       int(gradient_bytes), single_process_median_s, efficiency, launcher))
        return uid

    def start_training(self, network_id: int, run_uid: str, *, epochs_planned: int,
                       dataset: str) -> str:
        uid = new_uid()
        with self.transaction("the start of a training run") as c:
            c.execute("INSERT INTO trainings VALUES (?, ?, ?, 'running', ?, ?, ?, NULL)",
                      (uid, network_id, run_uid, epochs_planned, dataset, now()))
        return uid

    def add_epoch(self, training_uid: str, row: EpochRow) -> None:
        with self.transaction(f"epoch {row.epoch}") as c:
            c.execute("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (new_uid(), training_uid, row.epoch, row.train_time_s, row.val_time_s,
                       row.train_data_time_s, row.val_data_time_s, row.train_loss,
                       row.train_accuracy, row.val_loss, row.val_accuracy, row.train_samples,
                       row.val_samples, row.steps))

    def finish_training(self, training_uid: str, status: str) -> None:
        with self.transaction("the end of a training run") as c:
            c.execute("UPDATE trainings SET status = ?, finished = ? WHERE uid = ?",
                      (status, now(), training_uid))

    def put_breakdown(self, network_id: int, rows: Mapping[str, tuple[float, int]]) -> None:
        """Measured time and counted FLOPs per layer type, all in one transaction."""
        with self.transaction("a per-layer-type breakdown") as c:
            c.executemany("INSERT OR REPLACE INTO breakdowns VALUES (?, ?, ?, ?)",
                          [(network_id, t, float(s), int(f)) for t, (s, f) in rows.items()])

    def add_error(self, network_id: int | None, run_uid: str, *, stage: str, error: BaseException,
                  traceback: str) -> None:
        with self.transaction("an error record") as c:
            c.execute("INSERT INTO errors VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (new_uid(), network_id, run_uid, stage, type(error).__name__,
                       str(error) or type(error).__name__, traceback, now()))

    # -- what is done (for resuming) -------------------------------------------------------------
    def has_count(self, network_id: int, mode: str) -> bool:
        return self._scalar("SELECT COUNT(*) FROM counts WHERE network_id = ? AND mode = ?",
                            (network_id, mode)) > 0

    def count_row(self, network_id: int, mode: str) -> CountRow | None:
        """The stored count of one network and mode, or None."""
        c = self.conn.execute("SELECT mode, params, trainable_params, macs, flops, bytes, op_count, "
                              "activation_bytes, peak_bytes, by_layer_type, unsupported FROM counts "
                              "WHERE network_id = ? AND mode = ?", (network_id, mode)).fetchone()
        return _count_row(c) if c else None

    def timing_repeats(self, network_id: int, mode: str, *, world_size: int = 1) -> int:
        """How many repeats of the ``mode`` step of ``world_size`` processes are stored."""
        return self._scalar("SELECT COUNT(*) FROM step_timings WHERE network_id = ? AND mode = ? "
                            "AND world_size = ?", (network_id, mode, world_size))

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

    def _scalar(self, sql: str, params: Sequence[object] = ()) -> int:
        return int(self.conn.execute(sql, params).fetchone()[0])

    def result_count(self) -> int:
        """How many measurements the store holds (counts, timings, epochs, breakdowns)."""
        return sum(self._scalar(f"SELECT COUNT(*) FROM {t}")
                   for t in ("counts", "step_timings", "epochs", "breakdowns"))

    # -- reading --------------------------------------------------------------------------------
    def runs(self) -> list[dict[str, object]]:
        cur = self.conn.execute("SELECT uid, started, finished, status, command, config_hash, "
                                "fingerprint FROM runs ORDER BY started, rowid")
        return [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]

    def groups(self) -> list[Group]:
        """Stored results grouped by (configuration, machine), most networks first."""
        keys = self.conn.execute(
            "SELECT config_hash, fingerprint, MIN(config), COUNT(*) FROM networks "
            "GROUP BY config_hash, fingerprint ORDER BY COUNT(*) DESC, MIN(id)").fetchall()
        out = []
        for config_hash, fingerprint, config, _ in keys:
            env = self.conn.execute("SELECT environment, peak_flops_per_s, calibration FROM "
                                    "environments WHERE fingerprint = ?", (fingerprint,)).fetchone()
            out.append(Group(
                config_hash=config_hash, fingerprint=fingerprint, config=json.loads(config),
                environment=json.loads(env[0]) if env else {},
                peak_flops_per_s=env[1] if env else None, calibration=env[2] if env else None,
                networks=tuple(self.network_results(config_hash=config_hash, fingerprint=fingerprint))))
        return out

    def network_results(self, *, config_hash: str | None = None,
                        fingerprint: str | None = None) -> list[NetworkResult]:
        """Every stored network (optionally of one configuration / machine), in storage order."""
        sql = ("SELECT id, name, family, config_hash, fingerprint, input_shape, batch_size, dataset, "
               "device, threads, world_size, backend FROM networks WHERE (? IS NULL OR config_hash = ?) "
               "AND (? IS NULL OR fingerprint = ?) ORDER BY id")
        rows = self.conn.execute(sql, (config_hash, config_hash, fingerprint, fingerprint)).fetchall()
        return [self._network(r) for r in rows]

    def _network(self, r: Sequence[object]) -> NetworkResult:
        nid = r[0]
        counts = {c[0]: _count_row(c) for c in self.conn.execute(
            "SELECT mode, params, trainable_params, macs, flops, bytes, op_count, activation_bytes, "
            "peak_bytes, by_layer_type, unsupported FROM counts WHERE network_id = ?", (nid,))}
        timings = tuple(
            TimingRow(uid=t[0], mode=t[1], samples=tuple(json.loads(t[2])), median_s=t[3],
                      iqr_s=t[4], threads=t[5], peak_memory_bytes=t[6], world_size=t[7],
                      backend=t[8], measured=t[9])
            for t in self.conn.execute(
                "SELECT uid, mode, samples, median_s, iqr_s, threads, peak_memory_bytes, world_size, "
                "backend, measured FROM step_timings WHERE network_id = ? ORDER BY measured, rowid",
                (nid,)))
        trainings = []
        for t in self.conn.execute("SELECT uid, status, epochs_planned, dataset FROM trainings "
                                   "WHERE network_id = ? ORDER BY started, rowid", (nid,)).fetchall():
            epochs = tuple(EpochRow(*e) for e in self.conn.execute(
                "SELECT epoch, train_time_s, val_time_s, train_data_time_s, val_data_time_s, "
                "train_loss, train_accuracy, val_loss, val_accuracy, train_samples, val_samples, steps "
                "FROM epochs WHERE training_uid = ? ORDER BY epoch", (t[0],)))
            trainings.append(TrainingRow(uid=t[0], status=t[1], epochs_planned=t[2], dataset=t[3],
                                         epochs=epochs))
        breakdown = {b[0]: (b[1], b[2]) for b in self.conn.execute(
            "SELECT layer_type, time_s, flops FROM breakdowns WHERE network_id = ?", (nid,))}
        errors = tuple(ErrorRow(*e) for e in self.conn.execute(
            "SELECT stage, error_type, message, traceback, at, run_uid FROM errors "
            "WHERE network_id = ? ORDER BY at, rowid", (nid,)))
        allreduce = {a[0]: AllreduceRow(a[0], tuple(json.loads(a[1])), *a[2:]) for a in self.conn.execute(
            "SELECT a.timing_uid, a.samples, a.allreduce_s_per_step, a.allreduce_bytes_per_step, "
            "a.buckets_per_step, a.gradient_bytes, a.single_process_median_s, a.efficiency, "
            "a.launcher FROM allreduce_timings a JOIN step_timings t ON t.uid = a.timing_uid "
            "WHERE t.network_id = ?", (nid,))}
        return NetworkResult(
            name=r[1], family=r[2], config_hash=r[3], fingerprint=r[4], input_shape=r[5],
            batch_size=r[6], dataset=r[7], device=r[8], threads=r[9], world_size=r[10],
            backend=r[11], counts=counts, timings=timings, trainings=tuple(trainings),
            breakdown=breakdown, errors=errors, allreduce=allreduce)


def _count_row(c: Sequence[object]) -> CountRow:
    return CountRow(*c[:9], by_layer_type=json.loads(c[9]), unsupported=json.loads(c[10]))


# -- opening ----------------------------------------------------------------------------------------
def open_store(path: str | os.PathLike[str], *, create: bool = True) -> Store:
    """Open (``create``: or create) the results store at ``path``, migrating an older schema.

    StoreError for a path that is a folder, a file that is not SQLite, an SQLite file that is not
    a dnncost store, a store written by a newer dnncost, or a missing file when not ``create``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise StoreError(f"'{path}' is a folder; --db needs a file path such as {path}/study.sqlite")
    if path.exists():
        _check_header(path)
    elif not create:
        raise StoreError(f"no results database at '{path}'; run `dnncost study --db {path}` first")
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for '{path}': {exc}") from exc
    try:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=5.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open results database '{path}': {exc}") from exc
    store = Store(conn, path)
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        _prepare(store)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"'{path}' is not a readable SQLite database ({exc}); "
                         "point --db at a dnncost results file or a new path") from exc
    except BaseException:
        conn.close()
        raise
    return store


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"cannot read results database '{path}': {exc}") from exc
    if head and head != SQLITE_HEADER:
        raise StoreError(f"'{path}' is not an SQLite database (it starts with {head[:8]!r}); "
                         "point --db at a dnncost results file or a new path")


def _prepare(store: Store) -> None:
    """Check the file is ours, then bring its schema up to SCHEMA_VERSION."""
    conn, path = store.conn, store.path
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    if app_id != APPLICATION_ID:
        if tables or version:
            raise StoreError(
                f"'{path}' is an SQLite database but not a dnncost results store (it holds tables "
                f"{', '.join(sorted(tables)) or 'none'}); point --db at a dnncost file or a new path")
        version = 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"'{path}' was written by a newer dnncost (schema version {version}; this dnncost reads "
            f"up to {SCHEMA_VERSION}); upgrade dnncost to read it")
    migrate(store, version)


def migrate(store: Store, version: int, *, migrations: Mapping[int, str] | None = None) -> int:
    """Apply every migration after ``version``, each with its version bump in one transaction."""
    migrations = MIGRATIONS if migrations is None else migrations
    for target in sorted(v for v in migrations if v > version):
        with store.transaction(f"the migration to schema version {target}") as c:
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

    Networks are matched by their resume key (name, configuration hash, machine fingerprint);
    measurements by their uid, so merging a copy of a store, or merging twice, adds nothing.
    Returns how many rows of each table were added.
    """
    out_path = Path(out).expanduser()
    added: dict[str, int] = dict.fromkeys(_TABLES, 0)
    with open_store(out_path) as dst:
        dst.lock()
        for source in sources:
            src_path = Path(source).expanduser()
            if src_path.exists() and out_path.exists() and src_path.samefile(out_path):
                continue
            with open_store(src_path, create=False) as src:
                with dst.transaction(f"the merge of '{src_path}'") as c:
                    for table, n in _merge_one(src, c).items():
                        added[table] += n
    return added


def _merge_one(src: Store, c: sqlite3.Connection) -> dict[str, int]:
    added: dict[str, int] = {}

    def copy(table: str, *, network_column: int | None = None) -> None:
        """Copy every row of ``table``, its network id (at ``network_column``) mapped to ours."""
        cursor = src.conn.execute(f"SELECT * FROM {table}")  # noqa: S608 -- our own table names
        rows = cursor.fetchall()
        if network_column is not None:
            at = network_column
            rows = [r[:at] + (ids[r[at]] if r[at] is not None else None,) + r[at + 1:] for r in rows]
        placeholders = ", ".join("?" * len(cursor.description))
        before = c.total_changes
        c.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({placeholders})", rows)
        added[table] = c.total_changes - before

    copy("environments")
    copy("runs")
    ids: dict[int, int] = {}
    networks = src.conn.execute(
        "SELECT id, name, family, config_hash, fingerprint, config, input_shape, batch_size, dataset, "
        "device, threads, world_size, backend FROM networks").fetchall()
    before = c.total_changes
    for row in networks:
        c.execute("INSERT OR IGNORE INTO networks (name, family, config_hash, fingerprint, config, "
                  "input_shape, batch_size, dataset, device, threads, world_size, backend) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row[1:])
        ids[row[0]] = c.execute("SELECT id FROM networks WHERE name = ? AND config_hash = ? AND "
                                "fingerprint = ?", (row[1], row[3], row[4])).fetchone()[0]
    added["networks"] = c.total_changes - before

    for table, network_column in (("counts", 0), ("step_timings", 1), ("trainings", 1),
                                  ("epochs", None), ("breakdowns", 0), ("errors", 1),
                                  ("allreduce_timings", None)):
        copy(table, network_column=network_column)
    return added


__all__ = [
    "APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "AllreduceRow", "CountRow", "EpochRow", "ErrorRow", "Group",
    "NetworkResult", "Store", "TimingRow", "TrainingRow", "merge", "migrate", "open_store",
]
