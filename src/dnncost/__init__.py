"""dnncost: what a deep neural network costs, in computation and in time, and why the two disagree.

The public API. Heavy parts (torch, the zoo, timing) load on first use, so ``import dnncost`` and
the CLI's start stay quick.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from dnncost.counting.conventions import CONVENTION
from dnncost.counting.cost import Cost, CostReport, OpRecord, Phase

_LAZY = {
    "count": "dnncost.counting.counter",
    "load_model": "dnncost.models.loading",
    "list_models": "dnncost.models",
    "create_model": "dnncost.models",
    "get_model_info": "dnncost.models",
    "time_model": "dnncost.measuring.timing",
    "Measurement": "dnncost.measuring.timing",
    "StepTiming": "dnncost.measuring.timing",
    "train": "dnncost.measuring.training",
    "load_dataset": "dnncost.measuring.data",
    "calibrate": "dnncost.measuring.calibrate",
    "load_calibration": "dnncost.measuring.calibrate",
    "profile_breakdown": "dnncost.measuring.breakdown",
    "measure_distributed": "dnncost.measuring.distributed",
}

__all__ = ["CONVENTION", "Cost", "CostReport", "OpRecord", "Phase", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dnncost' has no attribute '{name}'")
