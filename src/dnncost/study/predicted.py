"""The step-time predictor on a study's own networks.

When the study has the machine's per-kernel model (fitted or loaded at its end), it has the model
predict every network's training and validation step, beside the plain roofline where the machine's
peak and bandwidth are calibrated, and stores the predictions (:func:`store_predictions`, the
store's ``predictions`` table) -- so that a report predicts and recounts nothing.
:func:`stored_observations` sets those predictions and the study's counts beside each network's
measured step (:func:`~dnncost.study.points.measured_step_s`: STUDY_ESTIMATOR over the repeats whose
probe did not drift) for the leave-one-family-out evaluation of
:mod:`dnncost.prediction.evaluation`; :func:`recounted_observations` counts and predicts now, for
``dnncost evaluate`` on a store without stored predictions.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from dnncost.core.errors import DnncostError, StoreError
from dnncost.core.kinds import Mode
from dnncost.prediction.errors import REFIT_COMMAND, OldModelFormatError
from dnncost.prediction.evaluation import Observation, roofline_seconds
from dnncost.prediction.kernels import module_counts
from dnncost.prediction.model import OperatorModel
from dnncost.prediction.predict import predict_report
from dnncost.study.points import group_reference, measured_step_s
from dnncost.study.store import Group, NetworkResult, PredictionRow, Store

if TYPE_CHECKING:
    from dnncost.counting.cost import CostReport


def calibration_id(model: OperatorModel) -> str:
    """A readable, stable name of one calibration: its machine fingerprint and creation time."""
    return f"{model.fingerprint or 'unknown machine'}@{model.created or 'unknown time'}"


def predict_steps(name: str, *, input_shape: Sequence[int], batch_size: int, optimizer: str,
                  model: OperatorModel, peak_flops_per_s: float | None = None,
                  bytes_per_s: float | None = None) -> dict[Mode, tuple[CostReport, PredictionRow]]:
    """Network ``name``'s training and validation step, counted on the meta device (with the
    study's ``optimizer``) and predicted by ``model``; the plain roofline too when both the peak
    and the bandwidth are given."""
    from dnncost.counting.counter import count
    from dnncost.models.loading import load_model

    module = load_model(name).build("meta")
    modules, param_tensors = module_counts(module)
    made_by = calibration_id(model)
    out: dict[Mode, tuple[CostReport, PredictionRow]] = {}
    for mode in Mode:
        report = count(module, mode=mode.value, batch_size=batch_size, input_shape=tuple(input_shape),
                       optimizer=optimizer, name=name)
        predicted = predict_report(report, model, modules=modules, param_tensors=param_tensors,
                                   strict=False)
        low, high = predicted.step_interval_s or (None, None)
        roofline = (roofline_seconds(report, peak_flops_per_s=peak_flops_per_s, bytes_per_s=bytes_per_s)
                    if peak_flops_per_s and bytes_per_s else None)
        out[mode] = (report, PredictionRow(mode.value, made_by, predicted.step_s, low_s=low,
                                           high_s=high, roofline_s=roofline))
    return out


def store_predictions(store: Store, group: Group, model: OperatorModel, *,
                      bytes_per_s: float | None = None) -> int:
    """Predict and store the steps of every counted network of ``group`` that ``model`` has not
    predicted yet (a resumed study predicts only what is new); the group's calibrated peak and
    ``bytes_per_s`` give the roofline. Returns how many networks were predicted."""
    from dnncost.models.loading import parse_input_shape

    made_by, done = calibration_id(model), 0
    optimizer = str(group.config.get("optimizer", "sgd"))
    for net in group.networks:
        if net.id is None or not {m.value for m in Mode} <= set(net.counts) \
                or store.has_predictions(net.id, made_by):
            continue
        steps = predict_steps(net.name, input_shape=parse_input_shape(net.input_shape),
                              batch_size=net.batch_size, optimizer=optimizer, model=model,
                              peak_flops_per_s=group.peak_flops_per_s, bytes_per_s=bytes_per_s)
        store.put_predictions(net.id, [row for _, row in steps.values()])
        done += 1
    return done


def predict_with_stored_model(store: Store, *, config_hash: str, fingerprint: str) -> None:
    """The per-kernel model stored with machine ``fingerprint`` predicts the step of every network
    of configuration ``config_hash`` it has not predicted yet (:func:`store_predictions`), at the
    end of a study. Optional: a model that cannot be read or used is warned about, and the
    measurements stand without it."""
    import warnings

    group = next((g for g in store.groups() if (g.config_hash, g.fingerprint) == (config_hash, fingerprint)),
                 None)
    env = store.environment(fingerprint)
    if group is None or group.operator_model is None or env is None:
        return
    try:
        model = OperatorModel.from_dict(group.operator_model)
        store_predictions(store, group, model, bytes_per_s=env.bandwidth_bytes_per_s)
    except OldModelFormatError as exc:
        warnings.warn(f"{exc}; the report has no predicted-vs-measured section: run "
                      f"`{REFIT_COMMAND}` (or `dnncost calibrate --ops`) and rerun the study's command",
                      stacklevel=2)
    except DnncostError as exc:
        warnings.warn(f"the per-operator time model stored for this machine could not predict the "
                      f"networks ({type(exc).__name__}: {exc}); the report has no predicted-vs-measured "
                      "section", stacklevel=2)


def latest_predictions(rows: Sequence[tuple[str, PredictionRow]]) -> dict[tuple[str, str], PredictionRow]:
    """(network, mode) -> prediction, of the model that predicted last (the one the study stored
    with the machine: a new calibration predicts every network again)."""
    if not rows:
        return {}
    latest = rows[-1][1].calibration_id
    return {(name, row.mode): row for name, row in rows if row.calibration_id == latest}


def _observation(net: NetworkResult, mode: str, measured_s: float, *, flops: float, params: float,
                 row: PredictionRow | None) -> Observation:
    """One network's measured step beside what the methods predict it from (``row``: the per-kernel
    model's stored prediction, None without one)."""
    interval = (row.low_s, row.high_s) if row is not None and row.low_s is not None \
        and row.high_s is not None else None
    return Observation(net.name, net.family, mode, measured_s, flops=flops, params=params,
                       per_operator_s=row.predicted_s if row is not None else None,
                       per_operator_interval_s=interval,
                       roofline_s=row.roofline_s if row is not None else None)


