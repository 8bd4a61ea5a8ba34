"""Rollout benchmark on the simulated fleet (robots on this machine's CPU: never a Jetson figure).

    .venv/bin/python benchmarks/rollout_bench.py [--robots 6,12,24] [--forks 24] [--repeat 3]
                                                 [--out reports/bench]

For each fleet size, on a fleet of its own (`edge-deploy sim`'s robots, fleet name "bench"): start
the robots, provision them and roll out v1.0.0 (not measured), then measure, one after the other:

1. update    deploy.yml v1.0.0 -> v1.1.0 (one config file changed; the engines are cache hits)
2. redeploy  deploy.yml v1.1.0 again (nothing to do)
3. rollback  rollback.yml (back to v1.0.0)
4. baseline  the same update pushed the plain way (benchmarks/plain_push.yml: rsync to
             releases/<tag>, `current` symlink, restart, the same waves and soak)
5. fetch     deploy.yml v1.0.0 -> v1.3.0 (the same kind of change) with release_repository the
             repository's HTTPS URL (served by this machine on the fleet's network): the robots
             download what they lack themselves

with the demo's rollout settings (edge_deploy.demo.DEMO_VARS: waves [1, "50%", "100%"], wave soak
2 s, health soak 4 s). Prints the ratios the rollout is held to and the bytes per robot the
controller sent in each mode, writes rollout_bench.json and rollout_bench.png (time per phase per
robot, the baseline beside it) under --out.

The floor of an update is the sum over its waves of the slowest activation in the wave plus the
wave soak; the app's restart-to-healthy time is measured on one robot (systemctl restart, then
/healthz until it answers healthy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_deploy import paths  # noqa: E402  after sys.path
from edge_deploy.demo import DEMO_RELEASES, DEMO_VARS, demo_repository  # noqa: E402  after sys.path
from edge_deploy.runner import run_playbook  # noqa: E402  after sys.path
from edge_deploy.sim import Fleet, controller_address, machine_turn  # noqa: E402  after sys.path

PLAIN_PUSH = REPO / "benchmarks" / "plain_push.yml"
APP = "edge-app"
GOALS = {
    "update_vs_floor": ("update / floor", "<=", 1.5),
    "baseline_vs_update": ("plain push / update", ">=", 2.0),
    "redeploy_vs_update": ("re-deploy / update", "<=", 0.25),
    "rollback_vs_restarts": ("rollback / (waves x restart-to-healthy)", "<=", 1.5),
}


def load_label() -> str:
    one, five, _ = os.getloadavg()
    return "load average %.2f (1 min), %.2f (5 min) on %d cores" % (one, five, os.cpu_count() or 0)


def newest_report(folder: Path) -> Dict[str, Any]:
    found = sorted(folder.glob("*/report.json"))
    if not found:
        raise SystemExit("no rollout report under %s: did the run start?" % folder)
    return json.loads(found[-1].read_text())


def timed(title: str, playbook, inventory: Path, extravars: Dict[str, Any], report_dir: Path,
          tags: str | None = None) -> Dict[str, Any]:
    """Run one playbook as a user would (progress on screen); wall time, changed, report."""
    started = time.monotonic()
    result = run_playbook(playbook, inventory, extravars=extravars, title=title, report_dir=report_dir,
                          tags=tags)
    seconds = time.monotonic() - started
    if not result.ok:
        raise SystemExit("%s failed (%s): the benchmark measures healthy runs only" % (title, result.status))
    return {
        "seconds": round(seconds, 2),
        "changed": sum(stats.changed for stats in result.hosts.values()),
        "report": newest_report(report_dir),
    }


def floor_seconds(report: Dict[str, Any], wave_soak: float) -> float:
    """The sum over waves of the slowest activation in the wave plus the wave soak."""
    waves: Dict[int, float] = {}
    for robot in report["robots"].values():
        if robot.get("wave") is not None and robot.get("activation_s") is not None:
            waves[robot["wave"]] = max(waves.get(robot["wave"], 0.0), float(robot["activation_s"]))
    return sum(slowest + wave_soak for slowest in waves.values())


def phases(report: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Seconds per play (check, stage, each wave) per robot, from the report's task timeline."""
    out: Dict[str, Dict[str, float]] = {}
    for name, robot in report["robots"].items():
        spans: Dict[str, List[float]] = {}
        for step in robot.get("steps") or []:
            key = step["play"] if step.get("wave") is None else "wave %d" % step["wave"]
            span = spans.setdefault(key, [step["start"], step["end"]])
            span[0], span[1] = min(span[0], step["start"]), max(span[1], step["end"])
        out[name] = {key: round(end - start, 2) for key, (start, end) in spans.items()}
    return out


