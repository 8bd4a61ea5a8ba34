"""The repository the tests run from (the package itself never derives paths from a source tree)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
