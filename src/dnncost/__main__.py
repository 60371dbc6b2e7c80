"""``python -m dnncost``: the same command line as ``dnncost``."""
from __future__ import annotations

import sys

from dnncost.cli import main

if __name__ == "__main__":
    sys.exit(main())
