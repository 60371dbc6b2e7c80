"""The step-time predictor on a study's own networks: each network's measured time is the study's
(:func:`~dnncost.study.analysis.measured_step_s`: STUDY_ESTIMATOR over the repeats whose probe did
not drift), set against the per-kernel model and the baselines of
:mod:`dnncost.prediction.evaluation` (leave one family out)."""
from __future__ import annotations

import math
from collections.abc import Sequence

from dnncost.core.errors import StoreError
from dnncost.core.kinds import Mode
from dnncost.prediction.evaluation import Evaluation, Observation, evaluate
from dnncost.prediction.kernels import module_counts
from dnncost.prediction.model import OperatorModel
from dnncost.study.analysis import group_reference, measured_step_s
from dnncost.study.store import Group, NetworkResult, Store


def observations_from_results(networks: Sequence[NetworkResult]) -> list[Observation]:
    """One observation per network and mode with a measured step: the network recounted (meta
    device) at its stored input shape and batch size, measured = the study's figure of that step."""
    from dnncost.counting.counter import count
    from dnncost.models.loading import load_model, parse_input_shape

    reference = group_reference(networks)
    out = []
    for net in networks:
        shape = parse_input_shape(net.input_shape)
        module = None
        for mode in Mode:
            measured = measured_step_s(net, mode.value, reference_s=reference)
            if math.isnan(measured):
                continue
            module = module if module is not None else load_model(net.name).build("meta")
            report = count(module, mode=mode.value, batch_size=net.batch_size, input_shape=shape,
                           name=net.name)
            out.append(Observation(net.name, net.family, mode.value, report, measured,
                                   *module_counts(module)))
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


def evaluate_group(group: Group, *, op_model: OperatorModel | None,
                   peak_flops_per_s: float | None = None,
                   bytes_per_s: float | None = None) -> Evaluation:
    """:func:`~dnncost.prediction.evaluation.evaluate` on the networks of one group of the store."""
    return evaluate(observations_from_results(group.networks), op_model=op_model,
                    peak_flops_per_s=peak_flops_per_s, bytes_per_s=bytes_per_s)


__all__ = ["evaluate_group", "observations_from_results", "select_group"]
