"""How fast is a wide convolution's backward on a tiny map, as its weight grows?

ImageNet networks run on CIFAR-sized inputs end in convolutions of 512-2048 channels on 1x1-4x4
maps (ResNet-50's last stage and strided shortcuts, ResNet-18/34's 3x3s). Their weight gradient is
a GEMM with only batch x output pixels inner rows, and its rate falls as the weight grows: this
benchmark times the backward (input and weight gradients, after an untimed forward) of 1x1
convolutions of growing width on a 1x1 map, then of every convolution of
``dnncost.prediction.sampling.WIDE_CONVS``, and prints each one's weight size, time, nanoseconds
per weight element and GFLOP/s (backward FLOPs = 4 x MACs). It is why the calibration probes
weights up to 8-9 MiB there (``sampling.pointwise_probes``, ``sampling.wide_probes``): the
per-kernel model's trees do not extrapolate past the largest weight they saw.

Run:  python benchmarks/wide_weights.py
      python benchmarks/wide_weights.py --batch 8 --runs 9
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

WIDTHS = ((512, 512), (512, 1024), (1024, 1024), (1024, 1536), (1024, 2048), (2048, 2048))
"""(input, output) channels of the 1x1 sweep: weights of 1 to 16 MiB."""


def backward_seconds(conv: nn.Conv2d, x: torch.Tensor, runs: int) -> tuple[float, float]:
    """(median, fastest) of ``runs`` timed backward passes after 2 untimed ones."""
    y = conv(x)
    grad = torch.randn_like(y)
    times = []
    for i in range(2 + runs):
        start = time.perf_counter()
        torch.autograd.grad(y, (x, conv.weight), grad, retain_graph=True)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def row(cin: int, cout: int, k: int, side: int, stride: int, batch: int, runs: int) -> str:
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
    x = torch.randn(batch, cin, side, side, requires_grad=True)
    out = (side + 2 * (k // 2) - k) // stride + 1
    elements = cin * cout * k * k
    median, fastest = backward_seconds(conv, x, runs)
    flops = 4 * batch * out * out * elements
    return (f"{cin:5d} -> {cout:5d}  {k}x{k} s{stride}  {side}x{side} -> {out}x{out}  "
            f"{4 * elements / 2**20:5.1f} MiB  {median * 1e3:7.2f} ms (fastest {fastest * 1e3:6.2f})  "
            f"{median / elements * 1e9:5.2f} ns/element  {flops / median / 1e9:6.1f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from dnncost.core.environment import current_environment
    from dnncost.prediction.sampling import WIDE_CONVS

    env = current_environment("cpu", threads=None)
    print(f"{env.cpu_model}, {env.cpu_cores} cores, {torch.get_num_threads()} threads, torch "
          f"{env.torch_version}, dnncost {env.git_revision}; batch {args.batch}; backward (input "
          f"and weight gradients), median of {args.runs}\n")
    print("1x1 convolutions on a 1x1 map:")
    for cin, cout in WIDTHS:
        print("  " + row(cin, cout, 1, 1, 1, args.batch, args.runs), flush=True)
    print("\nsampling.WIDE_CONVS (the calibration's wide probes):")
    for cin, cout, k, side, stride in WIDE_CONVS:
        print("  " + row(cin, cout, k, side, stride, args.batch, args.runs), flush=True)


if __name__ == "__main__":
    main()
