"""Draw an evaluation set of timm networks by a fixed rule, for ``dnncost evaluate --unseen``.

An evaluation set chosen by looking at the predictor's errors is not unseen. This picks one by a
rule stated in advance: timm's classification networks (``timm.list_models()``, this timm's list)
whose names are not torchvision's, shuffled by ``random.Random(--seed)``, kept in that order when
timm builds the network on the meta device and its 3x224x224 training step at batch 8 counts at
most ``--max-gflops`` (the protocol's time on 2 cores) and more than ``--min-gflops``, until
``--n`` are kept. It prints the timm
version and the ``--models`` argument; nothing is timed or predicted.

Run:  python benchmarks/timm_sample.py                      (20 networks, seed 22)
      python benchmarks/timm_sample.py --seed 23 --exclude "$(python benchmarks/timm_sample.py --list-only)"
      python benchmarks/timm_sample.py --seed 35 --min-gflops 60 --max-gflops 150 --n 16
      dnncost evaluate --unseen --models "$(python benchmarks/timm_sample.py --list-only)"
"""
from __future__ import annotations

import argparse
import random
import sys
import warnings

RULE = "224x224 training step, batch 8"  # the step the GFLOPs cap bounds, for every drawn set


def training_gflops(module: object) -> float:
    """GFLOPs of ``module``'s 3x224x224 training step at batch 8, counted on the meta device: what
    ``--max-gflops`` bounds (the protocol's time on 2 cores), here and in hf_sample.py."""
    from dnncost.counting.counter import count

    return count(module, mode="train", batch_size=8, input_shape=(3, 224, 224)).total().flops / 1e9


def print_set(header: str, kept: list[tuple[str, float]], *, list_only: bool) -> None:
    """The kept networks (model specs with their GFLOPs) under ``header``, then the ``--models``
    argument; only that argument when ``list_only``."""
    models = ",".join(name for name, _ in kept)
    if list_only:
        print(models)
        return
    print(header)
    for name, flops in kept:
        print(f"  {name:45s} {flops:7.1f} GFLOPs")
    print(f"\n--models {models}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="networks to keep (default: 20)")
    parser.add_argument("--seed", type=int, default=22, help="the shuffle's seed (default: 22)")
    parser.add_argument("--max-gflops", type=float, default=60.0,
                        help="largest 224x224 training step at batch 8, GFLOPs (default: 60)")
    parser.add_argument("--min-gflops", type=float, default=0.0,
                        help="smallest, GFLOPs (default: 0; above every earlier set's 60: a set "
                             "no earlier one can overlap)")
    parser.add_argument("--list-only", action="store_true", help="print only the --models argument")
    parser.add_argument("--exclude", default="", metavar="A,B,...",
                        help="networks never to keep (an earlier set's --models: a new set is "
                             "disjoint from it)")
    args = parser.parse_args()
    try:
        import timm
    except ImportError:
        sys.exit("this benchmark needs timm: pip install timm")
    import torchvision.models as tvm

    from dnncost.core.errors import DnncostError

    torchvision = set(tvm.list_models())
    excluded = {n.strip().removeprefix("timm:") for n in args.exclude.split(",") if n.strip()}
    names = sorted(n for n in timm.list_models() if n not in torchvision and n not in excluded)
    random.Random(args.seed).shuffle(names)
    kept: list[tuple[str, float]] = []
    for name in names:
        if len(kept) == args.n:
            break
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flops = training_gflops(timm.create_model(name, pretrained=False, device="meta"))
        except (DnncostError, RuntimeError, ValueError, TypeError, AssertionError) as exc:
            if not args.list_only:
                print(f"  left out {name}: {str(exc).splitlines()[0][:100]}", file=sys.stderr)
            continue
        if args.min_gflops < flops <= args.max_gflops:
            kept.append((f"timm:{name}", flops))
    above = f"above {args.min_gflops:g} and " if args.min_gflops else ""
    print_set(f"timm {timm.__version__}, seed {args.seed}, {len(names)} candidates, "
              f"{above}at most {args.max_gflops:g} GFLOPs ({RULE})", kept, list_only=args.list_only)


if __name__ == "__main__":
    main()
