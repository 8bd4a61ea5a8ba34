"""Container releases on simulated robots over real SSH: the app as an image that runs in each
robot's own container engine (podman's Docker-compatible service inside the robot, as Docker
Engine on a Jetson), through the same engines, health gate, waves and rollback as a native release.

The module starts a fleet of its own, two container-capable robots of two module classes on
JetPack 6 (L4T 36): nx-01 (the canary) and agx-01. It plays one story:
  1. v1.0.0, the native sample app, then v2.0.0, the same app as a container release built from
     examples/container_app on the simulated robots' base image;
  2. v2.1.0, the app file changed: only the changed layer (and the image's small config and
     manifest) crosses the network, the base layer stays on the robot;
  3. v2.2.0, a container that fails its health check: the canary rolls itself back to v2.1.0 and
     the rollout stops before agx-01 switches;
  4. rollback.yml -e release=v1.0.0: both robots run the native release again, no container left.

Short windows through variables (1 s health soak, no wave soak). Every wait is a bounded poll.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_deploy import paths
from edge_deploy.release import bundle
from edge_deploy.sim import Fleet, base_image, docker_engine

from .conftest import FleetRun
from .test_release_fleet import Releases, sh
from .test_rollout_fleet import Rollout, lacking_files, publish, release_bytes, waves

pytest.importorskip("docker")

MIX = ("orin-nx-16gb-jp60", "agx-orin-64gb-jp62")
CANARY, OTHER = "nx-01", "agx-01"
RUN_VARS = {
    "rollout_waves": [1, "100%"],
    # v1.0.0, v2.0.0 and v2.1.0 all stay on the robots until rollback.yml takes them back to v1.0.0
    "release_keep_releases": 4,
}
DATA_MARK = "/opt/edge-app/shared/data/mark.txt"  # the app's data: it must outlive every switch


class ContainerReleases(Releases):
    """The native sample app plus container releases of it, built through the controller's Docker
    Engine API (podman's service) on the simulated robots' base image."""

    def __init__(self, tmp: Path, docker_host: str):
        super().__init__(tmp)
        self.docker_host = docker_host
        self.base = base_image()

    def container(self, tag: str, app_change: str = "", config=None) -> dict:
        models = bundle.load_source_manifest(paths.EXAMPLES / "container_app")["models"]
        for model in models:
            model["golden"]["p99_ms"] = 5000  # two robots and a controller share the machine's cores
        src = bundle.variant(
            str(paths.EXAMPLES / "container_app"),
            str(self.tmp / ("ctx-" + tag)),
            config,
            models=models,
            container={"build_args": {"BASE": self.base}},
        )
        if app_change:  # the app file is the image's top layer: change it, and only it changes
            app = src.parent / "sample_app" / "app.py"
            app.write_text(app.read_text() + app_change)
        built = bundle.build(str(src), tag, str(self.tmp / "build"), self.docker_host)
        self.repo.add_release(built["path"])
        return built


def layers(built: dict) -> dict:
    """The image files of a built release: path -> length."""
    return {f["path"]: f["length"] for f in built["files"] if f["path"].startswith("image/")}


def container_of(fleet: FleetRun, robot: str) -> list:
    """The containers running in the robot's own engine: [(name, release label, mounts)]."""
    names = sh(fleet, robot, "podman ps --format '{{.Names}}'").stdout.split()
    if not names:
        return []
    found = json.loads(sh(fleet, robot, "podman inspect --format json " + " ".join(names)).stdout)
    return [(c["Name"], c["Config"]["Labels"].get("io.edge-deploy.release"), c["Mounts"]) for c in found]


def main_process(fleet: FleetRun, robot: str) -> str:
    """The command line of the app unit's main process."""
    script = "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value edge-app)/cmdline"
    return sh(fleet, robot, script).stdout


def healthz(fleet: FleetRun, robot: str) -> dict:
    url = "http://127.0.0.1:8080/healthz"
    probe = "import urllib.request as u; print(u.urlopen('%s', timeout=10).read().decode())" % url
    proc = sh(fleet, robot, 'python3 -c "%s"' % probe)
    assert proc.returncode == 0, (robot, proc.stderr[-1500:])
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    state = tmp_path_factory.mktemp("container-fleet")
    fleet = Fleet("c%d" % os.getpid(), state_dir=state, inventory_dir=state / "inventory")
    try:
        with docker_engine(state / "engine") as docker_host:
            fleet.up(len(MIX), MIX, containers=(CANARY, OTHER))
            releases = ContainerReleases(tmp_path_factory.mktemp("container-releases"), docker_host)
            publish(releases, "v1.0.0")
            built = {"v2.0.0": releases.container("v2.0.0")}
            built["v2.1.0"] = releases.container("v2.1.0", app_change="\n# v2.1.0: the app changed\n")
            built["v2.2.0"] = releases.container(
                "v2.2.0", app_change="\n# v2.1.0: the app changed\n", config={"fault": "unhealthy"}
            )
            rollout = Rollout(FleetRun(fleet), releases, state)
            rollout.built = built
            yield rollout
    finally:
        fleet.down()


def play(story, playbook: str, *args, **variables):
    return story.play(playbook, *args, **dict(RUN_VARS, **variables))


@pytest.fixture(scope="module")
def native_then_container(story):
    first = play(story, "deploy.yml", release="v1.0.0")
    assert first[0].rc == 0, first[0].stdout[-5000:]
    for robot in (CANARY, OTHER):
        sh(story.fleet, robot, "echo %s > %s" % (robot, DATA_MARK))
    return play(story, "deploy.yml", release="v2.0.0")


def test_native_then_container_release_serves_through_the_robots_engine(story, native_then_container):
    run, report = native_then_container
    assert run.rc == 0, run.stdout[-5000:]
    assert waves(report) == {1: [CANARY], 2: [OTHER]}, waves(report)
    for name, robot in report["robots"].items():
        assert robot["status"] == "ok", (name, robot.get("error"))
        assert robot["release_before"] == "v1.0.0" and robot["release_after"] == "v2.0.0", robot
        assert robot["health"] == "passed", robot
        # the models were v1.0.0's: the image is what crossed the network, and the engine is a hit
        assert robot["bytes_staged"] == release_bytes(story.releases, "v2.0.0", "v1.0.0"), robot
        assert robot["engines"] == {"digits": "hit"}, robot
        now = story.consistent(name)
        assert now["current"] == "v2.0.0" and now["service"]["ActiveState"] == "active", now
        running = container_of(story.fleet, name)
        assert [(n, label) for n, label, _ in running] == [("edge-app", "edge-app:v2.0.0")], running
        mounts = {m["Destination"]: m for m in running[0][2]}
        assert mounts["/opt/edge-app/shared/engines"]["RW"] is False, mounts
        assert mounts["/opt/edge-app/shared/data"]["RW"] is True, mounts
        served = healthz(story.fleet, name)
        # a real inference through the engine the robot built, inside the container
        assert served["ok"] is True and served["release"] == "v2.0.0", served
        assert served["backend"] == "onnxruntime", served
        # the unit's main process is the agent supervising the container, not the app
        main = main_process(story.fleet, name)
        assert "edge-agent.pyz" in main and " exec" in main and "app.py" not in main, main


@pytest.fixture(scope="module")
def update(story, native_then_container):
    assert native_then_container[0].rc == 0
    return play(story, "deploy.yml", release="v2.1.0")


def test_container_update_sends_only_the_changed_layer(story, update):
    run, report = update
    assert run.rc == 0, run.stdout[-5000:]
    old, new = layers(story.built["v2.0.0"]), layers(story.built["v2.1.0"])
    changed = {path: length for path, length in new.items() if path.endswith(".tar") and path not in old}
    kept = {path: length for path, length in new.items() if path.endswith(".tar") and path in old}
    assert len(changed) == 1 and kept, (changed, kept)  # the app layer changed, the base did not
    lacking = lacking_files(story.releases, "v2.1.0", "v1.0.0", "v2.0.0")
    assert {p.split("/", 2)[2] for p in lacking if p.endswith(".tar")} == set(changed), lacking
    layer = sum(changed.values())
    for name, robot in report["robots"].items():
        assert robot["status"] == "ok" and robot["release_after"] == "v2.1.0", (name, robot)
        sent = robot["bytes_staged"]
        assert sent == sum(lacking.values()), (name, sent, lacking)
        # the changed layer plus the image's config and manifest and release.json: a few KiB over it
        assert layer <= sent < layer + 64 * 1024, (name, sent, layer)
        assert sent < sum(kept.values()) // 100, (name, sent, kept)
        print(
            "%s: v2.1.0 staged %d bytes for a changed layer of %d bytes (base layers kept: %d bytes)"
            % (name, sent, layer, sum(kept.values()))
        )
        assert healthz(story.fleet, name)["release"] == "v2.1.0"
        assert [label for _, label, _ in container_of(story.fleet, name)] == ["edge-app:v2.1.0"]


@pytest.fixture(scope="module")
def failing(story, update):
    assert update[0].rc == 0
    return play(story, "deploy.yml", release="v2.2.0")


def test_failing_container_rolls_back_on_the_canary_and_the_rollout_stops(story, failing):
    run, report = failing
    assert run.rc != 0
    assert waves(report) == {1: [CANARY]}, waves(report)
    canary = report["robots"][CANARY]
    assert canary["status"] == "failed" and canary["rolled_back"] is True, canary
    assert canary["health"].startswith("failed") and canary["release_after"] == "v2.1.0", canary
    now = story.consistent(CANARY)
    assert now["current"] == "v2.1.0" and now["service"]["ActiveState"] == "active", now
    assert "v2.2.0" in now["bad"], now
    assert [label for _, label, _ in container_of(story.fleet, CANARY)] == ["edge-app:v2.1.0"]
    assert healthz(story.fleet, CANARY)["release"] == "v2.1.0"
    # the rollout stopped after the canary's wave: the other robot staged v2.2.0 with everyone
    # (before the waves) but never switched to it, and serves v2.1.0 in its container
    other = story.consistent(OTHER)
    assert other["current"] == "v2.1.0" and other["service"]["ActiveState"] == "active", other
    assert "v2.2.0" not in other["bad"], other
    entry = report["robots"][OTHER]
    assert entry.get("health") is None and entry.get("release_after") is None, entry
    assert [label for _, label, _ in container_of(story.fleet, OTHER)] == ["edge-app:v2.1.0"]
    assert healthz(story.fleet, OTHER)["release"] == "v2.1.0"


@pytest.fixture(scope="module")
def back(story, failing):
    return play(story, "rollback.yml", "-e", "release=v1.0.0", rollout_waves=["100%"])


def test_rollback_playbook_returns_to_the_native_release(story, back):
    run, report = back
    assert run.rc == 0, run.stdout[-5000:]
    for name in (CANARY, OTHER):
        assert report["robots"][name]["release_after"] == "v1.0.0", report["robots"][name]
        now = story.consistent(name)
        assert now["current"] == "v1.0.0" and now["service"]["ActiveState"] == "active", now
        assert container_of(story.fleet, name) == [], name  # the container stopped and is gone
        served = healthz(story.fleet, name)
        assert served["ok"] is True and served["release"] == "v1.0.0", served
        main = main_process(story.fleet, name)
        assert "app.py" in main and "edge-agent.pyz" not in main, main  # native again
        # the app's data outlived the container releases and the way back
        assert sh(story.fleet, name, "cat " + DATA_MARK).stdout.strip() == name
