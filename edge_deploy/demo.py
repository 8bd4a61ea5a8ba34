"""The main job on the simulated fleet: start it, converge it, report."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from edge_deploy import paths
from edge_deploy.runner import run_playbook, wide_console
from edge_deploy.sim import Fleet, SimError

COLUMNS = ("module_name", "l4t", "jetpack", "tensorrt", "python", "supported")


def engine_reports(robot: str) -> dict:
    """The trt_engine reports the run left on the controller for one robot, by model name."""
    folder = paths.REPORTS / robot / "engines"
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def engine_cell(reports: dict) -> str:
    cells = []
    for name, report in reports.items():
        how = "cached" if report.get("cache_hit") else "built"
        p99 = ((report.get("bench") or {}).get("latency_ms") or {}).get("p99")
        latency = " p99 %.2f ms" % p99 if p99 is not None and how == "built" else ""
        cells.append("%s %s/%s %s %s%s" % (name, report.get("backend"), report.get("precision"),
                                          str(report.get("fingerprint"))[:8], how, latency))
    return "; ".join(cells) or "-"


def run_demo(robots: int = 6) -> int:
    from rich.table import Table

    console = wide_console()
    fleet = Fleet("sim")
    started = time.monotonic()
    try:
        with console.status("starting %d simulated Jetsons" % robots):
            fleet.up(robots)
    except SimError as exc:
        console.print("[red]error:[/red] %s" % exc)
        return 1
    console.print("fleet up: %d robots in %.1f s, inventory %s"
                  % (robots, time.monotonic() - started, fleet.inventory.relative_to(paths.REPO)))

    result = run_playbook(paths.PLAYBOOKS / "site.yml", fleet.inventory,
                          title="site.yml on the simulated fleet")
    report = {"fleet": fleet.name, "playbook": "playbooks/site.yml", "status": result.status,
              "duration_s": round(time.monotonic() - started, 1), "robots": {}}
    table = Table(title="Edge Deploy report: simulated fleet (simulated Jetsons, not device figures)")
    table.add_column("robot")
    for column in COLUMNS:
        table.add_column(column)
    table.add_column("engines (simulated robots: onnxruntime on this CPU)")
    table.add_column("changed")
    for robot in fleet.robots():
        device = result.facts.get(robot.name, {}).get("ansible_local", {}).get("jetson") or {}
        stats = result.hosts.get(robot.name)
        engines = engine_reports(robot.name)
        report["robots"][robot.name] = {"profile": robot.profile, "group": robot.group, "jetson": device,
                                        "engines": engines, "stats": asdict(stats) if stats else None}
        table.add_row(robot.name, *[str(device.get(column, "-")) for column in COLUMNS], engine_cell(engines),
                      str(stats.changed) if stats else "-")
    console.print(table)
    out = paths.REPORTS / "demo"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    console.print("report: %s" % (out / "report.json").relative_to(paths.REPO))
    if not result.ok:
        for host, item in result.hosts.items():
            for message in item.messages:
                console.print("[red]%s[/red]: %s" % (host, message))
        return 1
    return 0
