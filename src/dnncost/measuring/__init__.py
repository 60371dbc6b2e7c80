"""Stage 2, time: the step defined once (:mod:`.step`) and run on this machine.

:mod:`.device` (devices, threads, clock, out-of-memory), :mod:`.inputs` (input specs),
:mod:`.measurement` (raw samples and their statistics), :mod:`.probe` and :mod:`.interleave`
(timing on a noisy machine), :mod:`.timing` (one step), :mod:`.training` and :mod:`.recipe` (real
epochs), :mod:`.breakdown` (profiler attribution), :mod:`.calibrate` (peak FLOP/s, bandwidth),
:mod:`.distributed` (data-parallel steps), :mod:`.data`, :mod:`.environment`, :mod:`.records`.
"""
