"""The health gate: the service is up, its health check passes at every probe of the soak window
(and the service did not restart meanwhile), then golden-input inference through engine_builder
matches the expected outputs within tolerance and meets the latency target.

Every loop is bounded in count and in time.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional

from edge_agent.systemd import Systemd

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
) -> Dict[str, Any]:
    """Wait for the unit to come up, then soak. Returns {"passed", "reason", "probes", ...}."""
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
    # 2) soak: every probe passes and the service does not restart
    probes = max(1, math.ceil(conf["soak_seconds"] / interval))
    for n in range(probes):
        sleep(interval)
        state = systemd.show(unit)
        if state.get("ActiveState") != "active":
            return _result(
                False,
                "%s went %s/%s during the soak window"
                % (unit, state.get("ActiveState"), state.get("SubState")),
                started,
                n,
            )
        if int(state.get("NRestarts") or 0) != baseline:
            return _result(False, "%s restarted during the soak window" % unit, started, n)
        failure = probe(check, cwd, conf["timeout_seconds"])
        if failure is not None:
            return _result(False, "health check failed during the soak window: %s" % failure, started, n)
    return _result(True, None, started, probes)


def _result(passed: bool, reason: Optional[str], started: float, probes: int) -> Dict[str, Any]:
    return {
        "passed": passed,
        "reason": reason,
        "probes": probes,
        "seconds": round(time.monotonic() - started, 2),
    }


def golden_gate(
    python: str,
    pythonpath: str,
    release_dir: str,
    models: List[Dict[str, Any]],
    engines: Dict[str, Any],
    timeout: float,
) -> Dict[str, Any]:
    """For each model with golden inputs: engine_builder compare (tolerance) and bench (p99 latency)."""
    results: Dict[str, Any] = {}
    env = dict(os.environ, PYTHONPATH=pythonpath)
    for model in models:
        golden = model.get("golden")
        engine = engines.get(model["name"])
        if not golden or not engine:
            continue
        samples = os.path.join(release_dir, golden["samples"])
        row: Dict[str, Any] = {}
        compare = [
            python,
            "-m",
            "engine_builder",
            "compare",
            engine["artifact"],
            "--backend",
            engine["backend"],
            "--onnx",
            os.path.join(release_dir, model["onnx"]),
            "--samples",
            samples,
            "--json",
            "--quiet",
        ]
        if golden.get("max_abs_error") is not None:
            compare += ["--max-abs-error", str(golden["max_abs_error"])]
        if golden.get("max_top1_disagreement") is not None:
            compare += ["--max-top1-disagreement", str(golden["max_top1_disagreement"])]
        row["compare"] = _engine_builder(compare, env, timeout)
        if golden.get("p99_ms") is not None:
            bench = [
                python,
                "-m",
                "engine_builder",
                "bench",
                engine["artifact"],
                "--backend",
                engine["backend"],
                "--samples",
                samples,
                "--p99-ms",
                str(golden["p99_ms"]),
                "--warmup",
                "5",
                "--iterations",
                str(int(golden.get("iterations", 50))),
                "--json",
                "--quiet",
            ]
            row["bench"] = _engine_builder(bench, env, timeout)
        row["passed"] = all(part.get("ok") for part in (row.get("compare"), row.get("bench")) if part)
        results[model["name"]] = row
    failures = ["%s: %s" % (name, _why(row)) for name, row in sorted(results.items()) if not row["passed"]]
    return {"passed": not failures, "reason": "; ".join(failures) or None, "models": results}


def _engine_builder(argv: List[str], env: Dict[str, str], timeout: float) -> Dict[str, Any]:
    try:
        proc = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "error": {"message": str(exc)}}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {
            "ok": False,
            "error": {
                "message": "engine_builder exited %d: %s"
                % (proc.returncode, (proc.stderr or proc.stdout).strip()[-400:])
            },
        }


def _why(row: Dict[str, Any]) -> str:
    reasons = []
    for part in ("compare", "bench"):
        result = row.get(part)
        if result and not result.get("ok"):
            reasons.append("%s: %s" % (part, (result.get("error") or {}).get("message", "failed")))
    return "; ".join(reasons)
