"""The open store: :func:`open_store` checks that a file is a dnncost store (SQLite header,
application id, integrity, schema version) and migrates it, :class:`Store` writes each result in
one transaction and reads results back, and a lock file keeps one study writing at a time.
Commands that only read open the store read-only: the file is never written, and an older schema
is migrated in a copy held in memory. SQLite's errors become one plain-language StoreError
("disk full: every result finished before it is kept").
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from dnncost.core.errors import StoreError
from dnncost.core.kinds import Mode
from dnncost.distributed.records import DataParallelStep
from dnncost.study.store.rows import (
    AllreduceRow,
    CountRow,
    EnvironmentRow,
    ErrorRow,
    Group,
    NetworkResult,
    NetworkRow,
    PredictionRow,
    RunRow,
    TimingRow,
    TrainingRow,
    UnseenRow,
    WhatIfRow,
    WorkRow,
    from_row,
    insert_row,
    new_uid,
    now,
    row_columns,
)
from dnncost.study.store.schema import APPLICATION_ID, SCHEMA_VERSION, migrate
from dnncost.training.records import EpochRecord, TimeToTarget, ValidationRecord

SQLITE_HEADER = b"SQLite format 3\x00"  # source: https://www.sqlite.org/fileformat.html section 1.3
BUSY_TIMEOUT_S = 30.0  # source: our choice; a second process waits this long for a writer's
# transaction (the longest is a migration or a merge) before giving up with "locked"


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
            raise StoreError(f"another dnncost run (study, evaluate --unseen or whatif --db) is "
                             f"writing to '{self.path}' right now; wait for it to finish or use "
                             "another results database") from None
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
                         for name in row_columns(row) if name != "fingerprint")
        with self.transaction("the environment") as c:
            insert_row(c, "environments", row, suffix=f"ON CONFLICT(fingerprint) DO UPDATE SET {keep}")

    def environment(self, fingerprint: str) -> EnvironmentRow | None:
        """What is stored about a machine, or None when it has no row."""
        rows = self._rows("SELECT * FROM environments WHERE fingerprint = ?", (fingerprint,))
        return from_row(EnvironmentRow, rows[0]) if rows else None

    def start_run(self, *, command: str, config: Mapping[str, object], config_hash: str,
                  fingerprint: str) -> str:
        """A new run row (status 'running'); runs left 'running' by a killed study become
        'interrupted' (the lock guarantees no live study holds them)."""
        row = RunRow(uid=new_uid(), started=now(), finished=None, status="running", command=command,
                     config=config, config_hash=config_hash, fingerprint=fingerprint)
        with self.transaction("the start of the run") as c:
            c.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            c.execute("UPDATE trainings SET status = 'interrupted' WHERE status = 'running'")
            insert_row(c, "runs", row)
        return row.uid

    def finish_run(self, run_uid: str, status: str) -> None:
        with self.transaction("the end of the run") as c:
            c.execute("UPDATE runs SET status = ?, finished = ? WHERE uid = ?", (status, now(), run_uid))

    def network_id(self, row: NetworkRow) -> int:
        """The id of ``row``'s resume key (name, config_hash, fingerprint), created on first use."""
        with self.transaction(f"network {row.name}") as c:
            return network_id_in(c, row)

    def put_count(self, network_id: int, row: CountRow) -> None:
        with self.transaction(f"the {row.mode} count") as c:
            insert_row(c, "counts", row, verb="INSERT OR REPLACE", network_id=network_id)

    def add_timing(self, network_id: int, run_uid: str, row: TimingRow) -> str:
        """Store one repeat of a timed step (``row.conditions``: the machine around it); returns its uid."""
        with self.transaction(f"a {row.mode}-step timing") as c:
            insert_row(c, "step_timings", row, network_id=network_id, run_uid=run_uid)
        return row.uid

    def add_data_parallel_timing(self, network_id: int, run_uid: str, step: DataParallelStep) -> str:
        """Store a data-parallel training step and its all-reduce in one transaction (so a resumed
        study never finds one without the other); returns the step timing's uid."""
        if step.world_size < 2:
            raise StoreError(f"a data-parallel timing needs world_size >= 2, got {step.world_size}")
        timing = TimingRow(mode=Mode.TRAIN.value, samples=step.samples, median_s=step.median_s,
                           iqr_s=step.iqr_s, threads=step.threads, world_size=step.world_size,
                           backend=step.backend)
        shared = {f.name: getattr(step, f.name) for f in dataclasses.fields(AllreduceRow)
                  if f.name not in ("timing_uid", "samples")}  # the other fields share their names
        allreduce = AllreduceRow(timing_uid=timing.uid, samples=tuple(step.allreduce_samples), **shared)
        with self.transaction("a data-parallel step timing") as c:
            insert_row(c, "step_timings", timing, network_id=network_id, run_uid=run_uid)
            insert_row(c, "allreduce_timings", allreduce)
        return timing.uid

    def start_training(self, network_id: int, run_uid: str, *, epochs_planned: int,
                       dataset: str, seed: int = 0) -> str:
        """A new training run (status 'running') of ``epochs_planned`` epochs (the cap of a run
        to a target) from ``seed``; returns its uid."""
        uid = new_uid()
        with self.transaction("the start of a training run") as c:
            insert_row(c, "trainings", uid=uid, network_id=network_id, run_uid=run_uid,
                       status="running", epochs_planned=epochs_planned, dataset=dataset,
                       started=now(), finished=None, seed=seed)
        return uid

    def add_epoch(self, training_uid: str, record: EpochRecord) -> None:
        with self.transaction(f"epoch {record.epoch}") as c:
            insert_row(c, "epochs", record, uid=new_uid(), training_uid=training_uid)

    def add_validation(self, training_uid: str, record: ValidationRecord) -> None:
        """Store one validation of a training run, as it is made."""
        with self.transaction(f"validation {record.index}") as c:
            insert_row(c, "validations", record, uid=new_uid(), training_uid=training_uid)

    def put_time_to_target(self, training_uid: str, record: TimeToTarget) -> None:
        """Store the time to the target accuracy of a training run."""
        with self.transaction("the time to the target accuracy") as c:
            insert_row(c, "times_to_target", record, verb="INSERT OR REPLACE",
                       training_uid=training_uid)

    def put_stage_times(self, run_uid: str, seconds: Mapping[str, float]) -> None:
        """Record (or refresh) the wall time ``run_uid`` has spent so far in each stage."""
        with self.transaction("the wall time of each stage") as c:
            for stage, wall_s in seconds.items():
                insert_row(c, "stage_times", verb="INSERT OR REPLACE", run_uid=run_uid, stage=stage,
                           wall_s=float(wall_s))

    def stage_times(self, *, config_hash: str, fingerprint: str) -> dict[str, dict[str, float]]:
        """run uid -> {stage: wall seconds} of every run of one configuration on one machine
        that recorded its stages, oldest run first."""
        rows = self._rows(
            "SELECT s.run_uid, s.stage, s.wall_s FROM stage_times s JOIN runs r ON r.uid = s.run_uid "
            "WHERE r.config_hash = ? AND r.fingerprint = ? ORDER BY r.started, r.rowid, s.rowid",
            (config_hash, fingerprint))
        out: dict[str, dict[str, float]] = {}
        for r in rows:
            out.setdefault(r["run_uid"], {})[r["stage"]] = float(r["wall_s"])
        return out

    def finish_training(self, training_uid: str, status: str) -> None:
        with self.transaction("the end of a training run") as c:
            c.execute("UPDATE trainings SET status = ?, finished = ? WHERE uid = ?",
                      (status, now(), training_uid))

    def put_breakdown(self, network_id: int, rows: Mapping[str, tuple[float, int]]) -> None:
        """Measured time and counted FLOPs per layer type, all in one transaction."""
        with self.transaction("a per-layer-type breakdown") as c:
            for layer_type, (time_s, flops) in rows.items():
                insert_row(c, "breakdowns", verb="INSERT OR REPLACE", network_id=network_id,
                        layer_type=layer_type, time_s=float(time_s), flops=int(flops))

    def add_error(self, network_id: int | None, run_uid: str, *, stage: str, error: BaseException,
                  traceback: str) -> None:
        row = ErrorRow(stage=stage, error_type=type(error).__name__,
                       message=str(error) or type(error).__name__, traceback=traceback, at=now(),
                       run_uid=run_uid)
        with self.transaction("an error record") as c:
            insert_row(c, "errors", row, uid=new_uid(), network_id=network_id)

    def add_whatif(self, network_id: int, run_uid: str, row: WhatIfRow) -> None:
        """Store one what-if result."""
        with self.transaction(f"the what-if result {row.transformation}") as c:
            insert_row(c, "whatif_results", row, network_id=network_id, run_uid=run_uid)

    def whatif_rows(self, network_id: int | None = None) -> list[tuple[str, WhatIfRow]]:
        """(network name, row) of every what-if result (of one network, when given), in the order
        they were stored."""
        rows = self._rows(
            "SELECT w.*, n.name AS network FROM whatif_results w JOIN networks n "
            "ON n.id = w.network_id WHERE (:nid IS NULL OR w.network_id = :nid) ORDER BY w.rowid",
            {"nid": network_id})
        return [(r["network"], from_row(WhatIfRow, r)) for r in rows]

    def add_work(self, network_id: int, run_uid: str, rows: Sequence[WorkRow]) -> None:
        """Store one network's cost-vs-work points (all or none)."""
        with self.transaction("the cost-vs-work points") as c:
            for row in rows:
                insert_row(c, "work_points", row, uid=new_uid(), network_id=network_id, run_uid=run_uid)

    def work_rows(self, group: Group) -> list[tuple[str, WorkRow]]:
        """(network name, row) of every cost-vs-work point of ``group``'s networks."""
        rows = self._rows(
            "SELECT w.*, n.name AS network FROM work_points w JOIN networks n ON n.id = w.network_id "
            "WHERE n.config_hash = :config AND n.fingerprint = :machine ORDER BY w.rowid",
            {"config": group.config_hash, "machine": group.fingerprint})
        return [(r["network"], from_row(WorkRow, r)) for r in rows]

    def put_predictions(self, network_id: int, rows: Sequence[PredictionRow]) -> None:
        """Store one network's predicted steps (all or none), replacing a prediction of the same
        step by the same model."""
        with self.transaction("the predicted step times") as c:
            for row in rows:
                insert_row(c, "predictions", row, verb="INSERT OR REPLACE", network_id=network_id)

    def has_predictions(self, network_id: int, calibration_id: str) -> bool:
        """True when the model ``calibration_id`` has predicted a step of the network."""
        return self._scalar("SELECT COUNT(*) FROM predictions WHERE network_id = ? AND "
                            "calibration_id = ?", (network_id, calibration_id)) > 0

    def prediction_rows(self, group: Group) -> list[tuple[str, PredictionRow]]:
        """(network name, row) of every stored prediction of ``group``'s networks, in the order
        they were stored."""
        rows = self._rows(
            "SELECT p.*, n.name AS network FROM predictions p JOIN networks n ON n.id = p.network_id "
            "WHERE n.config_hash = :config AND n.fingerprint = :machine ORDER BY p.rowid",
            {"config": group.config_hash, "machine": group.fingerprint})
        return [(r["network"], from_row(PredictionRow, r)) for r in rows]

    def put_unseen(self, row: UnseenRow) -> None:
        """Store one unseen-network result; a left-out row stored before for the same network,
        configuration, mode, protocol and machine is replaced (it was tried again)."""
        with self.transaction(f"the unseen-network result {row.network} {row.mode}") as c:
            c.execute("DELETE FROM unseen_results WHERE measured_s IS NULL AND config_hash = ? AND "
                      "fingerprint = ? AND network = ? AND input_shape = ? AND batch_size = ? AND "
                      "mode = ?", (row.config_hash, row.fingerprint, row.network, row.input_shape,
                                   row.batch_size, row.mode))
            insert_row(c, "unseen_results", row)

    def unseen_rows(self, *, config_hash: str | None = None,
                    fingerprint: str | None = None) -> list[UnseenRow]:
        """Every stored unseen-network result (of one protocol / machine, when given), in the
        order stored."""
        rows = self._rows(
            "SELECT * FROM unseen_results WHERE (:config_hash IS NULL OR config_hash = :config_hash) "
            "AND (:fingerprint IS NULL OR fingerprint = :fingerprint) ORDER BY rowid",
            {"config_hash": config_hash, "fingerprint": fingerprint})
        return [from_row(UnseenRow, r) for r in rows]

    def has_work(self, network_id: int) -> bool:
        return self._scalar("SELECT COUNT(*) FROM work_points WHERE network_id = ?", (network_id,)) > 0

    # -- what is done (for resuming) -------------------------------------------------------------
    def has_count(self, network_id: int, mode: str) -> bool:
        return self._scalar("SELECT COUNT(*) FROM counts WHERE network_id = ? AND mode = ?",
                            (network_id, mode)) > 0

    def count_row(self, network_id: int, mode: str) -> CountRow | None:
        """The stored count of one network and mode, or None."""
        rows = self._rows("SELECT * FROM counts WHERE network_id = ? AND mode = ?", (network_id, mode))
        return from_row(CountRow, rows[0]) if rows else None

    def timing_repeats(self, network_id: int, mode: str, *, world_size: int = 1) -> int:
        """How many of the planned repeats of the ``mode`` step of ``world_size`` processes are
        stored (re-measures of drifted repeats not counted)."""
        return self._scalar("SELECT COUNT(*) FROM step_timings WHERE network_id = ? AND mode = ? "
                            "AND world_size = ? AND remeasure = 0", (network_id, mode, world_size))

    def timing_rows(self, network_id: int, mode: str, *, world_size: int = 1) -> tuple[TimingRow, ...]:
        """Every stored repeat of the ``mode`` step of ``world_size`` processes, re-measures
        included, in the order they were stored."""
        return tuple(from_row(TimingRow, t) for t in self._rows(
            "SELECT * FROM step_timings WHERE network_id = ? AND mode = ? AND world_size = ? "
            "ORDER BY measured, rowid", (network_id, mode, world_size)))

    def has_data_parallel(self, network_id: int, *, world_size: int, backend: str) -> bool:
        """True when a data-parallel step of ``world_size`` ``backend`` workers, with its
        all-reduce, is stored."""
        return self._scalar(
            "SELECT COUNT(*) FROM step_timings t JOIN allreduce_timings a ON a.timing_uid = t.uid "
            "WHERE t.network_id = ? AND t.world_size = ? AND t.backend = ?",
            (network_id, world_size, backend)) > 0

    def has_complete_training(self, network_id: int, *, seed: int | None = None) -> bool:
        """True when a training run of the network (from ``seed``, when given) is complete."""
        return self._scalar("SELECT COUNT(*) FROM trainings WHERE network_id = ? AND "
                            "status = 'complete' AND (? IS NULL OR seed = ?)",
                            (network_id, seed, seed)) > 0

    def has_breakdown(self, network_id: int) -> bool:
        return self._scalar("SELECT COUNT(*) FROM breakdowns WHERE network_id = ?", (network_id,)) > 0

    def result_count(self) -> int:
        """How many measurements the store holds (counts, timings, epochs, validations,
        breakdowns)."""
        return sum(self._scalar(f"SELECT COUNT(*) FROM {t}")  # noqa: S608 -- our own table names
                   for t in ("counts", "step_timings", "epochs", "validations", "breakdowns"))

    # -- reading --------------------------------------------------------------------------------
    def runs(self) -> list[RunRow]:
        """Every run, oldest first."""
        return [from_row(RunRow, r) for r in self._rows("SELECT * FROM runs ORDER BY started, rowid")]

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
        counts = {c["mode"]: from_row(CountRow, c)
                  for c in self._rows("SELECT * FROM counts WHERE network_id = ?", nid)}
        timings = tuple(from_row(TimingRow, t) for t in self._rows(
            "SELECT * FROM step_timings WHERE network_id = ? ORDER BY measured, rowid", nid))
        trainings = tuple(self._training(t) for t in self._rows(
            "SELECT * FROM trainings WHERE network_id = ? ORDER BY started, rowid", nid))
        breakdown = {b["layer_type"]: (b["time_s"], b["flops"]) for b in self._rows(
            "SELECT * FROM breakdowns WHERE network_id = ?", nid)}
        errors = tuple(from_row(ErrorRow, e) for e in self._rows(
            "SELECT * FROM errors WHERE network_id = ? ORDER BY at, rowid", nid))
        allreduce = {a["timing_uid"]: from_row(AllreduceRow, a) for a in self._rows(
            "SELECT a.* FROM allreduce_timings a JOIN step_timings t ON t.uid = a.timing_uid "
            "WHERE t.network_id = ?", nid)}
        return from_row(NetworkResult, r, counts=counts, timings=timings, trainings=trainings,
                       breakdown=breakdown, errors=errors, allreduce=allreduce)


    def _training(self, t: sqlite3.Row) -> TrainingRow:
        """A training run with its epochs, validations and time to target."""
        uid = (t["uid"],)
        epochs = tuple(from_row(EpochRecord, e) for e in self._rows(
            "SELECT * FROM epochs WHERE training_uid = ? ORDER BY epoch", uid))
        validations = tuple(from_row(ValidationRecord, v) for v in self._rows(
            'SELECT * FROM validations WHERE training_uid = ? ORDER BY "index"', uid))
        target = self._rows("SELECT * FROM times_to_target WHERE training_uid = ?", uid)
        return from_row(TrainingRow, t, epochs=epochs, validations=validations,
                        time_to_target=from_row(TimeToTarget, target[0], reached=bool(target[0]["reached"]))
                        if target else None)


def network_id_in(c: sqlite3.Connection, row: NetworkRow) -> int:
    """The id of ``row``'s resume key, inserted on first use (inside the caller's transaction)."""
    insert_row(c, "networks", row, verb="INSERT OR IGNORE")
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


__all__ = ["BUSY_TIMEOUT_S", "SQLITE_HEADER", "Store", "network_id_in", "open_store"]
