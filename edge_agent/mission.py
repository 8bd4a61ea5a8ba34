"""The robot app's mission lock: may the robot take an update, or a reboot, now?

The app writes a small JSON file (default /run/<app>/mission-lock.json), for example
{"busy": true, "docked": false, "battery": 0.42, "reason": "delivering",
 "written_at": "2026-11-27T10:00:00Z"}. A missing file means the robot is free. Every disruptive
action asks the same question here: push rollouts (the rollout role, through `edge-agent lock`),
pull updates (the OTA timer), the power role's reboot into a new power mode, and the reboot that
security updates ask for (the base role's reboot unit).

A lock that is never released must not hold the robot for ever (an app that crashed while busy,
a bug): a lock older than `max_age_hours` is stale. A stale lock holds nothing; the caller goes
ahead and says so in words (`Lock.stale`).

How old a lock is: from its own `written_at` (ISO 8601, or seconds since the epoch), else from
the file's modification time. The written timestamp comes first because it travels with the
content it dates (written in the same atomic replace) and means what the app meant, while a
file's mtime also moves when something merely touches, copies or restores the file. The mtime
keeps apps that write no timestamp from holding a robot for ever. An app whose missions outlast
the age rewrites its lock now and then (same state, new `written_at`): a live app's lock is never
stale. Both clocks are the robot's: an app on a robot without an RTC battery should write its lock
again once the clock is set, or its first lock may look old.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any, Dict, NamedTuple, Optional, Tuple

DEFAULT_MAX_AGE_HOURS = 6.0


class Lock(NamedTuple):
    """What the lock says. `reason`: why the robot may not be disturbed now (None: it may).
    `stale`: a held lock too old to count, in words, for the caller's report (None otherwise)."""

    reason: Optional[str]
    stale: Optional[str] = None

    @property
    def free(self) -> bool:
        return self.reason is None


def read(
    path: str,
    min_battery: float = 0.3,
    require_docked: bool = False,
    max_age_hours: Optional[float] = DEFAULT_MAX_AGE_HOURS,
    now: Optional[float] = None,
) -> Lock:
    """Ask the lock. A lock older than `max_age_hours` (0 or None: never) holds nothing."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
            mtime = os.fstat(fh.fileno()).st_mtime
    except FileNotFoundError:
        return Lock(None)
    except OSError as exc:
        return Lock("mission lock unreadable (%s): %s" % (path, exc))
    lock, reason = _parse(path, text)
    if reason is None:
        reason = _holds(path, lock, min_battery, require_docked)
    if reason is None or not max_age_hours:
        return Lock(reason)
    written = _written_at(lock)
    if written is None:
        written = mtime
    if (time.time() if now is None else now) - written <= float(max_age_hours) * 3600:
        return Lock(reason)
    said = "busy %r" % lock["reason"] if lock.get("busy") and lock.get("reason") else reason
    return Lock(
        None,
        "mission lock stale: %s since %s, older than %g h; proceeding"
        % (said, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(written)), float(max_age_hours)),
    )


def _parse(path: str, text: str) -> Tuple[Dict[str, Any], Optional[str]]:
    try:
        lock = json.loads(text)
    except ValueError as exc:
        return {}, "mission lock unreadable (%s): %s" % (path, exc)
    if not isinstance(lock, dict):
        return {}, "mission lock unreadable (%s): not a JSON object" % path
    return lock, None


def _holds(path: str, lock: Dict[str, Any], min_battery: float, require_docked: bool) -> Optional[str]:
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


def _written_at(lock: Dict[str, Any]) -> Optional[float]:
    """The lock's own timestamp as epoch seconds; None when it has none (or none that reads as a
    time: then the file's mtime dates it, as for an app that writes none)."""
    value = lock.get("written_at")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):  # Python 3.8 (JetPack 5) does not read the Z suffix
        text = text[:-1] + "+00:00"
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    # No zone given: the robot's local time (what naive timestamp() assumes).
    return stamp.timestamp()
