"""dnncost: what a deep neural network costs, in computation and in time, and why the two disagree.

The public API, in the order of the pipeline (count -> time -> study -> predict -> report):

- counting: :func:`count` -> :class:`CostReport` of :class:`OpRecord` s with :class:`Cost` s per
  :class:`Phase`; :data:`CONVENTION` says what is counted; :func:`register_formula` adds an operator
  (its :class:`OpKind`, on :class:`TensorSpec` shapes); :func:`parse_input_spec` / :class:`InputSpec`
  describe inputs (shapes, dtypes, several tensors, keyword inputs).
- models: :func:`load_model` (zoo, torchvision, timm, HF or ``file.py:factory``), :func:`list_models`,
  :func:`create_model`, :func:`get_model_info`, :func:`register_model` (add a network to the zoo,
  described by a :class:`ModelInfo`).
- measuring: :func:`time_model` -> :class:`StepTiming` (:class:`Measurement` of raw samples) for a
  step described by :class:`StepOptions`; :func:`train`, :func:`load_dataset`, :func:`calibrate`,
  :func:`load_calibration`, :func:`profile_breakdown`, :func:`measure_distributed`.
- prediction: :func:`predict_time` -> :class:`Prediction` (a step's time from its structure, with
  its interval, by the per-kernel model ``dnncost calibrate --ops`` fits); :func:`speed_change` (how
  much slower or faster this machine runs now than while it was calibrated).
- study: :func:`open_store` (the SQLite results of ``dnncost study``).

Heavy parts (torch, the zoo) load on first use, so ``import dnncost`` and the CLI start quickly; the
imports under ``TYPE_CHECKING`` let type checkers and editors see every name.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dnncost.core.version import __version__

if TYPE_CHECKING:
    from dnncost.core.inputs import InputSpec, Precision, parse_input_spec
    from dnncost.counting.conventions import CONVENTION
    from dnncost.counting.cost import Cost, CostReport, OpRecord, Phase
    from dnncost.counting.counter import CountOptions, count
    from dnncost.counting.formulas import OpKind, TensorSpec, register_formula
    from dnncost.distributed.data_parallel import measure_distributed
    from dnncost.measuring.breakdown import profile_breakdown
    from dnncost.measuring.calibrate import calibrate, load_calibration
    from dnncost.measuring.measurement import Measurement
    from dnncost.measuring.timing import StepOptions, StepTiming, time_model
    from dnncost.models import ModelInfo, create_model, get_model_info, list_models, register_model
    from dnncost.models.loading import load_model
    from dnncost.prediction.predict import Prediction, predict_time, speed_change
    from dnncost.study.store import open_store
    from dnncost.training.data import load_dataset
    from dnncost.training.trainer import train

_LAZY = {  # public name -> the module that defines it
    "CONVENTION": "dnncost.counting.conventions",
    "Cost": "dnncost.counting.cost",
    "CostReport": "dnncost.counting.cost",
    "OpRecord": "dnncost.counting.cost",
    "Phase": "dnncost.counting.cost",
    "count": "dnncost.counting.counter",
    "CountOptions": "dnncost.counting.counter",
    "register_formula": "dnncost.counting.formulas",
    "OpKind": "dnncost.counting.formulas",
    "TensorSpec": "dnncost.counting.formulas",
    "InputSpec": "dnncost.core.inputs",
    "Precision": "dnncost.core.inputs",
    "parse_input_spec": "dnncost.core.inputs",
    "load_model": "dnncost.models.loading",
    "list_models": "dnncost.models",
    "create_model": "dnncost.models",
    "get_model_info": "dnncost.models",
    "register_model": "dnncost.models",
    "ModelInfo": "dnncost.models",
    "time_model": "dnncost.measuring.timing",
    "StepOptions": "dnncost.measuring.timing",
    "StepTiming": "dnncost.measuring.timing",
    "Measurement": "dnncost.measuring.measurement",
    "train": "dnncost.training.trainer",
    "load_dataset": "dnncost.training.data",
    "calibrate": "dnncost.measuring.calibrate",
    "load_calibration": "dnncost.measuring.calibrate",
    "profile_breakdown": "dnncost.measuring.breakdown",
    "measure_distributed": "dnncost.distributed.data_parallel",
    "predict_time": "dnncost.prediction.predict",
    "Prediction": "dnncost.prediction.predict",
    "speed_change": "dnncost.prediction.predict",
    "open_store": "dnncost.study.store",
}

__all__ = [  # explicit, so tools see it; tests check it matches _LAZY
    "__version__",
    "CONVENTION", "Cost", "CostReport", "OpRecord", "Phase", "count", "CountOptions", "register_formula",
    "OpKind", "TensorSpec", "InputSpec", "Precision", "parse_input_spec", "load_model", "list_models",
    "create_model", "get_model_info", "register_model", "ModelInfo", "time_model", "StepOptions",
    "StepTiming", "Measurement", "train", "load_dataset", "calibrate", "load_calibration",
    "profile_breakdown", "measure_distributed", "predict_time", "Prediction", "speed_change",
    "open_store",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'dnncost' has no attribute '{name}'")


def __dir__() -> list[str]:
    """The public names, so ``dir(dnncost)`` and completion show the API before it is loaded."""
    return sorted({*globals(), *__all__})
