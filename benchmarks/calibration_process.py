"""Does the calibration's own process time a step as a fresh process does?

``dnncost calibrate --ops`` times its networks for about four minutes in one process; a user's
``dnncost time`` runs in a fresh one. This benchmark runs a full calibration (nothing is stored),
then, in that same process, times the networks it did not fit on (its held-out random networks and
its transfer set, at the batch it timed them at) as ``dnncost time`` does, in this process and in a
fresh one (:mod:`dnncost.prediction.fresh_process`), in the order in, fresh, fresh, in (so that a
drift of the machine falls on both alike), ``--rounds`` round-robin rounds each, per step. It
prints each run's median of time now / time at calibration, and per step the ratio in-process /
fresh over the networks: its median and how many lie above 1.

Run:  python benchmarks/calibration_process.py
"""
from __future__ import annotations

import argparse
import time
import warnings
from functools import partial

import numpy as np
import torch

from dnncost.core.environment import current_environment
from dnncost.core.kinds import Mode
from dnncost.prediction.calibration import calibrate_operators
from dnncost.prediction.fresh_process import Repeat, time_round_robin
from dnncost.prediction.recheck import ratios, recheck_jobs, recheck_networks
from dnncost.prediction.samples import StoredSamples


def _keep(got: dict[str, list[Repeat]], name: str, index: int, repeat: Repeat) -> None:
    got[name].append(repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="round-robin rounds a run (default: 2)")
    args = parser.parse_args()
    env = current_environment("cpu", threads=torch.get_num_threads())
    print(f"{env.cpu_model}, {env.cpu_cores} cores, {torch.get_num_threads()} threads, torch "
          f"{env.torch_version}, dnncost {env.git_revision}", flush=True)
    started = time.perf_counter()
    warnings.simplefilter("ignore")
    cal = calibrate_operators()
    print(f"calibrated in {time.perf_counter() - started:.0f} s: {len(cal.fitted)} fitted samples, "
          f"{len(cal.held_out)} held out, {len(cal.transfer)} transfer", flush=True)
    stored = StoredSamples(cal.fitted, cal.held_out, dict(cal.meta), cal.transfer)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for arm in ("in", "fresh", "fresh", "in"):
        for mode in Mode:
            calibrated = recheck_networks(stored, mode)
            got: dict[str, list[Repeat]] = {n: [] for n in calibrated}
            time_round_robin(recheck_jobs(calibrated), repeats=args.rounds, fresh=arm == "fresh",
                             on_repeat=partial(_keep, got), on_error=lambda n, e: None)
            ratio = ratios(calibrated, got)
            runs.setdefault((arm, mode.value), []).append(ratio)
            print(f"{arm:5s} {mode.value:5s} time now / calibration: median "
                  f"{np.median(list(ratio.values())):.3f} ({len(ratio)} networks, "
                  f"{time.perf_counter() - started:.0f} s)", flush=True)
    for mode in Mode:
        inside, fresh = runs[("in", mode.value)], runs[("fresh", mode.value)]
        names = [n for n in inside[0] if all(n in r for r in [*inside, *fresh])]
        q = np.array([np.sqrt(inside[0][n] * inside[1][n] / (fresh[0][n] * fresh[1][n]))
                      for n in names])
        print(f"{mode.value} step, in the calibration's process / in a fresh one: median "
              f"{np.median(q):.3f} (range {q.min():.3f}-{q.max():.3f}), above 1: "
              f"{int((q > 1).sum())} of {len(q)}")


if __name__ == "__main__":
    main()
