"""Everything a report shows, computed from the store once, as plain records.

:func:`study_findings` reads a results store and gives, per group of comparable results (one
configuration on one machine): the analysis (dnncost.study.analysis), the machine's drift over the
step timings (dnncost.study.drift), the cost-vs-work series (dnncost.study.work), the
predicted-vs-measured evaluation of the predictions the study stored (dnncost.study.predicted) and
the wall time its runs spent in each stage (dnncost.study.stages);
and, for the whole store, the what-if results and the unseen-network results. dnncost.reporting
renders these records and computes nothing: it never counts, predicts or fits.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dnncost.core.kinds import Mode
from dnncost.prediction.calibration import ANCHOR_EVERY, ANCHORS, QUICK_ANCHORS, Focus
from dnncost.prediction.errors import REFIT_COMMAND, ModelFormatError, OldModelFormatError
from dnncost.prediction.evaluation import Evaluation, evaluate
from dnncost.prediction.model import OperatorModel
from dnncost.study.analysis import StudyAnalysis, analyze
from dnncost.study.drift import StudyDrift, study_drift
from dnncost.study.predicted import latest_predictions, stored_observations
from dnncost.study.store import Group, Store
from dnncost.study.unseen import UnseenGroup, unseen_groups
from dnncost.study.whatif import result_from_row
from dnncost.study.work import WorkPoint, WorkSeries, cost_vs_work
from dnncost.whatif.runner import WhatIfResult

HOW_TO_GET_ONE = ("run `dnncost calibrate --ops` on the machine that measured these results, then "
                  "rerun the study's command there (it resumes, and stores the model and its "
                  "predictions) and `dnncost report`.")
NO_MODEL = "The study stored no per-operator time model of its machine: " + HOW_TO_GET_ONE
OLD_MODEL = ("The per-operator time model stored with these results is in an old format (a pickle), "
             f"which dnncost no longer loads: loading one could run code. To get a new one, run "
             f"`{REFIT_COMMAND}` (or, without its stored samples, `dnncost calibrate --ops`) on the "
             "machine that measured these results, then rerun the study's command there (it resumes, "
             "and stores the model and its predictions) and `dnncost report`.")
NO_PREDICTIONS = ("The study stored a per-operator time model of its machine but no prediction of its "
                  "networks' steps (a study from before predictions were stored): rerun the study's "
                  "command on the machine that measured these results (it resumes, measuring nothing "
                  "again, and predicts and stores each network's step), then `dnncost report`.")


@dataclass(frozen=True)
class PredictedVsMeasured:
    """The leave-one-family-out evaluation of the study's stored predictions, or (``evaluation``
    None) in ``note`` why there is none and how to get one."""

    evaluation: Evaluation | None
    note: str = ""
    calibration: str = ""  # one sentence on the model that predicted (quick or full, its errors)


@dataclass(frozen=True)
class GroupFindings:
    """One group of comparable results and everything the report shows of it."""

    group: Group
    command: str | None  # the command of its latest run
    analysis: StudyAnalysis
    drift: StudyDrift
    work: tuple[WorkSeries, ...]
    predicted: PredictedVsMeasured
    stage_seconds: Mapping[str, float] = field(default_factory=dict)  # stage -> wall s, all runs
    runs: int = 0  # the runs whose stages those are


@dataclass(frozen=True)
class NetworkWhatIfs:
    """One network's stored what-if results, in the order they were stored."""

    network: str
    results: tuple[WhatIfResult, ...]


@dataclass(frozen=True)
class Findings:
    """Everything a report of the store at ``path`` shows."""

    path: Path
    groups: tuple[GroupFindings, ...]
    whatif: tuple[NetworkWhatIfs, ...]
    unseen: tuple[UnseenGroup, ...]  # protocols x machines with measured points


def machine_drift(group: Group) -> StudyDrift:
    """The reference probe and the machine's load over a group's step timings."""
    return study_drift(group.networks, cores=int(str(group.environment.get("cpu_cores") or 1)))


