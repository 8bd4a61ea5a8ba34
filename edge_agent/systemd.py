"""systemctl, behind a small class so tests can swap it for a fake."""

from __future__ import annotations

import subprocess
from typing import Dict, List

from edge_agent.errors import AgentError

SHOW_PROPERTIES = ("ActiveState", "SubState", "Result", "NRestarts", "MainPID", "ExecMainStatus")


class Systemd:
    def __init__(self, timeout: float = 120.0):
        self.timeout = timeout

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(
                ["systemctl", *args],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AgentError("systemctl %s: %s" % (" ".join(args), exc)) from exc
        if check and proc.returncode != 0:
            raise AgentError(
                "systemctl %s failed (rc=%d): %s" % (" ".join(args), proc.returncode, proc.stderr.strip())
            )
        return proc

    def daemon_reload(self) -> None:
        self._run("daemon-reload")

    def restart(self, unit: str) -> None:
        # A unit that hit its start limit stays failed until reset.
        self._run("reset-failed", unit, check=False)
        self._run("restart", "--no-block", unit)

    def stop(self, unit: str) -> None:
        self._run("stop", unit, check=False)

    def show(self, unit: str) -> Dict[str, str]:
        proc = self._run("show", unit, "--property=" + ",".join(SHOW_PROPERTIES), check=False)
        out: Dict[str, str] = {}
        for line in proc.stdout.splitlines():
            key, _, value = line.partition("=")
            out[key] = value
        return out

    def is_enabled(self, unit: str) -> bool:
        return self._run("is-enabled", "--quiet", unit, check=False).returncode == 0

    def enable(self, units: List[str]) -> None:
        self._run("enable", *units)
