"""The main job on the simulated fleet: start it, converge it, report."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from edge_deploy import paths, status
from edge_deploy.runner import run_playbook, wide_console
from edge_deploy.sim import Fleet, SimError, base_image, docker_engine

COLUMNS = ("module_name", "l4t", "jetpack", "tensorrt", "python", "supported")


def engine_reports(robot: str) -> dict:
    """The trt_engine reports the run left on the controller for one robot, by model name."""
    folder = paths.reports_dir() / robot / "engines"
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def engine_cell(reports: dict) -> str:
    cells = []
    for name, report in reports.items():
        how = "cached" if report.get("cache_hit") else "built"
        p99 = (report.get("latency_ms") or {}).get("p99")
        latency = " p99 %.2f ms" % p99 if p99 is not None and how == "built" else ""
        cells.append(
            "%s %s/%s %s %s%s"
            % (
                name,
                report.get("backend"),
                report.get("precision"),
                str(report.get("fingerprint"))[:8],
                how,
                latency,
            )
        )
    return "; ".join(cells) or "-"


# The demo's releases: two good ones, then one whose health check fails on the robot.
DEMO_RELEASES = (
    ("v1.0.0", {}),
    ("v1.1.0", {"golden_index": 1}),
    ("v1.2.0", {"fault": "unhealthy"}),
)
# The same app as a container release (examples/container_app) on the simulated robots' base image,
# rolled out to the Orin NX robots only: they are the container-capable ones of the demo's fleet.
CONTAINER_RELEASE = "v2.0.0"
CONTAINER_PROFILE = "orin-nx-16gb-jp60"
CONTAINER_GROUP = "orin_nx_robots"
# Short windows so the story runs in minutes (a real fleet keeps the release's own soak).
DEMO_VARS = {
    "rollout_waves": [1, "50%", "100%"],
    "rollout_wave_soak_seconds": 2,
    "release_health_soak_seconds": 4,
    "release_health_interval_seconds": 0.5,
    "rollout_mission_lock_retries": 2,
    "rollout_mission_lock_delay_seconds": 2,
}


def demo_repository(root, releases=DEMO_RELEASES, container: str | None = None) -> str:
    """A signed repository holding the demo releases, or `releases` ((tag, config) pairs of the
    sample app), made once and reused by later runs. With `container` (a tag), also that tag of
    examples/container_app, its image built through podman's Docker Engine API."""
    from edge_deploy.release import bundle
    from edge_deploy.release.repo import ReleaseRepository

    repo = ReleaseRepository(str(root / "repo"), str(root / "keys"))
    if not (root / "repo" / "metadata" / "root.json").exists():
        shutil.rmtree(root, ignore_errors=True)
        repo.init()
    signed = repo.releases().get("edge-app", [])
    for tag, config in releases:
        if tag in signed:
            continue
        src = bundle.variant(str(paths.EXAMPLES / "sample_app"), str(root / "src" / tag), config)
        built = bundle.build(str(src), tag, str(root / "build"))
        repo.add_release(built["path"])
    if container and container not in signed:
        src = bundle.variant(
            str(paths.EXAMPLES / "container_app"),
            str(root / "src" / container),
            container={"build_args": {"BASE": base_image()}},
        )
        with docker_engine(root / "engine") as docker_host:
            built = bundle.build(str(src), container, str(root / "build"), docker_host)
        repo.add_release(built["path"])
        shutil.rmtree(built["path"])  # the repository holds its files now
    return str(root / "repo")


