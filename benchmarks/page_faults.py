"""How much of a step is the allocator handing memory back to the OS and faulting it in again?

glibc's malloc returns large freed blocks to the kernel (each block above its mmap threshold, and
the heap's free top above its trim threshold); the next step allocates them again and every fresh
4 KiB page costs a page fault and its zeroing, inside whichever kernel first writes it, and the
return itself (munmap, trimming) costs time between the kernels. Networks whose activations are
large (224x224 inputs at batch 8) pay this every step, a validation step most of all (no_grad frees
each activation as soon as the next layer has read it); the small random networks a calibration
times mostly do not, so a per-kernel model fitted on them misses it.

This benchmark times each network's training (or validation) step in a fresh process twice,
alternating (A B A B ...): as glibc behaves by default, and with ``GLIBC_TUNABLES`` set so that
malloc never maps nor trims (``glibc.malloc.mmap_max=0`` and a trim threshold of 64 GiB: freed
memory stays in the process). It prints the minor page faults per step (``getrusage``), each
setting's step time (lower quartile of the timed steps of every round) and their ratio per round
and median. The difference is what the faults cost; dnncost's own measurements always use the
default, as a user's training does.

With ``--per-mib`` it times instead, in this process, one elementwise write of a tensor of each
size into a fresh output (allocated, written, freed) and into a kept one, and prints what a MiB of
fresh output costs beyond the kept write, inside the call and at the free: glibc maps every
allocation of 32 MiB or more anew (its largest mmap threshold), so from there on every page faults.

Run:  python benchmarks/page_faults.py                        (3 networks, 3 rounds)
      python benchmarks/page_faults.py --per-mib
      python benchmarks/page_faults.py --models resnet50 --rounds 2 --side 224 --batch 8
      python benchmarks/page_faults.py --mode eval --steps 15
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

NO_RETURN = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"  # source: glibc's
# tunables (manual, "Memory Allocation Tunables"): no mmap'd blocks, no trimming below 64 GiB

_CHILD = """
import json, resource, sys, time, warnings
import numpy as np, torch
warnings.simplefilter("ignore")
from dnncost.core.kinds import Mode
from dnncost.measuring.timing import StepOptions, prepare_step
from dnncost.models.loading import load_model
name, mode = sys.argv[1], sys.argv[5]
side, batch, steps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
step = prepare_step(load_model(name).build("cpu"), (3, side, side),
                    StepOptions(batch_size=batch, mode=Mode(mode)), torch.device("cpu"))
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = []
for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
print(json.dumps({"step_s": float(np.percentile(times, 25)), "faults": faults}))
"""


def run(name: str, side: int, batch: int, steps: int, mode: str, *, tunables: str | None
        ) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run([sys.executable, "-c", _CHILD, name, str(side), str(batch), str(steps), mode],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


PER_MIB_SIZES = (8, 16, 31, 33, 48, 96)  # source: our choice, MiB on both sides of glibc's 32 MiB


def per_mib(repeats: int = 15) -> None:
    """Fresh against kept output, per size: medians of ``repeats`` writes."""
    import time

    import torch

    for mib in PER_MIB_SIZES:
        src = torch.randn(mib * 2**20 // 4)
        kept = torch.empty_like(src)
        fresh, free, reuse = [], [], []
        for _ in range(repeats):
            start = time.perf_counter()
            out = torch.mul(src, 2.0)
            written = time.perf_counter()
            del out
            freed = time.perf_counter()
            torch.mul(src, 2.0, out=kept)
            fresh.append(written - start)
            free.append(freed - written)
            reuse.append(time.perf_counter() - freed)
        f, r, d = (statistics.median(x) for x in (fresh, reuse, free))
        print(f"  {mib:3d} MiB: fresh {f * 1e3:6.2f} ms, kept {r * 1e3:6.2f} ms, free {d * 1e3:6.3f} ms; "
              f"a fresh MiB costs {(f - r) / mib * 1e6:5.0f} us more in the call, {d / mib * 1e6:4.0f} "
              "us at the free", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_b0,resnext50_32x4d,mobilenet_v3_large")
    parser.add_argument("--side", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run (default: 5)")
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds per network (default: 3)")
    parser.add_argument("--mode", choices=("train", "eval"), default="train",
                        help="the step timed (default: train)")
    parser.add_argument("--per-mib", action="store_true",
                        help="time a fresh output against a kept one per MiB instead")
    args = parser.parse_args()
    from dnncost.core.environment import current_environment

    env = current_environment("cpu", threads=None)
    if args.per_mib:
        print(f"{env.cpu_model}, {env.cpu_cores} cores, {env.threads} threads, torch "
              f"{env.torch_version}, dnncost {env.git_revision}; one elementwise write per size\n")
        per_mib()
        return
    print(f"{env.cpu_model}, {env.cpu_cores} cores, torch {env.torch_version}, dnncost "
          f"{env.git_revision}; {args.mode} step, 3x{args.side}x{args.side}, batch {args.batch}, "
          f"{args.rounds} rounds of (default, no return to the OS)\n")
    for name in args.models.split(","):
        ratios, faults, kept = [], [], []
        for _ in range(args.rounds):
            default = run(name, args.side, args.batch, args.steps, args.mode, tunables=None)
            held = run(name, args.side, args.batch, args.steps, args.mode, tunables=NO_RETURN)
            ratios.append(default["step_s"] / held["step_s"])
            faults.append(default["faults"])
            kept.append(held["faults"])
        print(f"  {name:24s} faults/step {statistics.median(faults):8.0f} "
              f"({statistics.median(faults) * 4096 / 2**20:5.0f} MiB) vs {statistics.median(kept):6.0f}"
              f" kept; default / kept: median {statistics.median(ratios):.3f} "
              f"(rounds {', '.join(f'{r:.3f}' for r in ratios)})", flush=True)


if __name__ == "__main__":
    main()
