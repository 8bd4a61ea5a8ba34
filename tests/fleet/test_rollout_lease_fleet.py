"""Two rollouts at once (deploy.yml from two controllers) on three simulated robots over real SSH:
the rollout lease keeps them apart. The module starts a fleet of its own and plays one story:
  1. a controller took every robot's lease for v1.2.0 and died: its leases live on for a few
     seconds, nobody renews them;
  2. alice's rollout of v1.1.0 meets them, waits until they expire, takes them over;
  3. bob's rollout of v1.3.0, started while alice's runs, waits its bounded time and refuses every
     robot, naming alice's run; nothing of v1.3.0 reaches a robot;
  4. alice's rollout completes, every robot on v1.1.0 behind its health gate, and her leases are gone;
  5. bob rolls v1.3.0 out again, now that the robots are free; carol holds one robot's lease when
     rollback.yml runs: that robot is refused naming carol and keeps v1.3.0, the others go back to
     v1.1.0, and the rollback's leases are gone while carol's stays.

Releases are built and rolled out with test_rollout_fleet's helpers (short windows: 1 s health soak,
no wave soak). Every wait is a bounded poll, never a timed assertion.
"""

from __future__ import annotations

import json
import os
import threading

import pytest

from edge_agent.lease import Leases
from edge_deploy.sim import DEFAULT_MIX, Fleet

from .conftest import FleetRun
from .test_release_fleet import Releases, sh, wait_for
from .test_rollout_fleet import Rollout, publish

LEASE = "/var/lib/edge-deploy/lease.json"
# (test_rollout_fleet's windows hold leases for 30 s only; alice holds hers for the whole story)
ALICE = {"rollout_lease_owner": "alice@ctl-1", "rollout_waves": [1, "100%"], "rollout_lease_ttl_seconds": 600}
BOB = {"rollout_lease_owner": "bob@ctl-2", "rollout_waves": [1, "100%"]}


def lease_on(rollout: Rollout, robot: str):
    """The lease on the robot, None when it has none."""
    proc = sh(rollout.fleet, robot, "cat %s 2>/dev/null" % LEASE)
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def incoming(rollout: Rollout, robot: str, tag: str) -> str:
    """How many files of `tag` reached the robot (staging copies them first)."""
    found = "find /var/lib/edge-agent/edge-app/incoming/targets -path '*%s*' -type f | wc -l" % tag
    return sh(rollout.fleet, robot, found).stdout.strip()


@pytest.fixture(scope="module")
def leased(fleet, tmp_path_factory):
    """Three robots of its own (a lease story needs robots no other test touches); asking for the
    session fleet takes this run's turn on the machine (tests/fleet/conftest.py)."""
    state = tmp_path_factory.mktemp("lease-fleet")
    fleet = Fleet("l%d" % os.getpid(), state_dir=state, inventory_dir=state / "inventory")
    try:
        fleet.up(3, DEFAULT_MIX, timeout=300)
        releases = Releases(tmp_path_factory.mktemp("lease-releases"))
        publish(releases, "v1.1.0")
        publish(releases, "v1.3.0", config={"golden_index": 1})
        yield Rollout(FleetRun(fleet), releases, state)
    finally:
        fleet.down()


def hold(leased: Rollout, tmp_path, robots, owner: str, run: str, release: str, ttl: float) -> None:
    """Write a lease of another controller's onto the robots (with the agent's own lease code: the
    robots share this machine's clock)."""
    dead = tmp_path / "lease.json"
    Leases(str(dead)).acquire(owner, run, release, ttl=ttl)
    for robot in robots:
        wrote = leased.fleet.exec(
            robot,
            "sh",
            "-c",
            "mkdir -p %s && cat > %s" % (os.path.dirname(LEASE), LEASE),
            input_text=dead.read_text(),
        )
        assert wrote.returncode == 0, wrote.stderr


@pytest.fixture(scope="module")
def story(leased, tmp_path_factory):
    """A dead controller's leases, then alice's v1.1.0 and, once it holds every robot, bob's v1.3.0:
    two deploy.yml at once."""
    # every robot's lease, taken for v1.2.0 by a controller that then died: live for 8 s more
    hold(leased, tmp_path_factory.mktemp("dead-holder"), leased.robots, "dan@ctl-4", "dead", "v1.2.0", ttl=8)
    saved = os.environ.get("EDGE_ROLLOUT_REPORT_DIR")  # Rollout.play sets it per run
    first: dict = {}
    worker = threading.Thread(
        target=lambda: first.update(result=leased.play("deploy.yml", release="v1.1.0", **ALICE)), daemon=True
    )
    worker.start()
    try:
        wait_for(
            lambda: (
                all((lease_on(leased, r) or {}).get("owner") == "alice@ctl-1" for r in leased.robots)
                or not worker.is_alive()
            ),
            "alice's rollout to hold every robot's lease",
            attempts=240,
            delay=0.5,
        )
        assert worker.is_alive(), "alice's rollout ended before bob's started"
        second = leased.play("deploy.yml", release="v1.3.0", rollout_lease_wait_seconds=3, **BOB)
        alive_after_second = worker.is_alive()
        worker.join(timeout=600)
    finally:
        if saved is None:
            os.environ.pop("EDGE_ROLLOUT_REPORT_DIR", None)
        else:
            os.environ["EDGE_ROLLOUT_REPORT_DIR"] = saved
    assert not worker.is_alive() and "result" in first
    return first["result"], second, alive_after_second


