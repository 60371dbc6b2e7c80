"""Where a study keeps its results unless told otherwise, and the input-size choice that keeps each
network's own input. Free of torch, so the command line can show them without importing it."""
from __future__ import annotations

DEFAULT_DB = "dnncost-results/study.sqlite"  # source: issue 5 (default db path)
DEFAULT_OUT = "dnncost-results/report"  # source: issue 5 (default report folder)
NATIVE = "native"  # input-size choice: each named network at its own input size

__all__ = ["DEFAULT_DB", "DEFAULT_OUT", "NATIVE"]