def restart_to_healthy(fleet: Fleet, tries: int = 3) -> float:
    """Median seconds from `systemctl restart` of the app to its first healthy /healthz, on one robot."""
    from edge_deploy.sim import podman

    probe = (
        "import subprocess, time, urllib.request\n"
        # the runs before restarted the app too: time the restart, not systemd's start limit (burst 3)
        "subprocess.run(['systemctl', 'reset-failed', '%s'], check=False)\n"
        "t0 = time.monotonic()\n"
        # blocks until the new process said READY=1 (Type=notify); the old one answers no more
        "subprocess.run(['systemctl', 'restart', '%s'], check=True)\n"
        "for _ in range(600):\n"
        "    try:\n"
        "        if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200:\n"
        "            break\n"
        "    except OSError:\n"
        "        pass\n"
        "    time.sleep(0.05)\n"
        "else:\n"
        "    raise SystemExit('never healthy')\n"
        "print(time.monotonic() - t0)\n"
    ) % (APP, APP)
    robot = fleet.robots()[0]
    found = [float(podman("exec", "-i", robot.container, "python3", "-", input_text=probe).stdout)
             for _ in range(tries)]
    return statistics.median(found)


# the demo's releases and one more of the same kind of change, for the fetch-mode update
BENCH_RELEASES = (*DEMO_RELEASES, ("v1.3.0", {"golden_index": 2}))


def bytes_per_robot(report: Dict[str, Any], key: str = "bytes_staged") -> float:
    robots = report["robots"].values()
    return sum(int(r.get(key) or 0) for r in robots) / max(1, len(report["robots"]))


def measure(size: int, forks: int, out: Path) -> Dict[str, Any]:
    os.environ["ANSIBLE_FORKS"] = str(forks)
    fleet = Fleet("bench")
    fleet.up(size)
    try:
        repository = demo_repository(paths.state_dir() / "bench-releases", BENCH_RELEASES)
        common = dict(DEMO_VARS, release_repository=repository)
        reports = out / ("rollout-%d" % size)
        inventory = fleet.inventory
        # not measured: provision, v1.0.0 everywhere, the baseline's app set up and on v1.0.0
        timed("provision %d robots and build v1.0.0's engines" % size, "edge_deploy.jetson.site",
              inventory, {"release": "v1.0.0", "release_repository": repository}, reports / "setup")
        timed("deploy v1.0.0", "edge_deploy.jetson.deploy", inventory, dict(common, release="v1.0.0"),
              reports / "setup")
        soak = float(common["rollout_wave_soak_seconds"]) + float(common["release_health_soak_seconds"])
        plain = {"plain_waves": common["rollout_waves"], "plain_soak_seconds": soak}
        timed("baseline set-up", PLAIN_PUSH, inventory,
              dict(plain, plain_tag="v1.0.0", plain_release_dir="%s/targets/%s/v1.0.0" % (repository, APP)),
              reports / "setup")
        runs = {
            "update": timed("update v1.0.0 -> v1.1.0", "edge_deploy.jetson.deploy", inventory,
                            dict(common, release="v1.1.0"), reports / "update"),
            "redeploy": timed("re-deploy v1.1.0", "edge_deploy.jetson.deploy", inventory,
                              dict(common, release="v1.1.0"), reports / "redeploy"),
            "rollback": timed("rollback to v1.0.0", "edge_deploy.jetson.rollback", inventory, common,
                              reports / "rollback"),
            "baseline": timed("plain push v1.0.0 -> v1.1.0", PLAIN_PUSH, inventory,
                              dict(plain, plain_tag="v1.1.0",
                                   plain_release_dir="%s/targets/%s/v1.1.0" % (repository, APP)),
                              reports / "baseline", tags="plain_push"),
        }
        restart = restart_to_healthy(fleet)
        runs["fetch"] = fetch_update(repository, inventory, common, reports / "fetch", out)
    finally:
        fleet.down()
    update = runs["update"]
    floor = floor_seconds(update["report"], float(common["rollout_wave_soak_seconds"]))
    waves = len(common["rollout_waves"])
    return {
        "robots": size,
        "forks": forks,
        "seconds": {name: run["seconds"] for name, run in runs.items()},
        "changed": {name: run["changed"] for name, run in runs.items()},
        "bytes_per_robot": {
            name: bytes_per_robot(runs[name]["report"]) for name in ("update", "redeploy", "fetch")
        },
        "controller_bytes_per_robot": {
            name: bytes_per_robot(runs[name]["report"], "bytes_from_controller")
            for name in ("update", "redeploy", "fetch")
        },
        "floor_s": round(floor, 2),
        "restart_to_healthy_s": round(restart, 2),
        "ratios": {
            "update_vs_floor": round(update["seconds"] / floor, 2) if floor else None,
            "baseline_vs_update": round(runs["baseline"]["seconds"] / update["seconds"], 2),
            "redeploy_vs_update": round(runs["redeploy"]["seconds"] / update["seconds"], 2),
            "rollback_vs_restarts": round(runs["rollback"]["seconds"] / (waves * restart), 2),
        },
        "phases": {name: phases(run["report"]) for name, run in runs.items()},
    }