def demo_story(containers: bool) -> list:
    """The rollouts after provisioning: (playbook, extra vars, limit, title, whether the run should
    pass). With `containers`, the container release and the way back end the story."""
    story = [
        ("edge_deploy.jetson.deploy", {"release": "v1.0.0"}, None, "roll out v1.0.0 in waves", True),
        ("edge_deploy.jetson.deploy", {"release": "v1.1.0"}, None, "roll out v1.1.0 in waves", True),
        (
            "edge_deploy.jetson.deploy",
            {"release": "v1.2.0"},
            None,
            "roll out v1.2.0, whose health check fails: the canary rolls itself back and the rollout stops",
            False,
        ),
        ("edge_deploy.jetson.rollback", {}, None, "roll every robot back to the previous tag (v1.0.0)", True),
    ]
    if containers:
        story += [
            (
                "edge_deploy.jetson.deploy",
                {"release": CONTAINER_RELEASE},
                CONTAINER_GROUP,
                "roll out %s, the same app as a container image, to the Orin NX robots (-l %s): "
                "each loads the signed image into its Docker engine and serves the model engine it built"
                % (CONTAINER_RELEASE, CONTAINER_GROUP),
                True,
            ),
            (
                "edge_deploy.jetson.rollback",
                {},
                CONTAINER_GROUP,
                "roll the Orin NX robots back to the native v1.0.0 (-l %s)" % CONTAINER_GROUP,
                True,
            ),
        ]
    return story


