"""Rollout reports: the human summary and the timeline picture of a rollout_report JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

STATUS_COLOURS = {
    "ok": "#4c9f70",
    "changed": "#3a7ca5",
    "failed": "#d1495b",
    "unreachable": "#2e2e2e",
    "ignored": "#edae49",
}


def _outcome(robot: Dict[str, Any]) -> str:
    if robot.get("deferred"):
        return "deferred"
    if robot.get("rolled_back"):
        return "rolled back"
    if robot["status"] != "ok":
        return robot["status"]
    if robot.get("release_target") and not robot.get("release_after"):
        return "not activated"
    return (
        "updated"
        if robot.get("release_after") and robot.get("release_after") != robot.get("release_before")
        else "unchanged"
    )


HEALTH_WIDTH = 60  # the summary's health column; report.json keeps the whole message


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _in_wave_order(item) -> tuple:
    """Robots by wave, then name; robots in no wave (not activated, refused) last."""
    name, robot = item
    return (robot.get("wave") is None, robot.get("wave") or 0, name)


def _release(robot: Dict[str, Any]) -> str:
    """`v1.0.0 -> v1.1.0`; a robot that rolled back shows the tag it tried and the tag it runs."""
    if robot.get("release_tried"):
        runs = robot.get("release_after") or robot.get("rolled_back_to") or "-"
        return "%s tried, runs %s (rolled back)" % (robot["release_tried"], runs)
    return "%s -> %s" % (robot.get("release_before") or "-", robot.get("release_after") or "-")


def _engines(robot: Dict[str, Any]) -> str:
    """`digits built 3f2a1c9e0b7d`: built or reused, and which engine (its fingerprint)."""
    engines = robot.get("engines") or {}
    fingerprints = robot.get("engine_fingerprints") or {}
    return ", ".join(
        " ".join(
            part
            for part in (
                name,
                v if isinstance(v, str) else "hit" if v else "built",
                (fingerprints.get(name) or "")[:12],
            )
            if part
        )
        for name, v in sorted(engines.items())
    )


def _staged(robot: Dict[str, Any]) -> str:
    """Bytes that reached the robot; "fetched" where the robot downloaded them itself (a repository
    URL) rather than the controller sending them."""
    staged = robot.get("bytes_staged")
    if staged is None:
        return "-"
    fetched = staged and robot.get("bytes_from_controller", staged) < staged
    return "%s B%s" % (staged, " fetched" if fetched else "")


SUMMARY_HEADER = ("robot", "wave", "release", "outcome", "staged", "engines", "health", "time")


def summary_rows(report: Dict[str, Any]) -> List[tuple]:
    """One row per robot, in wave order: the summary's and the HTML page's table."""
    rows = []
    for name, robot in sorted(report["robots"].items(), key=_in_wave_order):
        steps = robot.get("steps") or []
        took = (steps[-1]["end"] - steps[0]["start"]) if steps else 0.0
        rows.append(
            (
                name,
                str(robot.get("wave") or "-"),
                _release(robot),
                _outcome(robot),
                _staged(robot),
                _engines(robot) or "-",
                _short(str(robot.get("health") or "-"), HEALTH_WIDTH),
                "%.1f s" % took,
            )
        )
    return rows


def summary_lines(report: Dict[str, Any]) -> List[str]:
    rows = [SUMMARY_HEADER, *summary_rows(report)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    counts: Dict[str, int] = {}
    for robot in report["robots"].values():
        counts[_outcome(robot)] = counts.get(_outcome(robot), 0) + 1
    lines.append("")
    if report.get("stopped"):
        lines.append(report["stopped"])
    lines.append(
        "%s: %s in %.1f s"
        % (
            report.get("playbook"),
            ", ".join("%d %s" % (n, k) for k, n in sorted(counts.items())),
            report.get("duration_s", 0.0),
        )
    )
    return lines


def timeline_png(report: Dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    robots = sorted(report["robots"].items(), key=_in_wave_order, reverse=True)
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(robots) + 1.6))
    for row, (_name, robot) in enumerate(robots):
        right = 0.0
        for step in robot.get("steps") or []:
            width = max(step["end"] - step["start"], 0.05)
            right = max(right, step["start"] + width)
            ax.barh(
                row,
                width,
                left=step["start"],
                height=0.6,
                color=STATUS_COLOURS.get(step["status"], "#999999"),
                edgecolor="white",
                linewidth=0.3,
            )
        label = _outcome(robot)
        ax.annotate(  # just right of the robot's last bar, whatever the run's length
            label,
            (right, row),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_yticks(range(len(robots)))
    ax.set_yticklabels(
        ["%s (wave %s)" % (name, robot.get("wave") or "-") for name, robot in robots], fontsize=8
    )
    ax.set_xlabel("seconds since the start of %s" % report.get("playbook"))
    ax.set_title("Rollout timeline, one bar per task and robot", fontsize=10, loc="left")
    ax.legend(
        handles=[Patch(color=c, label=s) for s, c in STATUS_COLOURS.items()],
        fontsize=7,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=5,
        frameon=False,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend above the axes included
    plt.close(fig)
    return path


def html_page(report: Dict[str, Any], path: Path, timeline: bool) -> Path:
    """report.html: the robots' table (the summary's), why the rollout stopped, the timeline."""
    from edge_deploy import html

    rows = summary_rows(report)
    classes = ["failed" if row[3] in ("failed", "unreachable", "rolled back") else "ok" for row in rows]
    sections = [
        "<p>%s, started %s, %.1f s. %s %s</p>"
        % (
            html.esc(report.get("playbook")),
            html.esc(report.get("started")),
            report.get("duration_s", 0.0),
            html.link("report.json", "report.json"),
            html.link("summary.txt", "summary.txt"),
        )
    ]
    if report.get("stopped"):
        sections.append('<p class="failed">%s</p>' % html.esc(report["stopped"]))
    sections += ["<h2>Robots</h2>", html.table(SUMMARY_HEADER, rows, classes)]
    if timeline:
        sections += ["<h2>Timeline</h2>", html.picture("timeline.png", "one bar per task and robot")]
    title = "Rollout %s" % (report.get("lease") or {}).get("release", report.get("playbook") or "")
    return html.write_page(path, title.strip(), sections, 1 if timeline else 0)


def render(report_path: str | Path) -> Dict[str, str]:
    """Write summary.txt, timeline.png and report.html beside a report.json; return their paths."""
    report_path = Path(report_path)
    report = json.loads(report_path.read_text())
    summary = report_path.with_name("summary.txt")
    summary.write_text("\n".join(summary_lines(report)) + "\n")
    outputs = {"summary": str(summary)}
    try:
        outputs["timeline"] = str(timeline_png(report, report_path.with_name("timeline.png")))
    except ImportError:
        outputs["timeline"] = "(matplotlib is not installed: no picture)"
    pictured = not outputs["timeline"].startswith("(")
    outputs["html"] = str(html_page(report, report_path.with_name("report.html"), pictured))
    return outputs