def fetch_update(repository: str, inventory: Path, common: Dict[str, Any], reports: Path,
                 out: Path) -> Dict[str, Any]:
    """deploy.yml v1.0.0 -> v1.3.0 with the robots fetching from the repository served over HTTPS
    (a private CA made for the run) on the fleet's network."""
    from tests.tls import ServedRepository

    tls = out / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    served = ServedRepository(Path(repository), tls, host=controller_address())
    try:
        return timed("update v1.0.0 -> v1.3.0, robots fetching over HTTPS", "edge_deploy.jetson.deploy",
                     inventory, dict(common, release="v1.3.0", release_repository=served.url,
                                     release_trusted_root="%s/metadata/1.root.json" % repository,
                                     release_pull_ca_certificate=str(served.ca_file)), reports)
    finally:
        served.close()


def median_of(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One result per fleet size from repeated runs: the median of each time and of each ratio (each
    run's ratios are against its own baseline); phases and bytes from the run of median update time."""
    if len(runs) == 1:
        return dict(runs[0], repeats=1)
    by_update = sorted(runs, key=lambda run: run["seconds"]["update"])
    middle = by_update[len(by_update) // 2]

    def med(values):
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 2) if values else None

    return dict(
        middle,
        repeats=len(runs),
        seconds={key: med(run["seconds"][key] for run in runs) for key in middle["seconds"]},
        ratios={key: med(run["ratios"][key] for run in runs) for key in middle["ratios"]},
        floor_s=med(run["floor_s"] for run in runs),
        restart_to_healthy_s=med(run["restart_to_healthy_s"] for run in runs),
        runs=[{"seconds": run["seconds"], "ratios": run["ratios"]} for run in runs],
    )


def growth(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Seconds per added robot between fleet sizes, and the update at 12 over the update at 6."""
    ordered = sorted(results, key=lambda r: r["robots"])
    steps = []
    for small, large in zip(ordered, ordered[1:]):
        extra = large["robots"] - small["robots"]
        steps.append({
            "from": small["robots"],
            "to": large["robots"],
            "seconds_per_added_robot": round(
                (large["seconds"]["update"] - small["seconds"]["update"]) / extra, 2),
        })
    by_size = {r["robots"]: r["seconds"]["update"] for r in ordered}
    return {
        "per_added_robot": steps,
        "update_12_vs_6": round(by_size[12] / by_size[6], 2) if 6 in by_size and 12 in by_size else None,
    }


def verdict(value, op: str, goal: float) -> str:
    if value is None:
        return "n/a"
    met = value <= goal if op == "<=" else value >= goal
    return "met" if met else "NOT met"


def print_table(data: Dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rollout benchmark (simulated robots on %s; %s)" % (data["machine"], data["load"]))
    for column in ("robots", "runs", "update s", "floor s", "re-deploy s", "rollback s", "plain push s",
                   "update fetching s", "bytes/robot (update)", "controller bytes/robot (push / fetch)",
                   *[label for label, _, _ in GOALS.values()]):
        table.add_column(column)
    for result in data["results"]:
        seconds, ratios = result["seconds"], result["ratios"]
        table.add_row(
            str(result["robots"]), "median of %d" % result["repeats"] if result["repeats"] > 1 else "1",
            str(seconds["update"]), str(result["floor_s"]),
            "%s (changed=%d)" % (seconds["redeploy"], result["changed"]["redeploy"]),
            str(seconds["rollback"]), str(seconds["baseline"]), str(seconds["fetch"]),
            "%.0f" % result["bytes_per_robot"]["update"],
            "%.0f / %.0f" % (result["controller_bytes_per_robot"]["update"],
                             result["controller_bytes_per_robot"]["fetch"]),
            *["%s %s %s (%s)" % (ratios[key], op, goal, verdict(ratios[key], op, goal))
              for key, (_, op, goal) in GOALS.items()],
        )
    console = Console(width=200)
    console.print(table)
    grow = data["growth"]
    for step in grow["per_added_robot"]:
        console.print("update: %+.2f s per added robot from %d to %d robots"
                      % (step["seconds_per_added_robot"], step["from"], step["to"]))
    if grow["update_12_vs_6"] is not None:
        console.print("update at 12 robots / update at 6: %.2f (goal <= 1.3: %s)"
                      % (grow["update_12_vs_6"], verdict(grow["update_12_vs_6"], "<=", 1.3)))


def plot(data: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = data["results"]
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 6), squeeze=False)
    for ax, result in zip(axes[0], results):
        runs = ("update", "redeploy", "rollback", "baseline", "fetch")
        keys = sorted({key for run in runs for robot in result["phases"][run].values() for key in robot})
        bottoms = [0.0] * len(runs)
        for key in keys:
            heights = [statistics.mean(robot.get(key, 0.0) for robot in result["phases"][run].values())
                       for run in runs]
            ax.bar(runs, heights, bottom=bottoms, label=key if len(key) <= 40 else key[:39] + "…")
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        ax.plot(runs, [result["seconds"][run] for run in runs], "k_", markersize=30, label="wall time")
        ax.axhline(result["floor_s"], color="grey", linestyle="--", label="floor of an update")
        ax.set_title("%d robots, forks %d" % (result["robots"], result["forks"]))
        ax.set_ylabel("seconds (per robot, mean of each phase)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.08), ncol=2, frameon=False)
    fig.suptitle("Rollout time per phase, simulated robots (not Jetson figures)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robots", default="6,12,24", help="fleet sizes, comma separated (%(default)s)")
    parser.add_argument("--forks", type=int, default=24, help="Ansible forks at every size (%(default)s)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per fleet size, each on a fresh fleet; medians reported (%(default)s)")
    parser.add_argument("--out", type=Path, default=paths.reports_dir() / "bench")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.robots.split(",") if size.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    data: Dict[str, Any] = {
        "machine": "%s, %d cores" % (platform.machine(), os.cpu_count() or 0),
        "load_before": load_label(),
        "goals": {key: {"ratio": label, "op": op, "goal": goal} for key, (label, op, goal) in GOALS.items()},
    }
    with machine_turn():  # after any fleet tests running on this machine
        data["load_before"] = load_label()
        repeats = range(max(1, args.repeat))
        data["results"] = [median_of([measure(size, args.forks, args.out) for _ in repeats])
                           for size in sizes]
    data["load"] = load_label()
    data["growth"] = growth(data["results"])
    (args.out / "rollout_bench.json").write_text(json.dumps(data, indent=2) + "\n")
    plot(data, args.out / "rollout_bench.png")
    print_table(data)
    print("wrote %s and %s" % (args.out / "rollout_bench.json", args.out / "rollout_bench.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
