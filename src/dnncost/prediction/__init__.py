"""Prediction: step time from structure, for networks never timed.

:mod:`.sampling` draws random networks, :mod:`.kernels` times each kernel inside their real steps,
:mod:`.calibration` fits :mod:`.predict`'s per-kernel model, :mod:`.evaluation` and :mod:`.unseen`
measure its error against baselines.
"""
