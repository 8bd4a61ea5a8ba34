"""Version order for release tags and JetPack/L4T versions, the one rule everyone sorts by."""

from __future__ import annotations

from typing import Tuple


def version_key(version: str) -> Tuple[Tuple[int, ...], int, str]:
    """1.2.10 > 1.2.9; a pre-release (1.3.0-rc1) sorts before its release (1.3.0); `v` is ignored."""
    core, _, pre = str(version).lstrip("vV").partition("-")
    numbers = tuple(int(x) if x.isdigit() else 0 for x in core.split("."))
    return numbers + (0,) * (4 - len(numbers)), 0 if pre else 1, pre