def stored_observations(networks: Sequence[NetworkResult],
                        predictions: Mapping[tuple[str, str], PredictionRow]) -> list[Observation]:
    """One observation per network and mode with a measured step and a stored prediction: the
    study's figure of that step, its counted FLOPs and parameters, and the stored predictions."""
    reference = group_reference(networks)
    out = []
    for net in networks:
        for mode in Mode:
            row, counted = predictions.get((net.name, mode.value)), net.counts.get(mode.value)
            measured = measured_step_s(net, mode.value, reference_s=reference)
            if row is None or counted is None or math.isnan(measured):
                continue
            out.append(_observation(net, mode.value, measured, flops=counted.flops,
                                    params=counted.params, row=row))
    return out


def recounted_observations(group: Group, *, op_model: OperatorModel | None,
                           peak_flops_per_s: float | None = None,
                           bytes_per_s: float | None = None) -> list[Observation]:
    """One observation per network and mode with a measured step, counted and predicted now
    (:func:`predict_steps`; without ``op_model``, counted only) -- for a store whose study stored
    no predictions."""
    from dnncost.counting.counter import count
    from dnncost.models.loading import load_model, parse_input_shape

    reference = group_reference(group.networks)
    optimizer = str(group.config.get("optimizer", "sgd"))
    out = []
    for net in group.networks:
        measured = {m: measured_step_s(net, m.value, reference_s=reference) for m in Mode}
        if all(math.isnan(s) for s in measured.values()):
            continue
        shape = parse_input_shape(net.input_shape)
        steps: dict[Mode, tuple[CostReport, PredictionRow | None]]
        if op_model is not None:
            steps = dict(predict_steps(net.name, input_shape=shape, batch_size=net.batch_size,
                                       optimizer=optimizer, model=op_model,
                                       peak_flops_per_s=peak_flops_per_s, bytes_per_s=bytes_per_s))
        else:
            module = load_model(net.name).build("meta")
            steps = {m: (count(module, mode=m.value, batch_size=net.batch_size, input_shape=shape,
                               optimizer=optimizer, name=net.name), None) for m in Mode}
        for mode, (report, row) in steps.items():
            if math.isnan(measured[mode]):
                continue
            out.append(_observation(net, mode.value, measured[mode], flops=report.total().flops,
                                    params=report.params, row=row))
    return out


def select_group(store: Store, *, config_hash: str | None = None) -> Group:
    """The largest group (configuration + machine) of ``store`` with step timings, or the group
    of ``config_hash``; StoreError when there is none."""
    groups = [g for g in store.groups() if any(n.timings for n in g.networks)
              and (config_hash is None or g.config_hash == config_hash)]
    if not groups:
        raise StoreError(f"'{store.path}' holds no step timings"
                         + (f" for configuration {config_hash}" if config_hash else "")
                         + ": run `dnncost study` first")
    return groups[0]


__all__ = ["calibration_id", "latest_predictions", "predict_steps", "predict_with_stored_model",
           "recounted_observations",
           "select_group", "store_predictions", "stored_observations"]
