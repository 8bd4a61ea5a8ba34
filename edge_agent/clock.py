"""The robot's clock: is it synchronized, and a bounded wait until it is (before a pull).

Why the agent waits itself rather than leaving it to systemd: the OTA unit is ordered
After=time-sync.target, but that target only waits for a synchronized clock where the image
enables systemd-time-wait-sync.service, which waits without a time limit (an offline robot would
hold every unit ordered after the target forever). So the agent waits, bounded
(time_sync_wait_seconds), and only where a time sync service runs: with none (NTP=no), waiting
cannot help. A pull that goes ahead with an unsynchronized clock is still safe: python-tuf checks
every expiry against it, and a clock that contradicts the signed metadata is its own outcome
(edge_agent/tufclient.py, ClockWrong).
"""

from __future__ import annotations

import math
import os
import subprocess
import time
from typing import Any, Callable, Dict, Optional

SYNC_FLAG = "/run/systemd/timesync/synchronized"  # systemd-timesyncd, once it has synchronized
POLL_SECONDS = 2.0


def sync_state() -> Optional[bool]:
    """True: synchronized (systemd-timesyncd's flag, or the kernel's NTP state as timedated reports
    it, which covers chrony and ntpd too); False: a time sync service runs and has not synchronized
    yet; None: no time sync service runs, or there is no way to ask."""
    if os.path.exists(SYNC_FLAG):
        return True
    try:
        proc = subprocess.run(
            ["timedatectl", "show", "-p", "NTP", "-p", "NTPSynchronized"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    props = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if props.get("NTPSynchronized") == "yes":
        return True
    if props.get("NTP") == "yes":
        return False
    return None


def describe(state: Optional[bool]) -> str:
    if state:
        return "synchronized"
    if state is False:
        return "not synchronized yet, a time sync service runs"
    return "not synchronized, no time sync service runs"


def wait_for_sync(
    max_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
    state: Callable[[], Optional[bool]] = sync_state,
) -> Dict[str, Any]:
    """Wait up to `max_seconds` for a time sync service to synchronize the clock; go on either way."""
    now = state()
    started, polls = time.monotonic(), 0
    while now is False and polls < math.ceil(max(0.0, max_seconds) / POLL_SECONDS):
        sleep(POLL_SECONDS)
        polls += 1
        now = state()
    return {
        "synchronized": now,
        "time_sync": describe(now),
        "waited_seconds": round(time.monotonic() - started, 1) if polls else 0,
    }
