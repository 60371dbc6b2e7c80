"""The store's schema: the SQL of every version, applied by :func:`migrate` one version at a
time, each with its version bump in one transaction, so a store is never left half-migrated.

**Adding a column**: add the field to the row record (:mod:`dnncost.study.store.rows`) and a
migration ``N: "ALTER TABLE t ADD COLUMN c ...;"`` to :data:`MIGRATIONS` (``SCHEMA_VERSION``
follows). **Adding a table**: a migration with its ``CREATE TABLE`` and the table's name in
:data:`MERGE_ORDER` (after the tables it references). Migrations never change a version that has
shipped.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol

APPLICATION_ID = 0x646E6E63  # source: our choice, ASCII 'dnnc'; marks the file as a dnncost store


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
-- the per-kernel model's prediction of each network's step (dnncost.study.predicted), made by the
-- study when it fitted or loaded the machine's model, so that a report predicts and recounts
-- nothing; the baselines' FLOPs and parameters are the network's counts (the counts table)
CREATE TABLE predictions (
    network_id INTEGER NOT NULL REFERENCES networks(id),
    mode TEXT NOT NULL CHECK (mode IN ('eval', 'train')),
    calibration_id TEXT NOT NULL,             -- the model that predicted it (fingerprint@created)
    predicted_s REAL NOT NULL,                -- seconds per step
    low_s REAL,                               -- its interval, NULL while the model gives none
    high_s REAL,
    roofline_s REAL,                          -- the plain roofline; NULL without peak and bandwidth
    PRIMARY KEY (network_id, mode, calibration_id)
);
"""

_SCHEMA_V10 = """
-- the interval of each unseen network's per-kernel prediction (dnncost.prediction.interval) and its
-- stated coverage (e.g. 0.8), so the report can say how many measurements fell inside; NULL where
-- the calibration gave none
ALTER TABLE unseen_results ADD COLUMN predicted_low_s REAL;
ALTER TABLE unseen_results ADD COLUMN predicted_high_s REAL;
ALTER TABLE unseen_results ADD COLUMN interval_level REAL;
"""

_SCHEMA_V11 = """
-- time-to-accuracy (dnncost.training.records): the seed of each training run (its initialisation
-- and batch order); every validation of a run with the run's totals up to it (ValidationRecord);
-- and, for a run to a target accuracy, its TimeToTarget (reached or not, training and validation
-- time apart, steps, epochs, samples); and the wall time of each stage of each run of a study
ALTER TABLE trainings ADD COLUMN seed INTEGER NOT NULL DEFAULT 0;
CREATE TABLE validations (
    uid TEXT PRIMARY KEY,
    training_uid TEXT NOT NULL REFERENCES trainings(uid),
    "index" INTEGER NOT NULL,                 -- 1-based count of validations in the run
    epoch INTEGER NOT NULL,                   -- the 1-based epoch it falls in
    epochs REAL NOT NULL,                     -- training samples seen / training-set size
    steps INTEGER NOT NULL,                   -- the run's totals up to this validation
    samples INTEGER NOT NULL,
    train_time_s REAL NOT NULL,
    val_time_s REAL NOT NULL,                 -- every validation pass so far, this one included
    train_data_time_s REAL NOT NULL,
    val_data_time_s REAL NOT NULL,
    val_loss REAL,
    val_accuracy REAL,
    UNIQUE (training_uid, "index")
);
CREATE TABLE times_to_target (
    training_uid TEXT PRIMARY KEY REFERENCES trainings(uid),
    target_accuracy REAL NOT NULL,
    reached INTEGER NOT NULL,                 -- 0: the cap came first; the figures are lower bounds
    max_epochs INTEGER NOT NULL,              -- the cap
    validations_per_epoch INTEGER NOT NULL,
    validations INTEGER NOT NULL,             -- passes up to the crossing (or the cap)
    epochs REAL NOT NULL,
    steps INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    train_time_s REAL NOT NULL,               -- the training steps alone
    val_time_s REAL NOT NULL,                 -- the validation passes made to find the crossing
    train_data_time_s REAL NOT NULL,
    val_data_time_s REAL NOT NULL,
    val_loss REAL,                            -- at the crossing (or the last validation)
    val_accuracy REAL,
    best_val_accuracy REAL
);
CREATE TABLE stage_times (
    run_uid TEXT NOT NULL REFERENCES runs(uid),
    stage TEXT NOT NULL,                      -- dnncost.study.stages.Stage
    wall_s REAL NOT NULL,                     -- seconds this run spent in the stage
    PRIMARY KEY (run_uid, stage)
);
CREATE INDEX validations_training ON validations(training_uid);
"""

_SCHEMA_V12 = """
-- the reference probe (dnncost.measuring.probe, read steady) after each unseen network's rounds,
-- its median in seconds: set against the calibration's (its JSON summary's probe_ms), the machine's
-- speed change since the model was fitted; NULL where not recorded
ALTER TABLE unseen_results ADD COLUMN probe_s REAL;
"""

_SCHEMA_V13 = """
-- the machine's level every prediction of an unseen result was scaled by (the model's stored
-- recheck, or the level measured alongside: dnncost.prediction.unseen); NULL where not recorded
ALTER TABLE unseen_results ADD COLUMN level REAL;
"""

#: version -> SQL that takes a store from version-1 to version. Applied in order, each in one
#: transaction with the version bump, so a store is never left half-migrated.
MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4,
                              5: _SCHEMA_V5, 6: _SCHEMA_V6, 7: _SCHEMA_V7, 8: _SCHEMA_V8,
                              9: _SCHEMA_V9, 10: _SCHEMA_V10, 11: _SCHEMA_V11,
                              12: _SCHEMA_V12, 13: _SCHEMA_V13}
SCHEMA_VERSION = max(MIGRATIONS)  # a new schema version is a new entry in MIGRATIONS

#: Every table, in the order :func:`merge` copies them (a table after those it references).
MERGE_ORDER = ("environments", "runs", "networks", "counts", "step_timings", "trainings", "epochs",
               "breakdowns", "errors", "allreduce_timings", "whatif_results", "work_points",
               "unseen_results", "predictions", "validations", "times_to_target", "stage_times")


class Transactional(Protocol):
    """What :func:`migrate` needs of a store: one write transaction at a time."""

    def transaction(self, what: str) -> AbstractContextManager[sqlite3.Connection]: ...


def migrate(store: Transactional, version: int, *, migrations: Mapping[int, str] | None = None) -> int:
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


__all__ = ["APPLICATION_ID", "MERGE_ORDER", "MIGRATIONS", "SCHEMA_VERSION", "Transactional", "migrate"]
