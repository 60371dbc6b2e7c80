"""Unseen-network results in the study store: each :class:`~dnncost.prediction.unseen.UnseenPoint`
(or network left out) of ``dnncost evaluate --unseen`` as an ``unseen_results`` row (schema 6; the
prediction's interval since schema 10),
kept the moment it is complete, and read back grouped by protocol and machine -- for the report,
and so that a rerun of an interrupted evaluation measures only what is missing.

A *protocol* is what makes two results comparable: the calibration that predicted them, the
rounds, repeats and warm-up of the timing, its estimator, the thread count, the GFLOPs limit and
whether the machine's level was measured alongside;
its hash keys the rows (``config_hash``), with the fingerprint of the machine that timed them.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from dnncost.core.environment import current_environment, machine_fingerprint
from dnncost.prediction.model import OperatorModel
from dnncost.prediction.unseen import ESTIMATOR, Key, LeftOut, UnseenPoint, UnseenResult
from dnncost.study.predicted import calibration_id
from dnncost.study.store import Store, UnseenRow, new_uid, now

COMMAND = "dnncost evaluate --unseen"
DEVICE = "cpu"  # the protocol times on the CPU (issue 12; a GPU table is its own protocol)


def protocol_config(model: OperatorModel, *, rounds: int, repeats: int, warmup: int, threads: int,
                    max_step_gflops: float, recheck: bool = False) -> dict[str, object]:
    """What makes results comparable (see the module docstring), as stored in the run's config;
    ``recheck``: the machine's level measured alongside (the key is absent otherwise, so that a
    protocol stored before it keeps its hash)."""
    return {"unseen": True, "calibration_id": calibration_id(model), "rounds": rounds,
            "repeats": repeats, "warmup": warmup, "threads": threads,
            "max_step_gflops": max_step_gflops, "estimator": ESTIMATOR, "device": DEVICE,
            **({"recheck": True} if recheck else {})}


def config_hash(config: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split("x"))


@dataclass(frozen=True)
class UnseenRecorder:
    """One ``evaluate --unseen`` run writing into a store: :meth:`record` keeps each result at
    once, :meth:`done` says what an earlier run of the same protocol on this machine kept."""

    store: Store
    run_uid: str
    config_hash: str
    fingerprint: str
    threads: int
    calibration_id: str
    calibration: Mapping[str, object]

    def done(self) -> set[Key]:
        """The results already measured under this protocol on this machine."""
        return {(r.network, _shape(r.input_shape), r.batch_size, r.mode)
                for r in self.store.unseen_rows(config_hash=self.config_hash,
                                                fingerprint=self.fingerprint)
                if r.measured_s is not None}

    def record(self, result: UnseenPoint | LeftOut) -> None:
        """Keep one measured point, or one network left out (replacing an earlier left-out row)."""
        self.store.put_unseen(unseen_row(result, run_uid=self.run_uid, config_hash=self.config_hash,
                                         fingerprint=self.fingerprint, threads=self.threads,
                                         calibration_id=self.calibration_id,
                                         calibration=self.calibration))

    def finish(self, status: str) -> None:
        """Close the run: 'complete', 'interrupted' or 'failed'."""
        self.store.finish_run(self.run_uid, status)

    def result(self) -> UnseenResult:
        """Everything this protocol holds for this machine, this run's results and earlier ones."""
        for group in unseen_groups(self.store):
            if (group.config_hash, group.fingerprint) == (self.config_hash, self.fingerprint):
                return group.result
        return UnseenResult((), {}, dict(self.calibration))


def start_unseen(store: Store, model: OperatorModel, *, config: Mapping[str, object],
                 threads: int, command: str = COMMAND) -> UnseenRecorder:
    """Record this machine's environment and a new run of the protocol ``config``
    (:func:`protocol_config`); the caller holds the store's lock (:meth:`Store.lock`)."""
    fingerprint = machine_fingerprint(DEVICE, threads=threads)
    store.put_environment(fingerprint, current_environment(DEVICE, threads=threads).to_dict(),
                          peak_flops_per_s=None, bandwidth_bytes_per_s=None, calibration=None)
    key = config_hash(config)
    run_uid = store.start_run(command=command, config=config, config_hash=key,
                              fingerprint=fingerprint)
    return UnseenRecorder(store, run_uid, key, fingerprint, threads, calibration_id(model),
                          model.summary())