def test_a_dead_holders_leases_expire_and_the_next_rollout_takes_them_over(leased, story):
    (run, report), _, _ = story
    assert run.rc == 0, run.stdout[-5000:]
    for robot in leased.robots:
        entry = report["robots"][robot]
        assert entry["lease_took_over"].startswith("rollout of v1.2.0 by dan@ctl-4 (run dead), expired "), (
            entry
        )


def test_second_rollout_waits_then_refuses_every_robot_naming_the_holder(leased, story):
    (_, alices), (run, report), alive_after_second = story
    assert alive_after_second, "bob's rollout outlasted alice's: nothing was concurrent"
    assert run.rc != 0
    holder = "held by rollout of v1.1.0 by alice@ctl-1 (run %s), expires " % alices["lease"]["run"]
    for robot in leased.robots:
        entry = report["robots"][robot]
        assert entry["lease"].startswith("refused: " + holder), entry["lease"]
        assert entry["lease"].endswith("; waited 3 s"), entry["lease"]
        assert entry["status"] == "failed" and holder in entry["error"], entry
        assert entry.get("wave") is None and entry.get("bytes_staged") is None, entry
        assert incoming(leased, robot, "v1.3.0") == "0", robot  # nothing of v1.3.0 was sent
    assert report["lease"]["owner"] == "bob@ctl-2" and report["lease"]["release"] == "v1.3.0"
    assert "PLAY [Stage the release" not in run.stdout  # every robot was refused in the first play


def test_first_rollout_completes_on_every_robot_and_releases_its_leases(leased, story):
    (run, report), _, _ = story
    assert run.rc == 0, run.stdout[-5000:]
    assert report["lease"]["owner"] == "alice@ctl-1" and report["lease"]["release"] == "v1.1.0"
    for robot in leased.robots:
        entry = report["robots"][robot]
        assert entry["status"] == "ok" and entry["release_after"] == "v1.1.0", (robot, entry)
        assert entry["health"] == "passed" and entry["lease"] == "released", (robot, entry)
        now = leased.consistent(robot)
        assert now["current"] == "v1.1.0" and now["service"]["ActiveState"] == "active", (robot, now)
        assert "v1.3.0" not in [r["tag"] for r in now["releases"]], now
        assert lease_on(leased, robot) is None, robot


@pytest.fixture(scope="module")
def rolled_back(leased, story, tmp_path_factory):
    """After the story: v1.3.0 on every robot, then rollback.yml while carol holds the first robot."""
    (run, _), _, _ = story
    assert run.rc == 0
    again, _ = leased.play("deploy.yml", release="v1.3.0", **BOB)
    assert again.rc == 0, again.stdout[-5000:]
    held = leased.robots[0]
    hold(leased, tmp_path_factory.mktemp("carol"), [held], "carol@ctl-3", "c4r0l", "v1.2.0", ttl=600)
    back = leased.play("rollback.yml", rollout_lease_owner="bob@ctl-2", rollout_lease_wait_seconds=1)
    return held, back


def test_rollback_takes_leases_and_leaves_a_robot_another_run_holds(leased, rolled_back):
    held, (run, report) = rolled_back
    assert run.rc != 0  # the refused robot fails the run
    holder = "held by rollout of v1.2.0 by carol@ctl-3 (run c4r0l), expires "
    entry = report["robots"][held]
    assert entry["lease"].startswith("refused: " + holder), entry
    assert entry["status"] == "failed" and holder in entry["error"], entry
    assert leased.status(held)["current"] == "v1.3.0"
    assert lease_on(leased, held)["run"] == "c4r0l"  # carol's lease is left as it was
    assert report["lease"]["owner"] == "bob@ctl-2"
    for robot in leased.robots[1:]:
        entry = report["robots"][robot]
        assert entry["status"] == "ok" and entry["lease"] == "released", (robot, entry)
        assert entry["release_before"] == "v1.3.0" and entry["release_after"] == "v1.1.0", (robot, entry)
        now = leased.consistent(robot)
        assert now["current"] == "v1.1.0" and now["service"]["ActiveState"] == "active", (robot, now)
        assert lease_on(leased, robot) is None, robot
