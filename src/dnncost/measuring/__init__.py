"""Time on this machine: one step of a network timed, with the statistics of its raw samples.

:mod:`.measurement` (raw samples and their statistics), :mod:`.probe` and :mod:`.interleave`
(timing on a noisy machine), :mod:`.timing` (one step), :mod:`.breakdown` (profiler attribution),
:mod:`.calibrate` (peak FLOP/s, bandwidth). The step itself, devices and the environment are in
:mod:`dnncost.core`; real epochs in :mod:`dnncost.training`; data-parallel steps in
:mod:`dnncost.distributed`.
"""
