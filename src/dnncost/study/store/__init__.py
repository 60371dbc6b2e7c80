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
  and the calibration that made them (dnncost.study.unseen); (schema 10) the per-kernel
  prediction's interval and its stated coverage.
- ``predictions`` (schema 9): the per-kernel model's predicted step of each studied network and
  mode, with the plain roofline, keyed by the model that made it (dnncost.study.predicted).
- (schema 11) the seed of each training run; ``validations``: every validation of a training run
  with the run's totals up to it; ``times_to_target``: a run to a target accuracy's time to it
  (training and validation apart, steps, epochs, samples, reached or not); ``stage_times``: the
  wall time each run of a study spent in each stage (dnncost.study.stages).

The package, one room each: :mod:`~dnncost.study.store.schema` (the SQL of every version and the
migrations), :mod:`~dnncost.study.store.rows` (one frozen record per table, read and written by
column name), :mod:`~dnncost.study.store.store` (opening, checking, locking, writing and reading)
and :mod:`~dnncost.study.store.merge`. The names below are the package's public face:
``from dnncost.study.store import open_store, CountRow, ...``.

**Adding a column**: add the field to the row record and a migration
``N: "ALTER TABLE t ADD COLUMN c ...;"`` to :data:`MIGRATIONS` (``SCHEMA_VERSION`` follows).
**Adding a table**: a migration with its ``CREATE TABLE``, a row record, a writer that calls
``insert_row(c, "t", row, **keys)`` inside ``self.transaction(...)``, a reader that calls
``from_row(Row, r)``, and the table's name in :data:`MERGE_ORDER` (after the tables it references;
its ``network_id`` column, if any, is mapped by :func:`merge`). Migrations never change a version
that has shipped: a store is migrated one version at a time, each in one transaction.

Measurements carry a ``uid`` so that :func:`merge` can combine stores from several machines (or
copies of one) without duplicates. One study writes to a store at a time (a lock file enforces it).
Commands that only read open the store read-only (:func:`open_store` with ``read_only``): the file
is never written, and an older schema is migrated in a copy held in memory.
"""
from __future__ import annotations

from dnncost.study.store.merge import merge
from dnncost.study.store.rows import (
    AllreduceRow,
    CountRow,
    EnvironmentRow,
    ErrorRow,
    Group,
    NetworkResult,
    NetworkRow,
    PredictionRow,
    RepeatConditions,
    RunRow,
    TimingRow,
    TrainingRow,
    UnseenRow,
    WhatIfRow,
    WorkRow,
    new_uid,
    now,
)
from dnncost.study.store.schema import APPLICATION_ID, MERGE_ORDER, MIGRATIONS, SCHEMA_VERSION, migrate
from dnncost.study.store.store import Store, open_store

__all__ = [
    "APPLICATION_ID", "MERGE_ORDER", "MIGRATIONS", "SCHEMA_VERSION", "AllreduceRow", "CountRow",
    "EnvironmentRow", "ErrorRow", "Group", "NetworkResult", "NetworkRow", "PredictionRow", "RepeatConditions",
    "RunRow",
    "Store", "TimingRow", "TrainingRow", "UnseenRow", "WhatIfRow", "WorkRow", "merge", "migrate",
    "new_uid", "now", "open_store",
]
