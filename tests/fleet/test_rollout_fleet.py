"""Fleet rollouts (deploy.yml, rollback.yml) on six simulated robots of three module classes, over
real SSH, with the run report of every run checked against the robots themselves.

The module starts a fleet of its own and plays one story; each run serves several tests:
  1. v1.0.0 reaches every robot in waves (canary 1, then 50%, then the rest);
  2. v2.0.0 with one robot mission-locked (deferred, keeps v1.0.0) and one robot killed while its
     wave activates (unreachable; the rollout goes on, under the threshold); restarted, the killed
     robot runs one consistent release;
  3. rollback.yml brings the robots that took v2.0.0 back to v1.0.0 and leaves the two that did
     not take it alone; a tag no robot keeps is refused everywhere and changes nothing;
  4. v1.0.0 again changes and sends nothing;
  5. v3.0.0, which fails its health gate and excludes one module class: that class is refused
     before anything is staged, the canary rolls itself back and the rollout stops after wave 1;
  6. v4.0.0 from the repository served over HTTPS (a private CA) on the fleet's network: every robot
     downloads what it lacks itself, and the controller sends none of the release's bytes.

Short windows through variables (1 s health soak, no wave soak, 1 s mission-lock retries). Every
wait is a bounded poll, never a timed assertion.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from edge_deploy.release import bundle
from edge_deploy.sim import DEFAULT_MIX, Fleet, controller_address, podman
from tests.repo import REPO
from tests.tls import ServedRepository

from .conftest import FleetRun
from .test_release_fleet import AGENT, CONFIG, Releases, sh, wait_for

APP = "edge-app"
INCOMING = "/var/lib/edge-agent/edge-app/incoming/targets/edge-app"
LOCK_FILE = "/run/edge-app/mission-lock.json"
RUN_VARS = {
    "rollout_waves": [1, "50%", "100%"],
    "rollout_wave_soak_seconds": 0,
    "rollout_mission_lock_retries": 2,
    "rollout_mission_lock_delay_seconds": 1,
    "release_health_soak_seconds": 1,
    "release_health_interval_seconds": 0.5,
    "release_health_start_timeout_seconds": 30,
    # the robot killed mid-wave keeps its rollout lease (unreachable, it cannot be released): it
    # expires before the rollouts after it
    "rollout_lease_ttl_seconds": 30,
}
# Inventory order (nano, nx, agx) makes the waves nano-01 | nano-02 nx-01 nx-02 | agx-01 agx-02;
# test_good_release_reaches_every_robot_in_waves checks that against the report.
LOCKED = "agx-02"  # mission-locked in the last wave during v2.0.0
KILLED = "nx-01"  # killed while its wave (the second) activates v2.0.0
REFUSED_CLASS = "agx_orin"  # v3.0.0 does not support it


class Rollout:
    def __init__(self, fleet: FleetRun, releases: Releases, tmp: Path):
        self.fleet = fleet
        self.releases = releases
        self.tmp = tmp
        self.runs = 0

    @property
    def robots(self) -> list:
        return sorted(self.fleet.robots)

    def play(self, playbook: str, *args: str, **variables):
        """Run a playbook with the short windows; return (run, report.json of that run)."""
        self.runs += 1
        reports = self.tmp / ("reports-%d" % self.runs)
        values = dict(RUN_VARS, release_repository=str(self.releases.repo.repo))
        values.update(variables)
        vars_file = self.tmp / ("vars-%d.json" % self.runs)
        vars_file.write_text(json.dumps(values))
        saved = os.environ.get("EDGE_ROLLOUT_REPORT_DIR")
        os.environ["EDGE_ROLLOUT_REPORT_DIR"] = str(reports)
        try:
            run = self.fleet.playbook(playbook, "-e", "@%s" % vars_file, *args)
        finally:
            if saved is None:
                os.environ.pop("EDGE_ROLLOUT_REPORT_DIR")
            else:
                os.environ["EDGE_ROLLOUT_REPORT_DIR"] = saved
        found = sorted(reports.glob("*/report.json"))
        assert len(found) == 1, "no run report from %s:\n%s" % (playbook, run.stdout[-3000:])
        report = json.loads(found[0].read_text())
        assert (found[0].parent / "summary.txt").is_file()
        return run, report

    def status(self, robot: str) -> dict:
        proc = self.fleet.exec(robot, *AGENT, "--config", CONFIG, "--json", "status")
        lines = proc.stdout.strip().splitlines()
        assert lines, "agent status on %s printed nothing: %s" % (robot, proc.stderr[-1500:])
        return json.loads(lines[-1])

    def statuses(self) -> dict:
        return {robot: self.status(robot) for robot in self.robots}

    def consistent(self, robot: str) -> dict:
        """Everything that names the live release on the robot names the same one."""
        now = self.status(robot)
        link = sh(self.fleet, robot, "readlink /opt/edge-app/current").stdout.strip()
        env = sh(self.fleet, robot, "systemctl show -p Environment --value edge-app").stdout
        active = json.loads(sh(self.fleet, robot, "cat /opt/edge-app/shared/engines/active.json").stdout)
        state = json.loads(sh(self.fleet, robot, "cat /opt/edge-app/state.json").stdout)
        tag = now["current"]
        assert link == "releases/%s" % tag, (robot, link, now)
        assert "EDGE_RELEASE=%s " % tag in env + " ", (robot, env, now)
        assert active["release"] == tag, (robot, active, now)
        assert state.get("current") == tag and not state.get("pending"), (robot, state)
        return now


def publish(releases: Releases, tag: str, **kwargs) -> None:
    """The sample app with a loose latency target: six robots share the test machine's cores, and
    a p99 gate failing under that load is not what these tests look at."""
    models = bundle.load_source_manifest(REPO / "examples" / "sample_app")["models"]
    for model in models:
        model["golden"]["p99_ms"] = 5000
    releases.publish(tag, models=models, **kwargs)


def lacking_files(releases: Releases, tag: str, *kept: str) -> dict:
    """The signed files of `tag` (target path -> length) whose content none of the `kept` releases
    holds: what a robot that keeps them lacks."""
    targets = json.loads((Path(releases.repo.repo) / "metadata" / "targets.json").read_text())["signed"]
    files: dict = {tag: []}
    for path, target in targets["targets"].items():
        _, release, _ = path.split("/", 2)
        files.setdefault(release, []).append((path, target["hashes"]["sha256"], target["length"]))
    held = {digest for release in kept for _, digest, _ in files[release]}
    return {path: length for path, digest, length in files[tag] if digest not in held}


def release_bytes(releases: Releases, tag: str, *kept: str) -> int:
    """The bytes of `tag` whose content none of the `kept` releases holds (what a robot lacks)."""
    return sum(lacking_files(releases, tag, *kept).values())


def waves(report: dict) -> dict:
    found: dict = {}
    for name, robot in report["robots"].items():
        if robot.get("wave"):
            found.setdefault(robot["wave"], []).append(name)
    return {wave: sorted(names) for wave, names in sorted(found.items())}


@pytest.fixture(scope="module")
def rollout(tmp_path_factory):
    state = tmp_path_factory.mktemp("rollout-fleet")
    fleet = Fleet("r%d" % os.getpid(), state_dir=state, inventory_dir=state / "inventory")
    try:
        fleet.up(6, DEFAULT_MIX, timeout=300)  # six robots booting at once on a shared machine
        releases = Releases(tmp_path_factory.mktemp("rollout-releases"))
        publish(releases, "v1.0.0")
        publish(releases, "v2.0.0", config={"golden_index": 1})
        yield Rollout(FleetRun(fleet), releases, state)
    finally:
        fleet.down()


@pytest.fixture(scope="module")
def first(rollout):
    return rollout.play("deploy.yml", release="v1.0.0")


def test_good_release_reaches_every_robot_in_waves(rollout, first):
    run, report = first
    assert run.rc == 0, run.stdout[-5000:]
    for robot, now in rollout.statuses().items():
        assert now["current"] == "v1.0.0" and now["service"]["ActiveState"] == "active", (robot, now)
    assert waves(report) == {1: ["nano-01"], 2: ["nano-02", "nx-01", "nx-02"], 3: ["agx-01", "agx-02"]}
    full = release_bytes(rollout.releases, "v1.0.0")
    for name, robot in report["robots"].items():
        assert robot["status"] == "ok", (name, robot.get("error"))
        assert robot["release_before"] is None and robot["release_after"] == "v1.0.0", (name, robot)
        assert robot["bytes_staged"] == full, (name, robot["bytes_staged"], full)
        assert robot["engines"] == {"digits": "built"}, (name, robot["engines"])
        # the engine the app loads is the one the trt_engine build reported and gated
        loaded = json.loads(sh(rollout.fleet, name, "cat /opt/edge-app/shared/engines/active.json").stdout)
        assert loaded["engines"]["digits"]["fingerprint"] == robot["engine_fingerprints"]["digits"], name
        assert loaded["engines"]["digits"]["artifact"].startswith("/var/lib/edge-deploy/engines/digits/")
        assert robot["health"] == "passed" and robot["activation_s"] > 0, (name, robot)
        assert robot["timings"]["total"] > 0 and "Activate in waves" in robot["timings"], robot["timings"]
    summary = (Path(rollout.tmp) / "reports-1").glob("*/summary.txt")
    text = next(summary).read_text()
    assert "nano-01" in text and "updated" in text, text


@pytest.fixture(scope="module")
def second(rollout, first):
    """v2.0.0 with LOCKED busy on a mission and KILLED killed while its wave activates."""
    assert first[0].rc == 0
    lock = json.dumps({"busy": True, "reason": "delivering"})
    sh(rollout.fleet, LOCKED, "mkdir -p /run/edge-app && printf '%%s' '%s' > %s" % (lock, LOCK_FILE))
    outcome: dict = {}
    worker = threading.Thread(
        target=lambda: outcome.update(result=rollout.play("deploy.yml", release="v2.0.0")), daemon=True
    )
    worker.start()
    container = rollout.fleet.robots[KILLED].container
    probe = (
        "readlink /opt/edge-app/current; "
        "pgrep -f '[e]dge-agent.pyz .*activate --tag v2.0.0' >/dev/null && echo activating"
    )
    # The agent switched the robot to v2.0.0 and is still in its health gate: pull the plug.
    mid_gate = False
    for _ in range(3000):
        if not worker.is_alive():
            break
        out = sh(rollout.fleet, KILLED, probe).stdout
        if "releases/v2.0.0" in out and "activating" in out:
            podman("kill", container)
            mid_gate = True
            break
    worker.join(timeout=900)
    assert not worker.is_alive() and "result" in outcome
    sh(rollout.fleet, LOCKED, "rm -f " + LOCK_FILE)
    run, report = outcome["result"]
    return run, report, mid_gate


def test_mission_locked_robot_is_deferred_and_keeps_its_release(rollout, second):
    _, report, _ = second
    robot = report["robots"][LOCKED]
    assert robot["deferred"] == "delivering", robot
    assert robot["status"] == "ok" and robot["stats"]["failures"] == 0, robot
    now = rollout.status(LOCKED)
    assert now["current"] == "v1.0.0" and now["service"]["ActiveState"] == "active", now
    # staged while the old release kept serving, so it can be activated later
    assert "v2.0.0" in [r["tag"] for r in now["releases"]]


def test_robot_killed_in_its_wave_fails_then_runs_one_release(rollout, second):
    run, report, mid_gate = second
    assert mid_gate, "the probe never saw %s switched to v2.0.0 mid-gate:\n%s" % (KILLED, run.stdout[-3000:])
    assert run.rc != 0
    assert report["robots"][KILLED]["status"] == "unreachable", report["robots"][KILLED]
    assert run.recap[KILLED]["unreachable"] == 1
    # one of six is under the 20% threshold: the rollout went on to the last wave
    assert report["stopped"] is None, report["stopped"]
    for robot in ("nano-01", "nano-02", "nx-02", "agx-01"):
        now = rollout.status(robot)
        assert now["current"] == "v2.0.0" and now["service"]["ActiveState"] == "active", (robot, now)
        assert report["robots"][robot]["release_after"] == "v2.0.0"
        # only what v2.0.0 changed crossed the network (its config and its release.json)
        sent = release_bytes(rollout.releases, "v2.0.0", "v1.0.0")
        assert 0 < sent < release_bytes(rollout.releases, "v2.0.0") // 10, sent
        assert report["robots"][robot]["bytes_staged"] == sent, (robot, report["robots"][robot])
        assert report["robots"][robot]["engines"] == {"digits": "hit"}, report["robots"][robot]
    podman("start", rollout.fleet.robots[KILLED].container)

    def booted():
        state = rollout.fleet.exec(KILLED, "systemctl", "is-active", "edge-app").stdout.strip()
        return state == "active"

    wait_for(booted, "%s's app to be active after the restart" % KILLED, attempts=180, delay=1)
    now = rollout.consistent(KILLED)
    # The killed activation never passed its gate: the robot went back to the release that did.
    assert now["current"] == "v1.0.0", now
    # Its gate never ran: not marked bad, the next rollout or pull may try it again.
    assert "v2.0.0" not in now["bad"], now
    assert now["last"]["op"] == "recover" and now["last"]["to"] == "v1.0.0", now
    assert now["last"]["reason"].endswith("v2.0.0 may be tried again"), now["last"]
    health = json.loads(sh(rollout.fleet, KILLED, "curl -sf http://127.0.0.1:8080/healthz").stdout)
    assert health["release"] == "v1.0.0", health


@pytest.fixture(scope="module")
def rolled_back(rollout, second):
    took = [r for r, now in rollout.statuses().items() if now["current"] == "v2.0.0"]
    assert sorted(took) == ["agx-01", "nano-01", "nano-02", "nx-02"]
    run, report = rollout.play("rollback.yml", rollout_waves=["100%"])
    return took, run, report


def test_rollback_returns_robots_to_the_previous_tag(rollout, rolled_back):
    took, run, report = rolled_back
    assert run.rc == 0, run.stdout[-4000:]
    for robot in took:
        now = rollout.consistent(robot)
        assert now["current"] == "v1.0.0" and now["service"]["ActiveState"] == "active", (robot, now)
        entry = report["robots"][robot]
        assert entry["release_before"] == "v2.0.0" and entry["release_after"] == "v1.0.0", entry
        assert entry["rolled_back"] is True
    # the deferred robot and the one that went back by itself never ran v2.0.0: left as they are
    for robot in (LOCKED, KILLED):
        entry = report["robots"][robot]
        assert entry["status"] == "ok" and entry["rolled_back"] is False, entry
        assert entry["note"] == "runs v1.0.0, not v2.0.0: left as it is", entry
        assert rollout.status(robot)["current"] == "v1.0.0"
        assert run.changed()[robot] == 0, run.changed()


def test_rollback_to_a_tag_not_kept_fails_and_changes_nothing(rollout, rolled_back):
    before = rollout.statuses()
    # one batch: Ansible ends a serial play at the first batch whose robots all failed
    run, report = rollout.play("rollback.yml", "-e", "release=v0.9.0", rollout_waves=["100%"])
    assert run.rc != 0
    assert "does not keep release v0.9.0" in run.stdout, run.stdout[-3000:]
    assert "Nothing was changed" in run.stdout
    assert set(run.changed().values()) == {0}, run.changed()
    after = rollout.statuses()
    for robot in rollout.robots:
        keep = ("current", "previous", "releases", "last")
        assert {k: after[robot][k] for k in keep} == {k: before[robot][k] for k in keep}, robot
        assert report["robots"][robot]["status"] == "failed"


def test_same_tag_again_changes_and_sends_nothing(rollout, rolled_back):
    run, report = rollout.play("deploy.yml", release="v1.0.0")
    assert run.rc == 0, run.stdout[-4000:]
    assert run.changed() == {robot: 0 for robot in rollout.robots}, run.stdout[-4000:]
    for name, robot in report["robots"].items():
        assert robot["bytes_staged"] == 0 and robot["staged"] is False, (name, robot)
        assert robot["engines"] == {"digits": "hit"}, robot
        assert robot["release_before"] == robot["release_after"] == "v1.0.0", robot
        assert robot["health"] == "not run (already current)", robot  # no restart, no soak
        assert not robot.get("deferred"), robot


def test_check_mode_says_what_would_move_and_changes_nothing(rollout, rolled_back):
    def held(robot):
        return sh(rollout.fleet, robot, "ls %s; ls /opt/edge-app/releases" % INCOMING).stdout

    before = rollout.statuses()
    files = {robot: held(robot) for robot in rollout.robots}
    run, _ = rollout.play("deploy.yml", "--check", release="v2.0.0")
    assert run.rc == 0, run.stdout[-4000:]
    for robot in rollout.robots:
        kept = "v2.0.0" in [r["tag"] for r in before[robot]["releases"]]
        stage = "" if kept else "stage v2.0.0 and "
        said = "%s: would %sswitch %s -> v2.0.0" % (robot, stage, before[robot]["current"])
        assert said in run.stdout, (said, run.stdout[-4000:])
    after = rollout.statuses()
    keep = ("current", "previous", "releases", "last")
    for robot in rollout.robots:
        assert {k: after[robot][k] for k in keep} == {k: before[robot][k] for k in keep}, robot
        assert held(robot) == files[robot], robot


@pytest.fixture(scope="module")
def bad(rollout, rolled_back):
    publish(
        rollout.releases,
        "v3.0.0",
        config={"fault": "unhealthy"},
        compatible={"jetpack_min": "5.1", "jetpack_max": "6.2", "modules": ["orin_nano", "orin_nx"]},
    )
    before = rollout.statuses()
    run, report = rollout.play("deploy.yml", release="v3.0.0")
    return before, run, report


def test_incompatible_robots_are_refused_before_staging(rollout, bad):
    _, run, report = bad
    assert run.rc != 0
    refused = [r for r in rollout.robots if r.startswith("agx-")]
    for robot in refused:
        assert "cannot take edge-app v3.0.0" in report["robots"][robot]["error"], report["robots"][robot]
        assert "Nothing was staged" in report["robots"][robot]["error"]
        files = sh(rollout.fleet, robot, "find %s -path '*v3.0.0*' -type f | wc -l" % INCOMING).stdout
        assert files.strip() == "0", (robot, files)
        assert "v3.0.0" not in [r["tag"] for r in rollout.status(robot)["releases"]]
    sent = release_bytes(rollout.releases, "v3.0.0", "v1.0.0", "v2.0.0")
    for robot in set(rollout.robots) - set(refused):
        assert report["robots"][robot]["bytes_staged"] == sent, (robot, report["robots"][robot])


def test_release_failing_health_on_the_canary_stops_after_wave_one(rollout, bad):
    before, run, report = bad
    # The canary is the whole first wave: Ansible ends the play when a batch has no robot left
    # (with a larger first wave, threshold.yml stops it: "the canary wave failed").
    assert run.rc != 0
    assert waves(report)[1] == ["nano-01"], waves(report)
    canary = report["robots"]["nano-01"]
    assert canary["status"] == "failed" and canary["rolled_back"] is True, canary
    assert canary["health"].startswith("failed") and canary["release_after"] == "v1.0.0", canary
    now = rollout.consistent("nano-01")
    assert now["current"] == "v1.0.0" and now["service"]["ActiveState"] == "active", now
    assert "v3.0.0" in now["bad"], now
    for robot in set(rollout.robots) - {"nano-01"}:
        now = rollout.status(robot)
        assert now["current"] == before[robot]["current"] == "v1.0.0", (robot, now)
        assert now["service"]["ActiveState"] == "active", (robot, now)
        assert now["last"] == before[robot]["last"] and "v3.0.0" not in now["bad"], (robot, now)
        entry = report["robots"][robot]
        assert entry.get("health") is None and entry.get("release_after") is None, (robot, entry)


@pytest.fixture(scope="module")
def fetched(rollout, bad, tmp_path_factory):
    """v4.0.0 (a config change) rolled out from the repository served over HTTPS on the fleet's
    network, with a certificate from a private CA: the robots fetch it themselves."""
    publish(rollout.releases, "v4.0.0", config={"golden_index": 2})
    repo = Path(rollout.releases.repo.repo)
    served = ServedRepository(repo, tmp_path_factory.mktemp("fetch-tls"), host=controller_address())
    try:
        run, report = rollout.play(
            "deploy.yml",
            release="v4.0.0",
            release_repository=served.url,
            release_trusted_root=str(repo / "metadata" / "1.root.json"),
            release_pull_ca_certificate=str(served.ca_file),
        )
        seen = list(served.server.seen)
    finally:
        served.close()
    return run, report, seen


def test_robots_fetch_the_release_from_an_https_repository(rollout, fetched):
    run, report, seen = fetched
    assert run.rc == 0, run.stdout[-5000:]
    lacking = release_bytes(rollout.releases, "v4.0.0", "v1.0.0")
    new_files = {"/targets/" + path for path in lacking_files(rollout.releases, "v4.0.0", "v1.0.0")}
    assert "/targets/edge-app/v4.0.0/release.json" in new_files and len(new_files) >= 2, new_files
    controller, fetched_by = controller_address(), {}
    for client, path in seen:
        if path.startswith("/targets/") and client != controller:  # the controller reads the manifest
            fetched_by.setdefault(client, set()).add(path)
    # each robot (one address each) downloaded exactly the files it lacked, the model not among them
    assert len(fetched_by) == len(rollout.robots), fetched_by
    assert all(paths == new_files for paths in fetched_by.values()), (fetched_by, new_files)
    for name, robot in report["robots"].items():
        assert robot["status"] == "ok", (name, robot.get("error"))
        assert robot["bytes_from_controller"] == 0, (name, robot)
        assert robot["bytes_staged"] == lacking, (name, robot["bytes_staged"], lacking)
        assert robot["engines"] == {"digits": "hit"}, (name, robot["engines"])  # built with v1.0.0
        assert robot["health"] == "passed" and robot["release_after"] == "v4.0.0", (name, robot)
        now = rollout.consistent(name)
        assert now["current"] == "v4.0.0" and now["service"]["ActiveState"] == "active", (name, now)
        copied = sh(rollout.fleet, name, "find %s -path '*v4.0.0*' -type f | wc -l" % INCOMING).stdout
        assert copied.strip() == "0", (name, "the controller copied files of v4.0.0", copied)
