"""The robot app's mission lock: may the robot take an update now?

The app writes a small JSON file (default /run/<app>/mission-lock.json), for example
{"busy": true, "docked": false, "battery": 0.42, "reason": "delivering"}. A missing file means the
robot is free. Push rollouts (the rollout role, through `edge-agent lock`) and pull updates (the
OTA timer) ask the same question here.
"""

from __future__ import annotations

import json
from typing import Optional


def check(path: str, min_battery: float = 0.3, require_docked: bool = False) -> Optional[str]:
    """None when an update may start; else why not."""
    try:
        with open(path, encoding="utf-8") as fh:
            lock = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return "mission lock unreadable (%s): %s" % (path, exc)
    if not isinstance(lock, dict):
        return "mission lock unreadable (%s): not a JSON object" % path
    if lock.get("busy"):
        return str(lock.get("reason") or "busy")
    battery = lock.get("battery")
    if battery is not None:
        try:
            level = float(battery)
        except (TypeError, ValueError):
            return "mission lock unreadable (%s): battery %r is not a number" % (path, battery)
        if level < float(min_battery):
            return "battery %.2f below %.2f" % (level, float(min_battery))
    if require_docked and not lock.get("docked", True):
        return "not docked"
    return None