def unseen_row(result: UnseenPoint | LeftOut, *, run_uid: str, config_hash: str, fingerprint: str,
               threads: int, calibration_id: str, calibration: Mapping[str, object]) -> UnseenRow:
    """The store's row for one result (every timed step's samples kept)."""
    point = result if isinstance(result, UnseenPoint) else None
    low, high = point.interval_s if point is not None and point.interval_s is not None else (None, None)
    predicted = point.predicted_s if point is not None else {}
    interval = point.predicted_interval_s if point is not None else None
    return UnseenRow(
        uid=new_uid(), run_uid=run_uid, config_hash=config_hash, fingerprint=fingerprint,
        network=result.name, input_shape="x".join(map(str, result.input_shape)),
        batch_size=result.batch_size, mode=result.mode, threads=threads,
        measured_s=point.measured_s if point else None, estimator=point.estimator if point else None,
        measured_low_s=low, measured_high_s=high, samples=tuple(point.samples) if point else None,
        round_medians=tuple(point.round_medians_s) if point else None,
        predicted_s=predicted.get("per_kernel"), flops_s=predicted.get("flops"),
        params_s=predicted.get("params"), roofline_s=predicted.get("roofline"),
        gflops=point.gflops if point else None, calibration_id=calibration_id,
        calibration=calibration, note=result.reason if isinstance(result, LeftOut) else "",
        measured=now(), predicted_low_s=interval[0] if interval else None,
        predicted_high_s=interval[1] if interval else None,
        interval_level=point.interval_level if point is not None else None,
        probe_s=point.probe_s if point is not None else None,
        level=point.level if point is not None else None)


PREDICTIONS = {"per_kernel": "predicted_s", "flops": "flops_s", "params": "params_s",
               "roofline": "roofline_s"}  # method (prediction.unseen.METHODS) -> its column


def point_from_row(row: UnseenRow) -> UnseenPoint:
    """A stored measured row as an :class:`UnseenPoint` again."""
    if row.measured_s is None:
        raise ValueError(f"{row.network} {row.mode} was left out ({row.note}): no point")
    predicted = {method: float(value) for method, column in PREDICTIONS.items()
                 if (value := getattr(row, column)) is not None}
    interval = ((row.measured_low_s, row.measured_high_s)
                if row.measured_low_s is not None and row.measured_high_s is not None else None)
    return UnseenPoint(row.network, _shape(row.input_shape), row.batch_size, row.mode,
                       row.measured_s, tuple(row.round_medians or ()), predicted,
                       float(row.gflops) if row.gflops is not None else float("nan"),
                       samples=tuple(row.samples or ()), estimator=row.estimator or ESTIMATOR,
                       interval_s=interval,
                       predicted_interval_s=(row.predicted_low_s, row.predicted_high_s)
                       if row.predicted_low_s is not None and row.predicted_high_s is not None
                       else None, interval_level=row.interval_level, probe_s=row.probe_s,
                       level=row.level)


@dataclass(frozen=True)
class UnseenGroup:
    """The results of one protocol on one machine, with that machine's environment and the
    protocol as its runs stored it."""

    config_hash: str
    fingerprint: str
    environment: Mapping[str, object]
    config: Mapping[str, object]
    commands: tuple[str, ...]  # the commands of its runs, oldest first
    result: UnseenResult


def unseen_groups(store: Store) -> list[UnseenGroup]:
    """Every protocol x machine the store holds unseen-network results of, in the order first
    stored. Per network, configuration and mode the latest measured row counts; a left-out row
    only where none was measured."""
    rows: dict[tuple[str, str], list[UnseenRow]] = {}
    for row in store.unseen_rows():
        rows.setdefault((row.config_hash, row.fingerprint), []).append(row)
    runs = store.runs()
    out = []
    for (key, fingerprint), group in rows.items():
        measured: dict[Key, UnseenPoint] = {}
        left: dict[Key, UnseenRow] = {}
        for row in group:
            k = (row.network, _shape(row.input_shape), row.batch_size, row.mode)
            if row.measured_s is None:
                left[k] = row
            else:
                measured[k] = point_from_row(row)
        skipped = {f"{r.network} {r.batch_size}x{r.input_shape} {r.mode}": r.note
                   for k, r in left.items() if k not in measured}
        env = store.environment(fingerprint)
        mine = [r for r in runs if (r.config_hash, r.fingerprint) == (key, fingerprint)]
        result = UnseenResult(tuple(measured.values()), skipped, dict(group[-1].calibration))
        out.append(UnseenGroup(key, fingerprint, env.environment if env else {},
                               mine[-1].config if mine else {},
                               tuple(dict.fromkeys(r.command for r in mine)), result))
    return out


__all__ = ["COMMAND", "UnseenGroup", "UnseenRecorder", "calibration_id", "config_hash",
           "point_from_row", "protocol_config", "start_unseen", "unseen_groups", "unseen_row"]
