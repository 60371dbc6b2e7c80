"""Does the calibration measure a network's step the way a user does? (issue 22, item 1a)

``dnncost predict`` is fitted on the step times ``dnncost calibrate --ops`` measured, and judged
against the step times a user measures with ``dnncost time`` (and the study, and ``evaluate``). If
the two protocols read a step differently -- warm-up, steps timed, the estimator, what the timed
region holds -- every prediction carries that difference as a bias, on every network, with one sign.

This benchmark takes this machine's stored calibration samples (``calibrate --ops`` keeps them
beside the calibration), rebuilds the networks the model was NOT fitted on -- its held-out random
networks and its transfer set, at the batch the calibration used -- and times each one's training
and validation step exactly as ``dnncost time`` does (``time_model`` with its defaults: warm-up,
timed steps, the reference probe; the figure is ``StepTiming.step_s``, a network's measured time),
in ``--rounds`` round-robin rounds. It prints, per mode, the ratio of that figure to the
calibration's stored figure for each network: median ratio, MAPE, share within +-10%, and how many
lie above and below 1 -- beside the noise floor measured in the same run (each round's figure
against the other rounds' of the same network: MAPE and the median spread). The protocols agree
when the median ratio is within the noise and the ratios are not one-sided.

Run:  dnncost calibrate --ops && python benchmarks/protocol_identity.py
      python benchmarks/protocol_identity.py --rounds 3 --networks 8
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings
from functools import partial

import numpy as np
import torch

from dnncost.core.environment import current_environment, machine_fingerprint
from dnncost.core.kinds import Mode
from dnncost.measuring.interleave import TimingJob, time_interleaved
from dnncost.measuring.measurement import STUDY_ESTIMATOR, estimate
from dnncost.measuring.timing import StepOptions, StepTiming
from dnncost.prediction.fitting import NetworkSample
from dnncost.prediction.samples import load_samples, samples_path
from dnncost.prediction.sampling import random_network
from dnncost.prediction.transfer import transfer_networks

WITHIN = 0.10  # source: issue 22, the "within +-10%" band


def rebuild(sample: NetworkSample) -> torch.nn.Module:
    """The network a calibration sample was timed on: a random one by its seed at the side it was
    timed at (drawn as the calibration drew it, or at an anchor: calibration.anchor_of), or a
    transfer one."""
    if sample.name.startswith("random"):
        return random_network(int(sample.name.removeprefix("random")),
                              side=sample.report.input_shape[-1]).module  # as drawn or anchored
    for net in transfer_networks(larger=True):
        if net.name == sample.name:
            return net.module
    raise SystemExit(f"cannot rebuild '{sample.name}'")


def time_as_a_user(calibrated: dict[str, NetworkSample], mode: Mode, *, rounds: int
                   ) -> dict[str, list[StepTiming]]:
    """Each network's ``mode`` step timed as ``dnncost time`` times it, ``rounds`` times,
    round-robin."""
    timings: dict[str, list[StepTiming]] = {n: [] for n in calibrated}
    jobs = [TimingJob(n, partial(rebuild, s), tuple(s.report.input_shape),
                      StepOptions(batch_size=s.report.batch_size, mode=mode))
            for n, s in calibrated.items()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        time_interleaved(jobs, repeats=rounds, remeasure=0,
                         on_repeat=lambda name, index, timing: timings[name].append(timing))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds (default: 3)")
    parser.add_argument("--networks", type=int, default=0,
                        help="at most this many held-out and transfer networks (default: all)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    stored = load_samples(samples_path(machine_fingerprint("cpu", threads=threads)))
    unseen = [*stored.held_out, *stored.transfer]
    names = list(dict.fromkeys(s.name for s in unseen))
    if args.networks:
        names = names[:args.networks]
    env = current_environment("cpu", threads=threads)
    print(f"{env.cpu_model}, {env.cpu_cores} cores, {threads} threads, torch {env.torch_version}, "
          f"dnncost {env.git_revision}")
    print(f"calibration {stored.meta.get('fingerprint')}, {len(names)} networks it did not fit on, "
          f"{args.rounds} rounds of `dnncost time`'s protocol ({STUDY_ESTIMATOR.value} of the steps)\n")
    started = time.perf_counter()
    for mode in Mode:
        calibrated = {s.name: s for s in unseen if s.report.mode == mode.value and s.name in names}
        timings = time_as_a_user(calibrated, mode, rounds=args.rounds)
        ratios = []
        print(f"{mode.value} step, {len(calibrated)} networks:")
        for name, s in calibrated.items():
            measured = estimate([t.measurement.samples for t in timings[name]], STUDY_ESTIMATOR)
            ratios.append(measured / s.step_s)
            print(f"  {name:32s} calibration {s.step_s * 1e3:9.2f} ms   dnncost time "
                  f"{measured * 1e3:9.2f} ms   ratio {measured / s.step_s:6.3f}")
        r = np.array(ratios)
        figures = [[t.step_s for t in ts] for ts in timings.values()]
        floor = [abs(a / b - 1) for f in figures for a, b in itertools.permutations(f, 2)]
        spread = [max(f) / min(f) - 1 for f in figures if len(f) > 1]
        print(f"  ratio time / calibration: median {np.median(r):.3f}, MAPE {np.mean(abs(r - 1)):.1%}, "
              f"within +-10% {np.mean(abs(r - 1) <= WITHIN):.0%}, above 1: {int((r > 1).sum())}, "
              f"below: {int((r < 1).sum())}")
        if floor:
            print(f"  noise floor (one round against another of the same network): MAPE "
                  f"{statistics.mean(floor):.1%}; spread of the rounds, median "
                  f"{statistics.median(spread):.1%}\n")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
