"""How fast is counting? dnncost's meta-device counter vs a real forward pass and vs peer counters.

Run:  python benchmarks/count_speed.py [--repeats 5] [--models resnet50,mobilenet_v2,...]

Prints (1) dnncost counting ResNet-50 at batch 1 and 256, eval and train, with median and spread;
(2) for each model, the time of one real CPU forward pass at batch 1 and of each counter (dnncost,
torch's FlopCounterMode and, when installed, fvcore, ptflops, thop), measured interleaved
(A B C ... A B C ...) in one run, as ratios to the forward pass. Targets (issue 2): counting time
does not grow with batch size; a ResNet-50 training-step count at batch 256 within 1 s on 2 cores;
a batch-1 forward count no slower than one real forward pass on the median torchvision model.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from collections.abc import Callable

import torch
import torchvision.models as tvm

from dnncost.core.environment import current_environment
from dnncost.counting.counter import count

DEFAULT_MODELS = ("resnet18,resnet50,mobilenet_v2,shufflenet_v2_x1_0,squeezenet1_1,densenet121,"
                  "efficientnet_b0,googlenet,alexnet,vgg11,mnasnet1_0,regnet_y_400mf,vit_b_16")


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        fn()
    return time.perf_counter() - start


def _spread(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return f"{statistics.median(samples) * 1e3:8.1f} ms  (IQR {q[0] * 1e3:.1f}-{q[2] * 1e3:.1f})"


def peers(model: torch.nn.Module, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The peer counters that are installed, each as a zero-argument call counting ``model``."""
    from torch.utils.flop_counter import FlopCounterMode

    def flop_counter_mode() -> None:
        with torch.no_grad(), FlopCounterMode(display=False):
            model(x)

    out: dict[str, Callable[[], object]] = {"torch FlopCounterMode": flop_counter_mode}
    with contextlib.suppress(ImportError):
        from fvcore.nn import FlopCountAnalysis
        out["fvcore"] = lambda: FlopCountAnalysis(model, x).unsupported_ops_warnings(False).total()
    with contextlib.suppress(ImportError):
        from ptflops import get_model_complexity_info
        out["ptflops"] = lambda: get_model_complexity_info(
            model, tuple(x.shape[1:]), as_strings=False, print_per_layer_stat=False)
    with contextlib.suppress(ImportError):
        from thop import profile
        out["thop"] = lambda: profile(model, inputs=(x,), verbose=False)
    return out


def resnet50_batch_scaling(repeats: int) -> None:
    print("dnncost counting torchvision resnet50 on the meta device:")
    for mode in ("eval", "train"):
        for batch in (1, 256):
            samples = [_timed(lambda m=mode, b=batch: count("torchvision:resnet50", mode=m, batch_size=b))
                       for _ in range(repeats)]
            print(f"  {mode:5s} batch {batch:3d}: {_spread(samples)}")


def versus_forward(names: list[str], repeats: int) -> None:
    print("\nratio to one real CPU forward pass at batch 1 (median of interleaved repeats):")
    ratios: dict[str, list[float]] = {}
    for name in names:
        model = tvm.get_model(name, weights=None).eval()
        shape = (1, 3, 299, 299) if name.startswith("inception") else (1, 3, 224, 224)
        x = torch.randn(shape)
        contenders = {"dnncost (meta)": lambda m=model, s=shape: count(m, input_shape=s[1:])}
        contenders.update(peers(model, x))

        def forward(model: torch.nn.Module = model, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                model(x)

        forward()  # warm-up
        for fn in contenders.values():  # warm-up (imports, first-call caches)
            with contextlib.suppress(Exception):
                _timed(fn)
        samples: dict[str, list[float]] = {k: [] for k in ["forward", *contenders]}
        for _ in range(repeats):
            samples["forward"].append(_timed(forward))
            for key, fn in contenders.items():
                try:
                    samples[key].append(_timed(fn))
                except Exception:  # a peer that cannot count this model
                    samples[key].append(float("nan"))
        fwd = statistics.median(samples["forward"])
        cells = []
        for key in contenders:
            ratio = statistics.median(samples[key]) / fwd
            ratios.setdefault(key, []).append(ratio)
            cells.append(f"{key} {ratio:5.2f}x")
        print(f"  {name:20s} forward {fwd * 1e3:7.1f} ms | " + " | ".join(cells))
    print("\nmedian over models (ratio to forward; < 1 means faster than running the model):")
    for key, values in ratios.items():
        finite = [v for v in values if v == v]
        if finite:
            print(f"  {key:22s} {statistics.median(finite):5.2f}x  (max {max(finite):.2f}x, "
                  f"{len(finite)} models)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default=DEFAULT_MODELS)
    args = parser.parse_args()
    env = current_environment("cpu")
    print(f"machine: {env.cpu_model}, {env.cpu_cores} cores, {env.threads} threads, "
          f"torch {env.torch_version}, dnncost {env.git_revision}\n")
    resnet50_batch_scaling(args.repeats)
    versus_forward(args.models.split(","), args.repeats)


if __name__ == "__main__":
    main()
