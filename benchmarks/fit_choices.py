"""Two choices of the time model's fit, judged on networks it never saw (issue 22).

Given a calibration's stored samples (``--calibration``: the cache directory it was made in, as
``DNNCOST_CACHE_DIR`` names one; the samples lie in its ``calibration/`` folder) and the ``dnncost
evaluate --unseen --out`` JSON of networks measured against it (``--evaluation``),
this refits the samples and predicts every measured network again, two ways for each choice:

- **step weights** (``dnncost.prediction.fitting``): what a step costs beyond its kernels fitted
  on the step less its kernels *as measured* (``measured``) or *as the model predicts them*
  (``predicted``, what the package does: a prediction adds the weights to predicted kernels);
- **interval** (``dnncost.prediction.interval``): the interval *shifted* by the residuals' median
  (their bias on the calibration's own networks) or *centred* on the prediction (what the package
  does), with the package's fit.

Per row (input, mode) it prints the per-kernel model's MAPE, median measured / predicted, the
share predicted too fast, and the interval's coverage. Predictions are at the calibration's
speed (no recheck level), the same for both sides of a choice, so each pair is a side-by-side
comparison on the same measurements.

Run:  python benchmarks/fit_choices.py --calibration DIR --evaluation EVAL.json [more pairs ...]
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from dnncost.core.environment import current_environment
from dnncost.counting.counter import count
from dnncost.models.loading import load_model
from dnncost.prediction.calibration import refit
from dnncost.prediction.fitting import fit_overhead
from dnncost.prediction.interval import COVERAGE
from dnncost.prediction.kernels import module_counts
from dnncost.prediction.model import OperatorModel
from dnncost.prediction.predict import predict_report
from dnncost.prediction.samples import StoredSamples, load_samples
from dnncost.prediction.sampling import is_probe
from dnncost.prediction.unseen import LIBRARY_PREFIXES


def measured_kernel_weights(model: OperatorModel, stored: StoredSamples) -> OperatorModel:
    """``model`` with its step weights refitted on the step less its measured kernels."""
    nets = [s for s in stored.fitted if not is_probe(s.name)] or list(stored.fitted)
    fastest = min(t for s in stored.fitted for t in s.kernel_s if t > 0)
    weights = fit_overhead(nets, [sum(s.kernel_s) for s in nets], fastest_s=fastest)
    return replace(model, step_weights=tuple(float(w) for w in weights))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibration", action="append", required=True, type=Path,
                        help="a cache directory holding calibration/*.ops-samples.json.gz")
    parser.add_argument("--evaluation", action="append", required=True, type=Path,
                        help="the evaluate --unseen --out JSON measured against it")
    args = parser.parse_args()
    if len(args.calibration) != len(args.evaluation):
        parser.error("give one --evaluation per --calibration")
    env = current_environment("cpu")
    print(f"{env.cpu_model}, {env.cpu_cores} cores, torch {env.torch_version}, dnncost {env.git_revision}")
    for cal, evaluation in zip(args.calibration, args.evaluation, strict=True):
        found = sorted((cal / "calibration").glob("*.ops-samples.json.gz"))
        if not found:
            raise SystemExit(f"no stored calibration samples in {cal / 'calibration'}")
        stored = load_samples(found[0])
        model = refit(stored).model  # the package's fit, its interval from the refitted residuals
        measured = measured_kernel_weights(model, stored)
        rows: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for p in json.loads(evaluation.read_text())["points"]:
            name = p["name"] if p["name"].startswith(LIBRARY_PREFIXES) else f"torchvision:{p['name']}"
            batch, *shape = map(int, p["input"].split("x"))
            module = load_model(name).build("meta")
            modules, params = module_counts(module)
            report = count(module, mode=p["mode"], batch_size=batch, input_shape=tuple(shape), name=name)
            a = predict_report(report, measured, modules=modules, param_tensors=params, strict=False)
            b = predict_report(report, model, modules=modules, param_tensors=params, strict=False)
            m = math.log(p["measured_s"] / b.step_s)
            rows.setdefault((p["input"], p["mode"]), []).append(
                (p["measured_s"] / a.step_s, p["measured_s"] / b.step_s, m))
        print(f"\n{cal} against {evaluation.name}: {len(stored.fitted)} fitted samples")
        print(f"{'row':18s} {'step weights: measured -> predicted kernels':48s} "
              f"{f'{COVERAGE:.0%} interval: shifted -> centred':32s}")
        for (inp, mode), v in sorted(rows.items()):
            r = np.array(v)
            low, high = model.interval.log_bounds(mode) or (math.nan, math.nan)
            shift = float(np.median(model.interval.residuals.get(mode, (0.0,))))
            logs = r[:, 2]
            centred = np.mean((logs >= low) & (logs <= high))
            shifted = np.mean((logs >= low + shift) & (logs <= high + shift))

            def mape(x: np.ndarray) -> float:
                return float(np.mean(abs(1 / x - 1)) * 100)

            print(f"{inp + ' ' + mode:18s} MAPE {mape(r[:, 0]):5.1f} -> {mape(r[:, 1]):5.1f}%, "
                  f"median {np.median(r[:, 0]):.3f} -> {np.median(r[:, 1]):.3f}, too fast "
                  f"{np.mean(r[:, 0] > 1):4.0%} -> {np.mean(r[:, 1] > 1):4.0%}   "
                  f"{shifted:4.0%} -> {centred:4.0%} (n={len(r)})")


if __name__ == "__main__":
    main()
