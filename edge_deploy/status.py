"""`edge-deploy status`: which release every robot runs, read from the robots themselves.

Runs playbooks/status.yml (changes nothing) through ansible-runner and turns each robot's local
facts (ansible_local.edge_release from the release agent, ansible_local.jetson from jetson_facts)
into one row: module, JetPack, current and previous release, kept releases, releases marked bad,
the app's service state, the agent's last move and, on robots in pull mode, the last pull's
outcome (updated, up to date, deferred, unreachable, refused, rolled_back, clock; all but the first
two with the robot's words for why). Push and pull fleets read the same way.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

COLUMNS = ("robot", "module", "jetpack", "current", "previous", "kept", "bad", "service", "last", "pull")


def robot_row(name: str, facts: Optional[Dict[str, Any]], reachable: bool = True) -> Dict[str, Any]:
    """One robot's row from its gathered facts (None: nothing was gathered)."""
    local = (facts or {}).get("ansible_local") or {}
    release = local.get("edge_release") or {}
    jetson = local.get("jetson") or {}
    last = release.get("last") or {}
    move = "%s %s -> %s (%s)" % (last.get("op"), last.get("from") or "-", last.get("to"), last.get("result"))
    if last.get("reason") and (last.get("op") == "recover" or last.get("result") != "ok"):
        move += ": " + str(last["reason"])  # an undone, rolled-back or failed move says why
    pulled = release.get("pull") or {}
    pull = None
    if pulled:
        pull = "%s %s at %s" % (pulled.get("result"), pulled.get("tag") or "-", pulled.get("at"))
    if pull and pulled.get("message") and pulled.get("result") not in ("updated", "up to date"):
        pull += ": " + str(pulled["message"])  # a deferred or failed pull says why (a wrong clock, in words)
    return {
        "robot": name,
        "reachable": reachable,
        "module": jetson.get("module_name"),
        "jetpack": jetson.get("jetpack"),
        "current": release.get("current"),
        "previous": release.get("previous"),
        "kept": [entry.get("tag") for entry in release.get("releases") or []],
        "bad": sorted(release.get("bad") or {}),
        "service": (release.get("service") or {}).get("ActiveState"),
        "last": move if last else None,
        "pull": pull,
        "pull_message": pulled.get("message"),
    }


def columns(rows) -> List[str]:
    """The table's columns: `pull` only when some robot has pulled (push fleets never do)."""
    rows = list(rows)
    return [c for c in COLUMNS if c != "pull" or any(row.get("pull") for row in rows)]


def cells(row: Dict[str, Any], shown=COLUMNS) -> List[str]:
    if not row["reachable"]:
        return [row["robot"], "unreachable"] + ["-"] * (len(shown) - 2)
    out = []
    for column in shown:
        value = row[column]
        if isinstance(value, list):
            value = ", ".join(value)
        out.append(str(value) if value not in (None, "") else "-")
    return out


def table(status: Dict[str, Any]):
    from rich.table import Table

    out = Table(title="fleet status (%s)" % status["taken_at"])
    shown = columns(status["robots"].values())
    for column in shown:
        out.add_column(column)
    for row in status["robots"].values():
        out.add_row(*cells(row, shown))
    return out


def fleet_status(inventory: str, limit: Optional[str] = None) -> Dict[str, Any]:
    from edge_deploy.runner import run_playbook

    result = run_playbook(
        "edge_deploy.jetson.status", inventory, limit=limit, quiet=True, title="status"
    )
    robots = {
        name: robot_row(name, result.facts.get(name), reachable=not progress.unreachable)
        for name, progress in sorted(result.hosts.items())
    }
    return {"taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "robots": robots, "rc": result.rc}


def write(status: Dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("%s.json" % status["taken_at"].replace(":", "").replace("-", ""))
    path.write_text(json.dumps(status, indent=2, sort_keys=True) + "\n")
    return path
