"""How other programs run engine_builder: one contract for the trt_engine action plugin (which runs
it on a robot over Ansible's connection) and the release agent (which runs it as a subprocess).

    argv:   PYTHON -m engine_builder COMMAND ARGS... --json --quiet
    stdout: progress-free; its last line is one JSON object, the envelope
            {"command": ..., "ok": true, ...result}
            or {"command": ..., "ok": false, "error": {kind, message, hint?}}
    exit:   edge_common.exitcodes (0 ok, 1 failed, 2 usage, 3 refused by a gate, 6 missing library)

Standard library only, Python 3.8: the agent imports it on the robot.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Dict, List, Optional

from edge_common import exitcodes


def argv(python: str, command: str, *args: str) -> List[str]:
    return [python, "-m", "engine_builder", command, *[str(a) for a in args], "--json", "--quiet"]


def parse(stdout: str, stderr: str = "", returncode: int = 0, command: str = "") -> Dict[str, Any]:
    """The envelope from a run's output; a run that printed none becomes a failure that carries
    the tail of what it did print (a traceback, a shell error), so a caller always gets one shape."""
    for line in reversed((stdout or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                envelope = json.loads(line)
            except ValueError:
                continue
            if isinstance(envelope, dict):
                if returncode != exitcodes.OK and envelope.get("ok"):
                    envelope = dict(
                        envelope, ok=False, error={"kind": "failed", "message": "exit code %d" % returncode}
                    )
                return envelope
    tail = "\n".join(((stderr or "") + "\n" + (stdout or "")).strip().splitlines()[-25:])
    return {
        "command": command,
        "ok": False,
        "error": {
            "kind": "failed",
            "message": "engine_builder %s exited %s: %s" % (command, returncode, tail),
        },
    }


def message(envelope: Dict[str, Any]) -> str:
    """What went wrong, in one sentence with its hint."""
    error = envelope.get("error") or {}
    text = error.get("message") or "failed"
    return "%s (%s)" % (text, error["hint"]) if error.get("hint") else text


def run(
    python: str, command: str, args: List[str], pythonpath: Optional[str] = None, timeout: float = 3600.0
) -> Dict[str, Any]:
    """Run engine_builder as a subprocess of `python`; always returns an envelope, never raises."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    try:
        proc = subprocess.run(
            argv(python, command, *args),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {
            "command": command,
            "ok": False,
            "error": {
                "kind": "timeout",
                "message": "engine_builder %s timed out after %.0f s" % (command, timeout),
            },
        }
    except OSError as exc:
        return {"command": command, "ok": False, "error": {"kind": "failed", "message": str(exc)}}
    return parse(proc.stdout, proc.stderr, proc.returncode, command)
