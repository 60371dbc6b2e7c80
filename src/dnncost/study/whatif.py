"""What-if results in the study store: :class:`~dnncost.whatif.runner.WhatIfResult` as a
``whatif_results`` row (schema 4; accuracies from ``--train``, schema 8), and one ``dnncost whatif``
run saved with its network, inputs, training settings and machine."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict

import torch
from torch import nn

from dnncost.core.environment import current_environment, machine_fingerprint
from dnncost.core.inputs import InputSpec
from dnncost.core.kinds import Mode
from dnncost.measuring.measurement import Measurement
from dnncost.measuring.timing import StepOptions
from dnncost.study.store import NetworkRow, Store, WhatIfRow, new_uid, now
from dnncost.training.data import DatasetSplit
from dnncost.whatif.accuracy import (
    TrainingOptions,
    measured_specs,
    train_original,
    variant_accuracies,
    with_accuracy,
)
from dnncost.whatif.registry import Spec
from dnncost.whatif.runner import WhatIfResult, run_whatif

WHATIF_DATASET = "random"  # what-if steps run on a fixed random batch, not a dataset


def whatif_row(result: WhatIfResult) -> WhatIfRow:
    """The store's row for one result (raw per-pair ratios and samples kept)."""
    return WhatIfRow(
        uid=new_uid(), transformation=result.transformation, mode=result.mode.value,
        applicable=result.applicable, note=result.note, flops_ratio=result.flops_ratio,
        nominal_flops_ratio=result.nominal_flops_ratio, params_ratio=result.params_ratio,
        bytes_ratio=result.bytes_ratio, activation_ratio=result.activation_ratio,
        time_ratios=result.time_ratio.samples if result.time_ratio else None,
        time_ratio_median=result.time_ratio.median if result.time_ratio else None,
        original_samples=result.original.samples if result.original else None,
        transformed_samples=result.transformed.samples if result.transformed else None,
        original_flops=result.original_flops, flops=result.flops, batch_size=result.batch_size,
        threads=result.threads, measured=now(), original_accuracy=result.original_accuracy,
        accuracy=result.accuracy, accuracy_note=result.accuracy_note or None)


def study_whatif(model: nn.Module, specs: Sequence[Spec], *, input_shape: Sequence[int],
                 options: StepOptions, name: str, training: TrainingOptions | None = None,
                 data: DatasetSplit | None = None) -> Iterator[WhatIfResult]:
    """``study --whatif`` for one network: :func:`~dnncost.whatif.runner.run_whatif`'s results as
    they are measured; with ``training`` (and the study's ``data``), the original trained first, then
    every result yielded after the transformations' training, with its accuracy."""
    if training is None:
        yield from run_whatif(model, specs, input_shape=input_shape, options=options, name=name)
        return
    if data is None:
        raise ValueError("training a what-if needs the study's data")
    trained, original = train_original(model, data, options=training, name=name)
    results = list(run_whatif(model, specs, input_shape=input_shape, options=options, name=name))
    accuracies = {a.transformation: a for a in variant_accuracies(
        trained, measured_specs(specs, results), data=data, options=training, original=original,
        name=name)}
    yield from with_accuracy(results, original=original, accuracies=accuracies)


def save_whatif(store: Store, results: Sequence[WhatIfResult], *, family: str,
                input_shape: Sequence[int] | InputSpec, options: StepOptions, command: str,
                training: TrainingOptions | None = None) -> int:
    """Store ``results`` (one network's) as one run; returns the network id they are kept under.

    The network is keyed by name, a hash of the step options, the inputs and the ``training``
    settings (when trained), and this machine's fingerprint. The store is taken
    for this writer while it saves (StoreError when a study holds it)."""
    if not results:
        return 0
    device = options.device
    threads = options.threads or torch.get_num_threads()  # the original's thread count
    fingerprint = machine_fingerprint(device, threads=threads)
    inputs = str(input_shape) if isinstance(input_shape, InputSpec) \
        else "x".join(map(str, input_shape))
    config: dict[str, object] = {
        "whatif": True,
        **{k: v if isinstance(v, (int, float, type(None))) else str(v)
           for k, v in asdict(options).items()}}
    config["inputs"] = inputs  # another input is another network row
    if training is not None:
        config["train"] = {"epochs": training.train.epochs, "batch_size": training.train.batch_size,
                           "dataset": training.dataset, "recipe": training.recipe.describe(),
                           "seed": training.train.seed}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    network = NetworkRow(name=results[0].model, family=family, config_hash=config_hash,
                         fingerprint=fingerprint, config=config, input_shape=inputs,
                         batch_size=options.batch_size, dataset=WHATIF_DATASET, device=device,
                         threads=threads)
    store.lock()
    try:
        return _save(store, results, network=network, command=command)
    finally:
        store.unlock()


def _save(store: Store, results: Sequence[WhatIfResult], *, network: NetworkRow, command: str) -> int:
    """One run holding ``results`` under ``network``; the network's id."""
    store.put_environment(network.fingerprint,
                          current_environment(network.device, threads=network.threads).to_dict(),
                          peak_flops_per_s=None, bandwidth_bytes_per_s=None, calibration=None)
    run_uid = store.start_run(command=command, config=network.config, config_hash=network.config_hash,
                              fingerprint=network.fingerprint)
    nid = store.network_id(network)
    for result in results:
        store.add_whatif(nid, run_uid, whatif_row(result))
    store.finish_run(run_uid, "complete")
    return nid


def result_from_row(network: str, row: WhatIfRow) -> WhatIfResult:
    """A stored row as a :class:`WhatIfResult` again (statistics recomputed from the raw samples)."""
    def measurement(samples: tuple[float, ...] | None) -> Measurement | None:
        return Measurement(samples) if samples else None

    return WhatIfResult(
        model=network, transformation=row.transformation, mode=Mode(row.mode),
        applicable=bool(row.applicable), note=row.note, flops_ratio=row.flops_ratio,
        nominal_flops_ratio=row.nominal_flops_ratio, params_ratio=row.params_ratio,
        bytes_ratio=row.bytes_ratio, activation_ratio=row.activation_ratio,
        time_ratio=measurement(row.time_ratios), original=measurement(row.original_samples),
        transformed=measurement(row.transformed_samples), original_flops=row.original_flops,
        flops=row.flops, batch_size=row.batch_size, threads=row.threads,
        original_accuracy=row.original_accuracy, accuracy=row.accuracy,
        accuracy_note=row.accuracy_note or "")


__all__ = ["result_from_row", "save_whatif", "study_whatif", "whatif_row"]