def predicted_vs_measured(store: Store, group: Group) -> PredictedVsMeasured:
    """The evaluation of the predictions the study stored for ``group`` (of the model it stored
    with the machine); a note saying how to get them where it stored none."""
    if group.operator_model is None:
        return PredictedVsMeasured(None, NO_MODEL)
    try:  # only read, never run: the model's fields are checked as plain data
        model = OperatorModel.from_dict(group.operator_model)
    except OldModelFormatError:
        return PredictedVsMeasured(None, OLD_MODEL)
    except ModelFormatError as exc:
        return PredictedVsMeasured(None, f"The per-operator time model stored with these results is "
                                         f"unreadable ({exc}): {HOW_TO_GET_ONE}")
    predictions = latest_predictions(store.prediction_rows(group))
    if not predictions:
        return PredictedVsMeasured(None, NO_PREDICTIONS)
    return PredictedVsMeasured(evaluate(stored_observations(group.networks, predictions)),
                               calibration=describe_calibration(model))


def describe_calibration(model: OperatorModel) -> str:
    """One sentence: which calibration predicted (quick or full, how many random networks, drawn
    where), its own error on held-out random networks and on the transfer set of standard
    networks, and, for a quick one, what a full one costs and gives instead."""
    def errors(mode: str) -> str:
        parts = [f"{label} {100 * metrics[mode]['mape']:.1f}%"
                 for label, metrics in (("held-out random networks", model.held_out),
                                        ("transfer set", model.transfer))
                 if mode in metrics and "mape" in metrics[mode]]
        return ", ".join(parts) if parts else "not measured"

    def listed(anchors: tuple[Focus, ...]) -> str:
        texts = list(dict.fromkeys(a.text for a in anchors))
        return ", ".join(texts[:-1]) + f" and {texts[-1]}"

    drawn = f"drawn at {model.focus}" if model.focus else f"drawn at {listed(QUICK_ANCHORS)} in turn" \
        if model.quick else (f"drawn over the sampler's whole range, one in {ANCHOR_EVERY} at "
                             f"{listed(ANCHORS)} in turn")
    text = (f"The per-kernel model is a {'quick' if model.quick else 'full'} calibration of this "
            f"machine ({model.networks} random networks {drawn}, {model.passes} pass"
            f"{'es' if model.passes > 1 else ''}); its own train-step error: {errors(Mode.TRAIN.value)}; "
            f"eval step: {errors(Mode.EVAL.value)}.")
    if model.quick:
        text += (" A quick calibration trades accuracy for the study's time budget: a full "
                 "`dnncost calibrate --ops` (at most about 5 minutes) times more and larger random "
                 "networks over every input size, is quoted with the same two errors, and is used "
                 "by the next study of this machine in its place.")
    return text


def group_findings(store: Store, group: Group, *, command: str | None = None) -> GroupFindings:
    """Everything the report shows of one group of ``store``."""
    work = [WorkPoint(name, row.batch_size, row.input_size, row.step_s, row.flops)
            for name, row in store.work_rows(group)]
    per_run = store.stage_times(config_hash=group.config_hash, fingerprint=group.fingerprint)
    stages: dict[str, float] = {}
    for seconds in per_run.values():
        for stage, s in seconds.items():
            stages[stage] = stages.get(stage, 0.0) + s
    return GroupFindings(group=group, command=command,
                         analysis=analyze(group.networks, peak_flops_per_s=group.peak_flops_per_s),
                         drift=machine_drift(group), work=tuple(cost_vs_work(work)),
                         predicted=predicted_vs_measured(store, group), stage_seconds=stages,
                         runs=len(per_run))


def study_findings(store: Store) -> Findings:
    """Everything a report of ``store`` shows: each study group (what-if runs have their own
    section), the what-if results by network and the unseen-network results."""
    commands = {(r.config_hash, r.fingerprint): r.command for r in store.runs()}
    groups = tuple(group_findings(store, g, command=commands.get((g.config_hash, g.fingerprint)))
                   for g in store.groups() if not g.config.get("whatif"))
    by_network: dict[str, list[WhatIfResult]] = {}
    for network, row in store.whatif_rows():
        by_network.setdefault(network, []).append(result_from_row(network, row))
    return Findings(path=store.path, groups=groups,
                    whatif=tuple(NetworkWhatIfs(n, tuple(r)) for n, r in by_network.items()),
                    unseen=tuple(g for g in unseen_groups(store) if g.result.points))


__all__ = ["NO_MODEL", "NO_PREDICTIONS", "Findings", "GroupFindings", "NetworkWhatIfs",
           "PredictedVsMeasured", "group_findings", "machine_drift", "predicted_vs_measured",
           "study_findings"]
