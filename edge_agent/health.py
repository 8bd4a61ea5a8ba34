"""The service gate: the service is up and its health check passes at every probe of the soak
window (and the service did not restart meanwhile), and the robot stays within its resource budget
while it runs the release (tegrastats sampled through the soak: edge_common.resources). The
engines' own gate (golden parity and
latency) is engine_builder's, run when an engine is built or first used (edge_agent/engines.py).

Every loop is bounded in count and in time.
"""

from __future__ import annotations

import math
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Optional

from edge_agent.systemd import Systemd
from edge_common import resources

SOAK_SAMPLE_MS = 1000  # tegrastats through the soak window

DEFAULTS = {
    "soak_seconds": 30.0,
    "interval_seconds": 2.0,
    "start_timeout_seconds": 60.0,
    "timeout_seconds": 3.0,
}


def settings(manifest_health: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for key, default in DEFAULTS.items():
        value = overrides.get(key)
        if value is None:
            value = manifest_health.get(key, default)
        out[key] = float(value)
    out["interval_seconds"] = max(0.1, out["interval_seconds"])
    return out


def probe(check: Dict[str, Any], cwd: str, timeout: float) -> Optional[str]:
    """Run the release's health check once; None when it passes, else why not."""
    if check.get("http"):
        http = check["http"]
        url = "http://%s:%d%s" % (
            http.get("host", "127.0.0.1"),
            int(http["port"]),
            http.get("path", "/healthz"),
        )
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status != 200:
                    return "%s answered %d" % (url, response.status)
        except urllib.error.HTTPError as exc:
            body = exc.read(300).decode("utf-8", "replace")
            return "%s answered %d: %s" % (url, exc.code, body)
        except (OSError, ValueError) as exc:
            return "%s: %s" % (url, exc)
        return None
    if check.get("command"):
        try:
            proc = subprocess.run(
                check["command"],
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return "health command: %s" % exc
        if proc.returncode != 0:
            return "health command exited %d: %s" % (proc.returncode, proc.stdout.strip()[-300:])
        return None
    return None  # no check: the soak window still watches the service itself


def service_gate(
    systemd: Systemd,
    unit: str,
    check: Dict[str, Any],
    cwd: str,
    conf: Dict[str, float],
    sleep: Callable[[float], None] = time.sleep,
    budget: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Wait for the unit to come up, then soak. Returns {"passed", "reason", "probes", ...} and,
    after a soak, `resources`: what tegrastats saw and the `budget`'s verdict."""
    started = time.monotonic()
    interval = conf["interval_seconds"]
    # 1) up: active and the first health probe passes, within start_timeout
    attempts = math.ceil(conf["start_timeout_seconds"] / interval) + 1
    baseline: Optional[int] = None
    last = "not started"
    for _ in range(attempts):
        state = systemd.show(unit)
        if state.get("ActiveState") == "active":
            failure = probe(check, cwd, conf["timeout_seconds"])
            if failure is None:
                baseline = int(state.get("NRestarts") or 0)
                break
            last = failure
        elif state.get("ActiveState") == "failed":
            return _result(False, "%s failed to start (%s)" % (unit, state.get("Result")), started, 0)
        else:
            last = "%s is %s/%s" % (unit, state.get("ActiveState"), state.get("SubState"))
        if time.monotonic() - started > conf["start_timeout_seconds"]:
            break
        sleep(interval)
    if baseline is None:
        return _result(
            False, "not healthy within %.0f s: %s" % (conf["start_timeout_seconds"], last), started, 0
        )
    # 2) soak: every probe passes, the service does not restart, the robot keeps to its budget
    probes = max(1, math.ceil(conf["soak_seconds"] / interval))
    with resources.Recording(SOAK_SAMPLE_MS) as recording:
        failure = _soak(systemd, unit, check, cwd, conf, sleep, baseline, probes)
    checked = recording.check(budget)
    if failure is not None:
        return _result(False, failure[0], started, failure[1], checked)
    if not checked["passed"]:
        return _result(False, resources.reason(checked) + " during the soak window", started, probes, checked)
    return _result(True, None, started, probes, checked)


def _soak(systemd, unit, check, cwd, conf, sleep, baseline, probes):
    """None when every probe of the soak passed, else (why not, probes done)."""
    for n in range(probes):
        sleep(conf["interval_seconds"])
        state = systemd.show(unit)
        if state.get("ActiveState") != "active":
            why = "%s went %s/%s during the soak window" % (
                unit,
                state.get("ActiveState"),
                state.get("SubState"),
            )
            return why, n
        if int(state.get("NRestarts") or 0) != baseline:
            return "%s restarted during the soak window" % unit, n
        failure = probe(check, cwd, conf["timeout_seconds"])
        if failure is not None:
            return "health check failed during the soak window: %s" % failure, n
    return None


def _result(
    passed: bool,
    reason: Optional[str],
    started: float,
    probes: int,
    checked: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    out = {
        "passed": passed,
        "reason": reason,
        "probes": probes,
        "seconds": round(time.monotonic() - started, 2),
    }
    if checked is not None:
        out["resources"] = checked
    return out
