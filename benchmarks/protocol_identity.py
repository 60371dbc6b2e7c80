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
in ``--rounds`` round-robin rounds, each step in a fresh process as a user's ``dnncost time`` runs
(``dnncost.prediction.recheck``, what ``dnncost calibrate --ops --recheck`` runs). It prints, per
mode, the ratio of that figure to the calibration's stored figure for each network: median ratio,
MAPE, share within +-10%, and how many lie above and below 1 -- beside the noise floor measured in
the same run (the median spread of a network's rounds). The protocols agree when the median ratio is
within the noise and the ratios are not one-sided; run later, the median ratio is how far the
machine's speed has moved since the calibration. (The calibration times each validation step in a
process that has trained networks before it, which reads it about 9% slower than a fresh process:
``benchmarks/process_history.py``.)

Run:  dnncost calibrate --ops && python benchmarks/protocol_identity.py
      python benchmarks/protocol_identity.py --rounds 3 --networks 8
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from dnncost.core.environment import current_environment, machine_fingerprint
from dnncost.measuring.measurement import STUDY_ESTIMATOR
from dnncost.prediction.recheck import recheck
from dnncost.prediction.samples import load_samples, samples_path

WITHIN = 0.10  # source: issue 22, the "within +-10%" band


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds (default: 3)")
    parser.add_argument("--networks", type=int, default=0,
                        help="at most this many held-out and transfer networks (default: all)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    stored = load_samples(samples_path(machine_fingerprint("cpu", threads=threads)))
    env = current_environment("cpu", threads=threads)
    print(f"{env.cpu_model}, {env.cpu_cores} cores, {threads} threads, torch {env.torch_version}, "
          f"dnncost {env.git_revision}")
    result = recheck(stored, rounds=args.rounds, networks=args.networks)
    print(f"calibration {stored.meta.get('fingerprint')}, the networks it did not fit on, "
          f"{args.rounds} rounds of `dnncost time`'s protocol ({STUDY_ESTIMATOR.value} of the steps)\n")
    calibrated = {(s.name, s.report.mode): s.step_s for s in [*stored.held_out, *stored.transfer]}
    for mode, ratios in result.ratios.items():
        print(f"{mode} step, {len(ratios)} networks:")
        for name, ratio in ratios.items():
            then = calibrated[(name, mode)]
            print(f"  {name:32s} calibration {then * 1e3:9.2f} ms   dnncost time "
                  f"{ratio * then * 1e3:9.2f} ms   ratio {ratio:6.3f}")
        r = np.array(list(ratios.values()))
        print(f"  ratio time / calibration: median {np.median(r):.3f}, MAPE {np.mean(abs(r - 1)):.1%}, "
              f"within +-10% {np.mean(abs(r - 1) <= WITHIN):.0%}, above 1: {int((r > 1).sum())}, "
              f"below: {int((r < 1).sum())}")
        if mode in result.noise:
            print(f"  noise floor: spread of a network's rounds, median {result.noise[mode]:.1%}\n")
    print(f"{result.seconds:.0f} s")


if __name__ == "__main__":
    main()
