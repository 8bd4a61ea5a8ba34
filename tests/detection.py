"""The example detector (examples/detection/detector.py), loaded from its file as users run it."""

from __future__ import annotations

import importlib.util

from tests.repo import REPO

DETECTION = REPO / "examples" / "detection"

_spec = importlib.util.spec_from_file_location("example_detector", DETECTION / "detector.py")
detector = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(detector)
