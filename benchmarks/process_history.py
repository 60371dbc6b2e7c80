"""Does a step read slower in a process that has just trained other networks?

``dnncost time`` times a step in a fresh process. ``evaluate --unseen`` used to time every group in
one process, its training groups before its validation groups; the calibration times each of its
networks' validation steps right after that network's training steps, in one process. If what a
process ran before moves a step's time, these protocols read the same step differently.

For each cycle this benchmark starts two processes, in the order A B B A (so that a drift of the
machine over the run falls on both alike): a **fresh** one that times the networks' validation
steps (``--mode train``: training steps) round robin, and a **trained** one that first runs their
training steps round robin (as ``evaluate`` did), then times the same steps the same way. Each
network's figure is STUDY_ESTIMATOR over its timed steps (``--rounds`` rounds of 3 after 2 warm-up
steps, as ``evaluate --unseen`` times). It prints per network the trained / fresh ratio with its spread over
the cycles, and the median ratio, how many networks lie above 1, and the noise floor of the run
(the median spread of one network's figure across the fresh runs). With ``--calibration`` the
networks are the stored calibration's held-out and transfer ones, at the batch it timed them at,
timed as ``dnncost time`` times them (2 warm-up and 10 timed steps a round), and each figure is
also set against the calibration's own (how the calibration's in-process reading compares with
each).

Run:  python benchmarks/process_history.py --models timm:seresnet18,timm:regnetz_040,...
      python benchmarks/process_history.py --calibration
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import torch

from dnncost.core.environment import current_environment, machine_fingerprint
from dnncost.core.kinds import Mode
from dnncost.measuring.measurement import STUDY_ESTIMATOR, estimate
from dnncost.measuring.timing import StepOptions
from dnncost.prediction.fresh_process import FreshJob, Repeat, time_round_robin
from dnncost.prediction.recheck import recheck_jobs, recheck_networks
from dnncost.prediction.samples import load_samples, samples_path
from dnncost.prediction.unseen import REPEATS, ROUNDS, WARMUP

SHAPE, BATCH = (3, 32, 32), 32  # source: issue 12, the study's configuration (evaluate's first)


def _jobs(models: Sequence[str], mode: Mode) -> list[FreshJob]:
    options = StepOptions(batch_size=BATCH, mode=mode, warmup=WARMUP, steps=REPEATS)
    return [FreshJob(m, "dnncost.prediction.unseen:build_unseen", (m,), SHAPE, options)
            for m in models]


def _calibration_jobs(mode: Mode) -> tuple[list[FreshJob], dict[str, float]]:
    threads = torch.get_num_threads()
    stored = load_samples(samples_path(machine_fingerprint("cpu", threads=threads)))
    calibrated = recheck_networks(stored, mode)
    return recheck_jobs(calibrated), {n: s.step_s for n, s in calibrated.items()}


def _child(arm: str, rounds: int) -> None:
    """One process of one arm: the request's jobs (JSON on stdin) timed, figures on stdout."""
    request = json.loads(sys.stdin.read())
    train = [FreshJob.from_dict(j) for j in request["train"]]
    timed = [FreshJob.from_dict(j) for j in request["timed"]]

    def ignore(*args: object) -> None:
        pass

    if arm == "trained":
        time_round_robin(train, repeats=rounds, fresh=False, on_repeat=ignore, on_error=ignore)
    samples: dict[str, list[float]] = {j.name: [] for j in timed}

    def done(name: str, index: int, repeat: Repeat) -> None:
        samples[name] += repeat.measurement.samples

    time_round_robin(timed, repeats=rounds, fresh=False, on_repeat=done, on_error=ignore)
    figures = {n: estimate([s], STUDY_ESTIMATOR) for n, s in samples.items() if s}
    sys.stdout.write(json.dumps(figures) + "\n")


