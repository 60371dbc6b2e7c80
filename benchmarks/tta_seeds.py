"""How much do seeds move time-to-accuracy, and does the ranking of networks by it hold across seeds?

Run:  python benchmarks/tta_seeds.py [--models lenet5,resnet20] [--seeds 5] [--target 0.9]
                                     [--validations-per-epoch 2] [--max-epochs N] [--threads 1]

Trains each network of the default study (dnncost.models.default_study_models(), or --models) on
scikit-learn's digits as the study does -- its family's recipe (dnncost.training.recipe: rate,
warm-up, cosine decay over the cap), batch 32, the study's split (seed 0) -- until its validation
accuracy first reaches --target (dnncost.training.trainer.train with ``target_accuracy``),
validating --validations-per-epoch times an epoch, capped at the family's study epochs (the
recipe's multiple of RECIPE_EPOCHS) unless --max-epochs is given. Seeds 0 .. N-1 each choose the
initialisation and the batch order; the runs go seed by seed, every network once per seed, so a
change in the machine's load falls on all networks alike. Each network first trains untimed on two
batches, so that the first calls' kernel selection does not land on seed 0.

It prints the machine, torch and the load, one line per run, then per network the median and the
spread (min-max, coefficient of variation = sample std / mean) of the time to target (training +
validation, and training alone) and of the steps to target, and whether the ranking of the networks
by time to target (and by steps) is the same from every seed, with Kendall's tau of each seed's
ranking against the ranking by medians. A network that misses the target in a run ranks last in
that seed's ranking. Wall times on a shared machine carry its noise: the steps do not.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from scipy.stats import kendalltau
from torch.utils.data import Subset

from dnncost import models
from dnncost.core.environment import cpu_times, current_environment, machine_load
from dnncost.study.config import SEED, TARGET_ACCURACY, VALIDATIONS_PER_EPOCH, StudyConfig
from dnncost.training.data import DatasetSplit, load_dataset
from dnncost.training.recipe import RECIPE_EPOCHS, recipe_for
from dnncost.training.records import TimeToTarget
from dnncost.training.trainer import TrainOptions, train

BATCH_SIZE = StudyConfig().batch_size  # source: the study's default
TARGET = TARGET_ACCURACY  # source: the study's default target on digits
SEEDS = 5  # source: our choice (issue 24, "several seeds"): enough for a median and a spread
WARMUP_BATCHES = 2  # source: our choice; oneDNN picks and builds its kernels on the first calls


@dataclass(frozen=True)
class Run:
    """One network trained from one seed to the target."""

    network: str
    seed: int
    time_to_target: TimeToTarget
    wall_s: float  # the whole train() call: model set-up and the environment snapshot included


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="networks, comma separated (default: the default "
                                                     "study's)")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds 0 .. N-1 (default: {SEEDS})")
    parser.add_argument("--target", type=float, default=TARGET,
                        help=f"validation accuracy to reach (default: {TARGET})")
    parser.add_argument("--validations-per-epoch", type=int, default=VALIDATIONS_PER_EPOCH,
                        help=f"validations an epoch (default: {VALIDATIONS_PER_EPOCH})")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="epoch cap (default: each family's study epochs, the recipe's multiple "
                             f"of {RECIPE_EPOCHS})")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    names = args.models.split(",") if args.models else models.default_study_models()
    torch.set_num_threads(args.threads)
    env = current_environment("cpu", threads=args.threads)
    print(f"machine: {env.cpu_model}, {env.cpu_cores} cores; torch {env.torch_version}; dnncost "
          f"{env.git_revision}; {args.threads} thread(s); load average {os.getloadavg()[0]:.2f}")
    print(f"measuring: time to {args.target:g} validation accuracy on digits (batch {BATCH_SIZE}, "
          f"each family's recipe, {args.validations_per_epoch} validations an epoch), "
          f"{len(names)} network(s) x seeds 0..{args.seeds - 1}, seed by seed\n")
    data = {name: load_dataset("digits", input_shape=models.get_model_info(name).input_shape, seed=SEED)
            for name in names}
    for name in names:  # untimed: first-call kernel choice and allocation would land on seed 0
        _warm_up(name, data[name], threads=args.threads)
    start, ticks = time.perf_counter(), cpu_times()
    runs = [_run(name, seed, data[name], args) for seed in range(args.seeds) for name in names]
    load = machine_load(ticks, cpu_times(), threads=args.threads)
    print(f"\n{len(runs)} runs in {time.perf_counter() - start:.0f} s; machine during the runs: "
          f"{load.describe()}\n")
    _summary(names, runs)
    _ranking(names, runs, seeds=args.seeds)


def _warm_up(name: str, data: DatasetSplit, *, threads: int) -> None:
    """Train ``name`` untimed for WARMUP_BATCHES batches, validating on as many."""
    small = replace(data, train=Subset(data.train, range(WARMUP_BATCHES * BATCH_SIZE)),
                    val=Subset(data.val, range(BATCH_SIZE)))
    train(models.create_model(name), small, options=TrainOptions(epochs=1, threads=threads),
          progress=False, name=name)


def _run(name: str, seed: int, data: DatasetSplit, args: argparse.Namespace) -> Run:
    recipe = recipe_for(models.get_model_info(name).family)
    cap = args.max_epochs if args.max_epochs is not None else recipe.epochs(RECIPE_EPOCHS)
    options = TrainOptions(epochs=cap, batch_size=BATCH_SIZE, threads=args.threads, seed=seed,
                           target_accuracy=args.target,
                           validations_per_epoch=args.validations_per_epoch).with_recipe(recipe)
    torch.manual_seed(seed)  # the initialisation, as the study seeds before building each network
    model = models.create_model(name)
    t0 = time.perf_counter()
    result = train(model, data, options=options, progress=False, name=name)
    wall = time.perf_counter() - t0
    t = result.time_to_target
    assert t is not None  # a target was given
    print(f"{name:24s} seed {seed}: {'reached' if t.reached else 'MISSED '} {t.val_accuracy:6.1%} "
          f"at {t.epochs:5.2f} epochs, {t.steps:4d} steps, {t.validations:2d} validations; "
          f"{t.train_time_s:6.1f} s train + {t.val_time_s:5.1f} s val = {t.total_time_s:6.1f} s "
          f"(cap {cap} epochs; call {wall:.1f} s)", flush=True)
    return Run(name, seed, t, wall)


def _spread(values: Sequence[float]) -> str:
    """median [min-max] CV, over the runs that reached the target."""
    if not values:
        return "no run reached the target"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:8.2f} (one run)"
    cv = statistics.stdev(values) / statistics.mean(values)
    return f"{median:8.2f} [{min(values):.2f}-{max(values):.2f}] CV {cv:6.1%}"


def _summary(names: Sequence[str], runs: Sequence[Run]) -> None:
    print("per network, over the seeds that reached the target: median [min-max] CV")
    for name in names:
        mine = [r.time_to_target for r in runs if r.network == name]
        hit = [t for t in mine if t.reached]
        print(f"{name:24s} reached {len(hit)}/{len(mine)}")
        print(f"  time to target, train + val (s): {_spread([t.total_time_s for t in hit])}")
        print(f"  time to target, train only (s):  {_spread([t.train_time_s for t in hit])}")
        print(f"  steps to target:                 {_spread([float(t.steps) for t in hit])}")
        print(f"  epochs to target:                {_spread([t.epochs for t in hit])}")
    print()


def _ranking(names: Sequence[str], runs: Sequence[Run], *, seeds: int) -> None:
    """Is the order of the networks by time (and by steps) to target the same from every seed?"""
    if len(names) < 2:
        print("ranking: one network, nothing to rank")
        return
    for label, key in (("time to target (train + val)", lambda t: t.total_time_s),
                       ("steps to target", lambda t: float(t.steps))):
        per_seed = {seed: {r.network: key(r.time_to_target) if r.time_to_target.reached else math.inf
                           for r in runs if r.seed == seed} for seed in range(seeds)}
        medians = {name: statistics.median(per_seed[s][name] for s in range(seeds)) for name in names}
        by_median = sorted(names, key=lambda n: medians[n])
        orders = {seed: sorted(names, key=lambda n, s=seed: per_seed[s][n]) for seed in range(seeds)}
        taus = [kendalltau([by_median.index(n) for n in names], [orders[s].index(n) for n in names])[0]
                for s in range(seeds)]
        stable = all(order == by_median for order in orders.values())
        print(f"ranking by {label}: {'STABLE' if stable else 'NOT stable'} across {seeds} seed(s); "
              f"by the medians: {' < '.join(by_median)}")
        for seed, order in orders.items():
            print(f"  seed {seed}: {' < '.join(order)}  (Kendall tau vs medians {taus[seed]:+.2f})")
        print(f"  lowest Kendall tau: {min(taus):+.2f}")


if __name__ == "__main__":
    main()
