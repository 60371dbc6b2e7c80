"""dnncost: what a deep neural network costs, in computation and in time, and why the two disagree."""
from __future__ import annotations

__version__ = "0.1.0"

from dnncost.conventions import CONVENTION
from dnncost.cost import Cost, CostReport, OpRecord, Phase

__all__ = ["CONVENTION", "Cost", "CostReport", "OpRecord", "Phase", "__version__"]
