"""Prediction: step time from structure, for networks never timed.

:mod:`.sampling` draws random networks, :mod:`.kernels` times each kernel inside their real steps,
:mod:`.calibration` times them and :mod:`.fitting` fits the per-kernel model (:mod:`.model`, its trees
plain numbers in :mod:`.trees`; :mod:`.features` what it sees of a call), :mod:`.storage` keeps it
in the calibration file, :mod:`.predict` predicts with it; :mod:`.evaluation` and :mod:`.unseen`
measure its error against baselines.
"""
