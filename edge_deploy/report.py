"""Rollout reports: the human summary and the timeline picture of a rollout_report JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

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


def _engine_gates(robot: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """engine name -> the agent's reference of it (module class, gate: latency, target, resources)."""
    engines = ((robot.get("stage") or {}).get("engines")) or {}
    return {name: ref for name, ref in sorted(engines.items()) if isinstance(ref, dict)}


def module_class(robot: Dict[str, Any]) -> str:
    for ref in _engine_gates(robot).values():
        if ref.get("module_class"):
            return str(ref["module_class"])
    return "unknown"


def latency_series(report: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """engine -> one entry per robot whose gate benchmarked it: robot, module class, the latency
    percentiles and the p99 target of its class; by module class, then robot."""
    out: Dict[str, List[Dict[str, Any]]] = {}
    for name, robot in sorted(report["robots"].items()):
        for engine, ref in _engine_gates(robot).items():
            gate = ref.get("gate") or {}
            if gate.get("latency_ms"):
                out.setdefault(engine, []).append(
                    {
                        "robot": name,
                        "module_class": ref.get("module_class") or "unknown",
                        "latency_ms": gate["latency_ms"],
                        "target_ms": gate.get("p99_target_ms"),
                    }
                )
    for entries in out.values():
        entries.sort(key=lambda e: (e["module_class"], e["robot"]))
    return out


def _resource_windows(robot: Dict[str, Any]) -> List[tuple]:
    """(where, resources verdict) for the soak and each engine gate's benchmark, where sampled."""
    windows = []
    if isinstance(robot.get("resources"), dict):
        windows.append(("health soak", robot["resources"]))
    for engine, ref in _engine_gates(robot).items():
        checked = (ref.get("gate") or {}).get("resources")
        if isinstance(checked, dict):
            windows.append(("%s benchmark" % engine, checked))
    return windows


RESOURCE_HEADER = ("robot", "module class", "window", "samples", "tj peak", "power peak", "RAM headroom",
                   "budget")  # fmt: skip


def _figure(value: Any, unit: str) -> str:
    return "-" if value is None else "%g%s" % (value, unit)


def resource_rows(report: Dict[str, Any]) -> List[tuple]:
    """What tegrastats showed in each window, and the budget's verdict (which budget, by how much)."""
    rows = []
    for name, robot in sorted(report["robots"].items(), key=_in_wave_order):
        for where, checked in _resource_windows(robot):
            if checked.get("breaches"):
                verdict = "; ".join(b["text"] for b in checked["breaches"])
            elif checked.get("unavailable"):
                verdict = checked["unavailable"]
            elif checked.get("budget"):
                verdict = "within budget"
            else:
                verdict = "no budget set"
            rows.append(
                (
                    name,
                    module_class(robot),
                    where,
                    str(checked.get("samples", 0)),
                    _figure(checked.get("tj_temp_peak_c"), " °C"),
                    _figure(checked.get("power_peak_w"), " W"),
                    _figure(checked.get("ram_headroom_min_mb"), " MB"),
                    verdict,
                )
            )
    return rows


def latency_png(report: Dict[str, Any], path: Path) -> Optional[Path]:
    """Per engine, each robot's gate latency (min-max line, p50-p99 bar, p50 dot) grouped by module
    class, with the class's p99 target as a dashed line; None when no gate benchmarked."""
    from edge_deploy.html import pyplot

    series = latency_series(report)
    plt = pyplot()
    if not series or plt is None:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(max(5.5, 4.2 * len(series)), 3.8), squeeze=False)
    for ax, (engine, entries) in zip(axes[0], sorted(series.items())):
        for x, entry in enumerate(entries):
            lat = entry["latency_ms"]
            ax.vlines(x, lat["min"], lat["max"], color="#888888", linewidth=1)
            ax.vlines(x, lat["p50"], lat["p99"], color="#3a7ca5", linewidth=7)
            ax.plot([x], [lat["p50"]], "o", color="#1d4e6b", markersize=4)
            ax.annotate("p50 %.3g ms\np99 %.3g ms" % (lat["p50"], lat["p99"]), (x, lat["p99"]), xytext=(8, 0),
                        textcoords="offset points", fontsize=7, va="center")  # fmt: skip
        classes: Dict[str, List[int]] = {}
        for x, entry in enumerate(entries):
            classes.setdefault(entry["module_class"], []).append(x)
        for klass, xs in classes.items():
            targets = {e["target_ms"] for e in entries if e["module_class"] == klass and e["target_ms"]}
            for target in targets:
                ax.hlines(target, min(xs) - 0.4, max(xs) + 0.4, colors="#d1495b", linestyles="dashed")
                ax.annotate(
                    "%s p99 target %g ms" % (klass, target),
                    (min(xs) - 0.4, target),
                    xytext=(0, 3),
                    textcoords="offset points",
                    fontsize=7,
                    color="#d1495b",
                )
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels(["%s\n%s" % (e["robot"], e["module_class"]) for e in entries], fontsize=7)
        ax.set_yscale("log")  # a target far from the figures leaves both readable
        ax.set_ylabel("latency, ms (log scale)")
        ax.set_title(engine, fontsize=9, loc="left")
    fig.suptitle(
        "engine gate benchmark per robot: bar p50 to p99, line min to max, dashed the p99 target",
        fontsize=9,
        x=0.01,
        ha="left",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


TRACES = (("tj_c", "junction temperature, °C"), ("power_w", "input power, W"),
          ("ram_used_mb", "RAM in use, MB"))  # fmt: skip


def resources_png(report: Dict[str, Any], path: Path) -> Optional[Path]:
    """Thermal, power and memory traces of each robot through each sampled window: its engine gates'
    benchmarks and its health soak; None when nothing was sampled."""
    from edge_deploy.html import pyplot

    traces = [
        ("%s (%s), %s" % (name, module_class(robot), where), checked)
        for name, robot in sorted(report["robots"].items())
        for where, checked in _resource_windows(robot)
        if checked.get("trace")
    ]
    plt = pyplot()
    if not traces or plt is None:
        return None
    fig, axes = plt.subplots(len(TRACES), 1, figsize=(9, 2.2 * len(TRACES)), sharex=True)
    for ax, (key, label) in zip(axes, TRACES):
        for title, checked in traces:
            points = [(p["t"], p[key]) for p in checked["trace"] if p.get(key) is not None]
            if points:
                ax.plot([t for t, _ in points], [v for _, v in points], marker=".", linewidth=1, label=title)
        limit = {"tj_c": "tj_temp_max_c", "power_w": "power_max_w"}.get(key)
        budgets = {c.get("budget", {}).get(limit) for _, c in traces} - {None} if limit else set()
        for value in budgets:
            ax.axhline(value, color="#d1495b", linestyle="dashed", linewidth=1)
        ax.set_ylabel(label, fontsize=8)
    axes[0].legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    axes[-1].set_xlabel("seconds into the window (dashed: the budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
    pictures = 0
    if timeline:
        sections += ["<h2>Timeline</h2>", html.picture("timeline.png", "one bar per task and robot")]
        pictures += 1
        if latency_png(report, path.with_name("latency.png")):
            sections += [
                "<h2>Latency per module class</h2>",
                html.picture(
                    "latency.png", "each robot's engine gate benchmark against its class's p99 target"
                ),
            ]
            pictures += 1
    resources = resource_rows(report)
    if resources:
        sections += [
            "<h2>Resources</h2>",
            '<p class="note">tegrastats through each engine gate\'s benchmark and the health soak, '
            "against the robot's budget (release_resource_budget).</p>",
            html.table(
                RESOURCE_HEADER,
                resources,
                ["failed" if "(over by" in row[-1] or "(short by" in row[-1] else "ok" for row in resources],
            ),
        ]
        if timeline and resources_png(report, path.with_name("resources.png")):
            sections.append(html.picture("resources.png", "thermal, power and memory traces"))
            pictures += 1
    title = "Rollout %s" % (report.get("lease") or {}).get("release", report.get("playbook") or "")
    return html.write_page(path, title.strip(), sections, pictures)


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
