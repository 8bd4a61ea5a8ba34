"""A tiny sd_notify helper for apps run by the release agent's service unit.

    from edge_agent.sdnotify import notify, Watchdog
    notify("READY=1")
    with Watchdog():          # pings WATCHDOG=1 at half the unit's WatchdogSec from a thread
        serve()

Standard library only; a no-op when not started by systemd (no NOTIFY_SOCKET).
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Callable, Optional


def notify(state: str) -> bool:
    """Send one sd_notify datagram (e.g. "READY=1", "WATCHDOG=1", "STATUS=..."); False if no socket."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode("utf-8"))
    return True


def watchdog_interval() -> Optional[float]:
    """Seconds between pings (half of WatchdogSec), or None when the unit has no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2.0


class Watchdog:
    """Ping the watchdog from a daemon thread while `alive()` says the app is healthy.

    `alive` should check the app's own progress (a request loop still turning): a hung app must
    stop pinging so systemd restarts it.
    """

    def __init__(self, alive: Optional[Callable[[], bool]] = None):
        self.alive = alive or (lambda: True)
        self.interval = watchdog_interval()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            if self.alive():
                notify("WATCHDOG=1")

    def __enter__(self) -> Watchdog:
        if self.interval:
            self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
