"""Where a convolution's output lies within its padding, how much slower does it run?

A "same"-padded k x k convolution whose output side is at most k // 2 reads padding on every side
of every output pixel. ImageNet networks run on CIFAR-sized inputs meet this in their last stages
(a 5x5 depthwise convolution on a 1x1 map, a 7x7 on 2x2). This benchmark times such convolutions
against the same ones with a larger output, depthwise, with 4 channels a group and dense, forward
(no grad) and backward (after an untimed forward), and prints each one's GFLOP/s (FLOPs = 2 x MACs,
backward twice the forward's), so that the slow path shows as a drop in rate. It is what
``dnncost.prediction.features.regressor_key`` gives a regressor of its own.

With ``--layouts`` it times each convolution on a contiguous (NCHW) input and on a channels-last
(NHWC) one side by side, and prints how many times faster the channels-last one ran, forward /
backward: oneDNN runs other kernels for each layout (what ConvNeXt's permutations leave
to every later convolution), which is why each counted call records its layout
(``dnncost.counting.counter._channels_last``).

Run:  python benchmarks/padded_conv.py
      python benchmarks/padded_conv.py --batch 8 --channels 256
      python benchmarks/padded_conv.py --layouts
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

CASES = ((1, 1), (2, 2), (2, 1), (3, 2), (4, 2), (3, 1), (4, 1))  # (input side, stride)


def seconds(conv: nn.Conv2d, x: torch.Tensor, *, backward: bool, runs: int) -> float:
    """The fastest of ``runs`` timed calls after 3 untimed ones."""
    times = []
    for i in range(3 + runs):
        if backward:
            y = conv(x)
            grad = torch.ones_like(y)
            start = time.perf_counter()
            y.backward(grad)
        else:
            with torch.no_grad():
                start = time.perf_counter()
                conv(x)
        if i >= 3:
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=512, help="depthwise and grouped (default 512)")
    parser.add_argument("--dense-channels", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--layouts", action="store_true",
                        help="time NCHW and NHWC inputs side by side: NHWC's speedup, forward/backward")
    args = parser.parse_args()
    from dnncost.core.environment import current_environment

    env = current_environment("cpu", threads=None)
    print(f"{env.cpu_model}, {env.cpu_cores} cores, {torch.get_num_threads()} threads, torch "
          f"{env.torch_version}, dnncost {env.git_revision}; batch {args.batch}; "
          + ("channels-last speedup (NCHW time / NHWC time) forward / backward"
             if args.layouts else "GFLOP/s forward / backward") + ", by input side -> output side\n")
    for kind in ("depthwise", "4 a group", "dense"):
        for k in (3, 5, 7):
            cells = []
            for side, stride in CASES:
                c = args.dense_channels if kind == "dense" else args.channels
                groups = {"depthwise": c, "4 a group": c // 4, "dense": 1}[kind]
                conv = nn.Conv2d(c, c, k, stride, k // 2, groups=groups, bias=False)
                x = torch.randn(args.batch, c, side, side, requires_grad=True)
                out = (side + 2 * (k // 2) - k) // stride + 1
                macs = args.batch * c * out * out * (c // groups) * k * k
                margin = "*" if out < k // 2 else " "
                if args.layouts:
                    # NHWC strides by permuting, as a ConvNeXt block leaves them: on a 1x1 map
                    # .contiguous(memory_format=torch.channels_last) keeps the NCHW ones
                    nhwc = x.detach().permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) \
                        .requires_grad_()
                    fwd = seconds(conv, x, backward=False, runs=args.runs) / \
                        seconds(conv, nhwc, backward=False, runs=args.runs)
                    bwd = seconds(conv, x, backward=True, runs=args.runs) / \
                        seconds(conv, nhwc, backward=True, runs=args.runs)
                    cells.append(f"{side}->{out}{margin} {fwd:6.2f}/{bwd:5.2f}")
                    continue
                fwd = seconds(conv, x, backward=False, runs=args.runs)
                bwd = seconds(conv, x, backward=True, runs=args.runs)
                cells.append(f"{side}->{out}{margin} {2 * macs / fwd / 1e9:6.1f}/{4 * macs / bwd / 1e9:5.1f}")
            print(f"{kind:10s} {k}x{k}  " + " | ".join(cells), flush=True)
    print("\n* output side below the padding (k // 2): dnncost's padded regressor for depthwise and "
          "thinly grouped convolutions")


if __name__ == "__main__":
    main()
