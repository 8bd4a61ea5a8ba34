"""Shared pytest set-up: the repository on sys.path for the role's module code."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "roles" / "jetson_facts" / "library"))
