"""`python3 -m engine_builder ...`: how the robot runs the shipped copy of this package."""

from __future__ import annotations

import sys

from engine_builder.cli import main

if __name__ == "__main__":
    sys.exit(main())
