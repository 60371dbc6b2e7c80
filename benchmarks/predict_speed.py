"""How fast is ``dnncost predict``? ResNet-50 at 3x224x224, batch 8, train and eval step (issue 12: <= 2 s).

Run:  python benchmarks/predict_speed.py [--repeats 5] [--calibration PATH]

Times the whole prediction (count on the meta device + the per-kernel regressors) with this
machine's stored calibration, a given calibration file, or -- when there is none -- a model fitted
here on synthetic timings (the speed does not depend on what the regressors learned, only on their
size, which is the same: one per kernel kind, TREE_PARAMS trees each). Prints each repeat and the
median, and the share spent counting.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from dnncost.core.errors import DnncostError
from dnncost.counting.cost import Cost, CostReport, OpRecord, Phase
from dnncost.counting.counter import count
from dnncost.models.loading import load_model
from dnncost.prediction.fitting import NetworkSample, fit_operator_model
from dnncost.prediction.model import OperatorModel
from dnncost.prediction.predict import predict_time
from dnncost.prediction.storage import load_operator_model, read_operator_model

TARGET_S = 2.0  # source: issue 12, "predict takes <= 2 s for ResNet-50 at 224"


def synthetic_model() -> OperatorModel:
    """A model of the stored model's size, fitted on synthetic kernels of every common kind."""
    rng = random.Random(0)
    ops = ("aten.convolution", "aten.convolution_backward", "aten.addmm", "aten.relu_",
           "aten.native_batch_norm", "aten.native_batch_norm_backward", "aten.threshold_backward",
           "aten.max_pool2d_with_indices", "aten.add", "aten._foreach_add_", "aten.mean")
    samples = []
    for i in range(40):
        records, times = [], []
        for _ in range(200):
            n = rng.choice((8, 64, 512))
            flops = rng.randint(10**4, 10**9)
            records.append(OpRecord(rng.choice(ops), Phase.FORWARD, "m", "M",
                                    Cost(flops // 2, flops, 4 * n * n, 4 * n * n),
                                    ((8, n, 14, 14), (n, n, 3, 3))))
            times.append(1e-5 + flops / 5e10)
        report = CostReport(model=f"s{i}", mode="train", input_shape=(3,), batch_size=8,
                            records=tuple(records), params=1, trainable_params=1, param_bytes=4,
                            activation_bytes=0, peak_bytes=0)
        samples.append(NetworkSample(f"s{i}", report, tuple(times), 50, 20, 1.1 * sum(times)))
    return fit_operator_model(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calibration", default=None, metavar="PATH")
    args = parser.parse_args()
    if args.calibration:
        model, source = read_operator_model(args.calibration), args.calibration
    else:
        try:
            model, source = load_operator_model("cpu"), "this machine's stored calibration"
        except DnncostError:
            model, source = synthetic_model(), "a model fitted on synthetic timings (none stored)"
    print(f"resnet50, 3x224x224, batch 8, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model: {source}")
    loaded = load_model("resnet50")
    for mode in ("train", "eval"):
        totals, counting = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            p = predict_time(loaded.build("meta"), input_shape=(3, 224, 224), batch_size=8,
                             mode=mode, calibration=model, name="resnet50")
            totals.append(time.perf_counter() - start)
            start = time.perf_counter()
            count(loaded.build("meta"), mode=mode, batch_size=8, input_shape=(3, 224, 224))
            counting.append(time.perf_counter() - start)
        med = statistics.median(totals)
        print(f"{mode}: predict {med:.2f} s median of {args.repeats} "
              f"({', '.join(f'{t:.2f}' for t in totals)}), of which counting ~"
              f"{statistics.median(counting):.2f} s; predicted step {p.step_s * 1e3:.1f} ms; "
              f"{'within' if med <= TARGET_S else 'ABOVE'} the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