def _here(path) -> str:
    """A path as the user would type it from the working directory."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def latest_rollout_summary(folder) -> str:
    found = sorted(folder.glob("*/summary.txt"))
    return found[-1].read_text() if found else ""


def run_demo(robots: int = 6) -> int:
    from rich.table import Table

    console = wide_console()
    fleet = Fleet("sim")
    started = time.monotonic()
    reports = paths.reports_dir() / "demo"
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    # Nested containers need privileged robots: only those that take the container release get them.
    capable = [host for host, profile in fleet.plan(robots) if profile == CONTAINER_PROFILE]
    try:
        with console.status("starting %d simulated Jetsons" % robots):
            fleet.up(robots, containers=capable)
    except SimError as exc:
        console.print("[red]error:[/red] %s" % exc)
        return 1
    console.print(
        "fleet up: %d robots in %.1f s, inventory %s"
        % (robots, time.monotonic() - started, _here(fleet.inventory))
    )

    with console.status("signing the demo's releases (the container image is built once)"):
        repository = demo_repository(
            paths.state_dir() / "releases", container=CONTAINER_RELEASE if capable else None
        )
    # After the demo the mission's own command works as typed against this fleet:
    #   ansible-playbook deploy.yml -l orin_nx_robots -e release=v1.1.0
    fleet.write_vars(
        "demo-releases",
        {"release_repository": repository},
        "the demo's signed repository, so that deploy.yml needs only -e release=TAG",
    )
    tags = [tag for tag, _ in DEMO_RELEASES] + ([CONTAINER_RELEASE] if capable else [])
    console.print("signed releases %s in %s" % (", ".join(tags), _here(repository)))
    # Provisioning builds the first release's engines ahead of its rollout: the rollouts find
    # them in each robot's engine store (one build per model and robot in the whole story).
    result = run_playbook(
        "edge_deploy.jetson.site",
        fleet.inventory,
        title="1/%d provision and build the engines of v1.0.0 (site.yml)"
        % (len(demo_story(bool(capable))) + 1),
        extravars={"release": "v1.0.0", "release_repository": repository},
    )
    report = {"fleet": fleet.name, "status": result.status, "robots": {}, "steps": []}
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
        report["robots"][robot.name] = {
            "profile": robot.profile,
            "group": robot.group,
            "jetson": device,
            "engines": engines,
            "engine_builds": sum(1 for engine in engines.values() if engine.get("built")),
            "stats": asdict(stats) if stats else None,
        }
        table.add_row(
            robot.name,
            *[str(device.get(column, "-")) for column in COLUMNS],
            engine_cell(engines),
            str(stats.changed) if stats else "-",
        )
    console.print(table)
    if not result.ok:
        return _failed(console, result)

    story = demo_story(bool(capable))
    steps = len(story) + 1
    for number, (playbook, extra, limit, title, should_pass) in enumerate(story, start=2):
        title = "%d/%d %s" % (number, steps, title)
        step_reports = reports / ("step-%d" % number)
        step = run_playbook(
            playbook,
            fleet.inventory,
            limit=limit,
            title=title,
            extravars=dict(DEMO_VARS, release_repository=repository, **extra),
            report_dir=step_reports,
        )
        summary = latest_rollout_summary(step_reports)
        for rollout in step_reports.glob("*/report.json"):
            for name, robot in json.loads(rollout.read_text())["robots"].items():
                built = [model for model, how in (robot.get("engines") or {}).items() if how == "built"]
                report["robots"][name]["engine_builds"] += len(built)
        console.print(summary)
        found = sorted(step_reports.glob("*/report.json"))
        report["steps"].append(
            {
                "title": title,
                "status": step.status,
                "summary": summary,
                "report": str(found[-1].relative_to(reports)) if found else None,
            }
        )
        if step.ok != should_pass:
            console.print(
                "[red]%s: expected the run to %s[/red]" % (title, "pass" if should_pass else "stop")
            )
            return _failed(console, step)

    found = status.fleet_status(str(fleet.inventory))
    console.print(status.table(found))
    report["fleet_status"] = found["robots"]
    astray = [name for name, row in found["robots"].items() if row["current"] != "v1.0.0"]
    if astray:
        console.print("[red]not back on v1.0.0: %s[/red]" % ", ".join(astray))
        return 1

    builds = {name: robot["engine_builds"] for name, robot in sorted(report["robots"].items())}
    console.print(
        "engine builds per robot over the whole story (provisioning and every rollout): %s"
        % ", ".join("%s %d" % item for item in builds.items())
    )
    report["duration_s"] = round(time.monotonic() - started, 1)
    out = reports
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    page = demo_page(report, out)
    console.print(
        "report: %s (the story, each rollout's page and timeline; JSON: %s); %.0f s in all"
        % (_here(page), _here(out / "report.json"), report["duration_s"])
    )
    return 0


def demo_page(report: dict, folder: Path) -> Path:
    """report.html in the demo's report folder: the fleet as provisioned, then each step with its
    outcome, a link to its rollout's own page, and its timeline."""
    from edge_deploy import html

    robots = report["robots"]
    took = report.get("duration_s", 0.0)
    intro = "Simulated fleet %s: %d robots, %.0f s in all" % (report["fleet"], len(robots), took)
    intro += " (figures of this machine's CPU, not of a Jetson)."
    sections = [
        "<p>%s %s</p>" % (html.esc(intro), html.link("report.json", "report.json")),
        "<h2>Fleet</h2>",
        html.table(
            ("robot", "profile", "group", "module", "jetpack", "engine builds"),
            [
                (name, r["profile"], r["group"], (r.get("jetson") or {}).get("module_name"),
                 (r.get("jetson") or {}).get("jetpack"), r.get("engine_builds"))
                for name, r in sorted(robots.items())
            ],
        ),
        "<h2>Story</h2>",
    ]  # fmt: skip
    pictures = 0
    for step in report["steps"]:
        sections.append("<h3>%s</h3>" % html.esc(step["title"]))
        if not step.get("report"):
            sections.append('<p class="note">no rollout report (%s)</p>' % html.esc(step["status"]))
            continue
        rollout = Path(step["report"]).parent
        sections.append("<p>%s</p>" % html.link(str(rollout / "report.html"), "this rollout's page"))
        if (folder / rollout / "timeline.png").is_file():
            sections.append(html.picture(str(rollout / "timeline.png"), step["title"]))
            pictures += 1
    return html.write_page(folder / "report.html", "Edge Deploy demo", sections, pictures)


def _failed(console, result) -> int:
    for host, item in result.hosts.items():
        for message in item.messages:
            console.print("[red]%s[/red]: %s" % (host, message))
    return 1