def _run_arm(arm: str, request: str, rounds: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", arm, "--rounds", str(rounds)],
                         input=request, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", help="comma-separated unseen networks (timm:NAME or torchvision)")
    source.add_argument("--calibration", action="store_true",
                        help="the stored calibration's held-out and transfer networks")
    source.add_argument("--child", choices=("fresh", "trained"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.EVAL.value,
                        help="the step timed after the training round robin (default: eval; "
                             "train: a second training round robin)")
    parser.add_argument("--cycles", type=int, default=2, help="A B B A cycles (default: 2)")
    parser.add_argument("--rounds", type=int, default=ROUNDS,
                        help=f"round-robin rounds in each process (default: {ROUNDS})")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.rounds)
        return
    env = current_environment("cpu", threads=torch.get_num_threads())
    print(f"{env.cpu_model}, {env.cpu_cores} cores, {torch.get_num_threads()} threads, torch "
          f"{env.torch_version}, dnncost {env.git_revision}")
    mode = Mode(args.mode)
    calibrated: dict[str, float] = {}
    if args.calibration:
        train, _ = _calibration_jobs(Mode.TRAIN)
        timed, calibrated = _calibration_jobs(mode)
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        train, timed = _jobs(models, Mode.TRAIN), _jobs(models, mode)
    request = json.dumps({"train": [j.to_dict() for j in train],
                          "timed": [j.to_dict() for j in timed]})
    runs: dict[str, list[dict[str, float]]] = {"fresh": [], "trained": []}
    for cycle in range(args.cycles):
        for arm in ("fresh", "trained", "trained", "fresh") if cycle % 2 == 0 else \
                ("trained", "fresh", "fresh", "trained"):
            runs[arm].append(_run_arm(arm, request, args.rounds))
            print(f"cycle {cycle + 1}/{args.cycles}: {arm} process done", flush=True)
    names = [j.name for j in timed if all(j.name in r for arm in runs.values() for r in arm)]
    print(f"\n{mode.value} steps, {len(names)} networks, {args.rounds} rounds of "
          f"{timed[0].options.steps} steps per process ({STUDY_ESTIMATOR.value}); "
          f"{args.cycles * 2} fresh and {args.cycles * 2} trained processes, A B B A\n")
    ratios, spreads = [], []
    for name in names:
        fresh = [r[name] for r in runs["fresh"]]
        trained = [r[name] for r in runs["trained"]]
        ratio = float(np.median(trained) / np.median(fresh))
        ratios.append(ratio)
        spreads.append(max(fresh) / min(fresh) - 1)
        line = (f"  {name:36s} fresh {np.median(fresh) * 1e3:8.2f} ms  trained "
                f"{np.median(trained) * 1e3:8.2f} ms  trained / fresh {ratio:.3f} "
                f"(cycles {min(t / f for t, f in zip(trained, fresh, strict=True)):.3f}-"
                f"{max(t / f for t, f in zip(trained, fresh, strict=True)):.3f})")
        if name in calibrated:
            line += (f"  calibration {calibrated[name] * 1e3:8.2f} ms: fresh / calibration "
                     f"{np.median(fresh) / calibrated[name]:.3f}, trained / calibration "
                     f"{np.median(trained) / calibrated[name]:.3f}")
        print(line)
    r = np.array(ratios)
    print(f"\ntrained / fresh: median {np.median(r):.3f}, range {r.min():.3f}-{r.max():.3f}, above 1: "
          f"{int((r > 1).sum())} of {len(r)}; noise floor (spread of a network across the fresh "
          f"processes, median): {np.median(spreads):.1%}")
    if calibrated:
        for arm in ("fresh", "trained"):
            c = np.array([np.median([x[n] for x in runs[arm]]) / calibrated[n] for n in names])
            print(f"{arm} / calibration: median {np.median(c):.3f}, above 1: {int((c > 1).sum())} "
                  f"of {len(c)}")


if __name__ == "__main__":
    main()
