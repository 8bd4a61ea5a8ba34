"""Every disruptive action asks the robot app's mission lock, over real SSH on a simulated robot with
the release agent installed: the power role's reboot into a power mode waits for the lock and is
deferred (reported, not failed) while it holds, and goes ahead once it is free; the reboot that
installed updates need (the base role's edge-update-reboot unit, unattended-upgrades' own reboot
off) is skipped while the lock holds; a lock older than the agent's age limit is stale, holds
nothing, and the run report says so in words.

The module plays one story on one robot, each test from where the last left it. A simulated robot
is a container: its kernel's boot id is the host's, so the robot's boot is told by PID 1's start
time, and a reboot stops the container, which the test starts again, like a power button. Short
windows through variables (1 s between two asks of the lock).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from edge_deploy import paths
from edge_deploy.sim import podman
from tests.repo import REPO

from .conftest import PlaybookRun

ROBOT = "nano-01"  # Orin Nano 8GB: 15W (id 0), 7W (id 1) needs a reboot
LOCK_FILE = "/run/edge-app/mission-lock.json"
BOOT = "cut -d' ' -f22 /proc/1/stat"  # PID 1's start time: changes with each boot of the robot
POWER_VARS = {
    "power_mode_name": "7W",
    "power_mode_reboot": "reboot",
    "power_reboot_boot_time_command": BOOT,
    "power_reboot_timeout": 120,
    "power_mission_lock_delay_seconds": 1,
}
def said(run) -> str:
    """The run's output as one line, quotes as written (the yaml result format doubles them)."""
    return " ".join(run.stdout.split()).replace("''", "'")


RETRYING = "FAILED - RETRYING: [%s]: Wait until the robot's mission allows the reboot" % ROBOT


class Robot:
    def __init__(self, fleet, tmp: Path):
        self.fleet = fleet
        self.tmp = tmp
        self.runs = 0

    def sh(self, script: str) -> subprocess.CompletedProcess:
        return self.fleet.exec(ROBOT, "sh", "-c", script)

    def boot(self) -> str:
        booted = self.sh(BOOT)
        assert booted.returncode == 0 and booted.stdout.strip(), booted.stderr
        return booted.stdout.strip()

    def mode(self) -> str:
        return self.sh("nvpmodel -q").stdout.splitlines()[0]

    def lock(self, written_at: float) -> None:
        lock = {"busy": True, "reason": "delivering", "written_at": written_at}
        self.sh("mkdir -p /run/edge-app && printf '%%s' '%s' > %s" % (json.dumps(lock), LOCK_FILE))

    def play(self, playbook: str, *args: str, on_line=None, **variables):
        """Run a playbook on the robot as a user would; return (run, report.json of that run).
        `on_line` sees each line of output as it comes (the run waits while it works)."""
        self.runs += 1
        reports = self.tmp / ("reports-%d" % self.runs)
        vars_file = self.tmp / ("vars-%d.json" % self.runs)
        vars_file.write_text(json.dumps(variables))
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_FORCE_COLOR="0", EDGE_ROLLOUT_REPORT_DIR=str(reports))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        argv = ["ansible-playbook", "-i", str(self.fleet.fleet.inventory_dir), str(REPO / playbook),
                "-l", ROBOT, "-e", "@%s" % vars_file, *args]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, cwd=REPO) as proc:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if on_line:
                    on_line(line)
            stderr = proc.stderr.read()
            proc.wait(timeout=300)
        run = PlaybookRun(subprocess.CompletedProcess(argv, proc.returncode, "".join(lines), stderr))
        found = sorted(reports.glob("*/report.json"))
        assert len(found) == 1, "no run report from %s:\n%s" % (playbook, run.stdout[-3000:])
        return run, json.loads(found[0].read_text())["robots"][ROBOT]


def running(container: str) -> bool:
    state = podman("inspect", "--format", "{{.State.Running}}", container, check=False)
    return state.stdout.strip() == "true"


@contextmanager
def power_button(fleet):
    """Start the robot's container again when a reboot stops it (a real robot comes back by itself).
    Yields a list that holds True once it did."""
    container = fleet.robots[ROBOT].container
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(paths.CONTAINERS_CONF))
    waiter = subprocess.Popen(["podman", "wait", container], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env)
    restarted = []

    def press():
        if waiter.wait() == 0 and not running(container):
            podman("start", container, check=False)
            restarted.append(True)

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    try:
        yield restarted
    finally:
        if thread.is_alive():  # no reboot came
            waiter.terminate()
        thread.join(timeout=60)
        if not running(container):
            podman("start", container, check=False)
        fleet.exec(ROBOT, "systemctl", "is-system-running", "--wait")


@pytest.fixture(scope="module")
def robot(fleet, tmp_path_factory):
    """The robot with the release agent (and its app user) installed, as the release role does; left
    afterwards in its class's power mode, without a lock, the update reboot timer off."""
    here = Robot(fleet, tmp_path_factory.mktemp("mission-lock"))
    run, _ = here.play("playbooks/release.yml", "--tags", "release_user,release_agent")
    assert run.rc == 0, run.stdout[-4000:]
    yield here
    here.sh("systemctl disable --now edge-update-reboot.timer; rm -f %s /run/reboot-required; "
            "nvpmodel -m 0 </dev/null" % LOCK_FILE)


@pytest.fixture(scope="module")
def deferred(robot):
    """A fresh busy lock through the whole window: the reboot into 7W is deferred. The same run
    installs the update reboot unit and turns its timer on (tags power, base_updates)."""
    assert robot.mode() == "NV Power Mode: 15W"
    robot.lock(time.time())
    before = robot.boot()
    run, report = robot.play("playbooks/provision.yml", "--tags", "power,base_updates",
                             power_mission_lock_retries=2, base_unattended_upgrades_automatic_reboot=True,
                             **POWER_VARS)
    return run, report, before


def test_power_reboot_is_deferred_while_the_mission_lock_holds(robot, deferred):
    run, report, before = deferred
    assert run.rc == 0 and run.recap[ROBOT]["failed"] == 0, run.stdout[-4000:]
    assert robot.boot() == before, "the robot rebooted although its mission lock held"
    assert robot.mode() == "NV Power Mode: 15W"
    why = "reboot into power mode 7W deferred: the mission lock still held after 2 s (delivering)"
    assert report["deferred"] == why, report
    assert "nano-01 stays in power mode 15W: " + why in said(run), run.stdout[-3000:]
    facts = json.loads(robot.sh("cat /etc/ansible/facts.d/power.fact").stdout)
    assert (facts["mode_name"], facts["pending_mode"]) == ("15W", "7W"), facts


def test_update_reboot_is_skipped_while_the_mission_lock_holds(robot, deferred):
    """unattended-upgrades never reboots by itself; the unit that would reboot asks the lock first."""
    _, _, before = deferred
    dump = robot.sh("apt-config dump Unattended-Upgrade::Automatic-Reboot").stdout
    assert dump.strip() == 'Unattended-Upgrade::Automatic-Reboot "false";', dump
    assert robot.sh("systemctl is-enabled edge-update-reboot.timer").stdout.strip() == "enabled"
    cursor = robot.sh("journalctl -n 0 --show-cursor -q | tail -1").stdout.split("cursor: ")[-1].strip()
    started = robot.sh("touch /run/reboot-required && systemctl start edge-update-reboot.service")
    try:
        assert started.returncode == 0, started.stderr  # skipped by its condition, not failed
        unit = "edge-update-reboot.service"
        journal = robot.sh("journalctl -u %s --no-pager --after-cursor '%s'" % (unit, cursor)).stdout
        assert "edge-agent lock: held: delivering" in journal, journal
        assert "condition failed" in journal.lower() or "skipped" in journal.lower(), journal
        assert robot.boot() == before
    finally:
        robot.sh("rm -f /run/reboot-required")


def test_power_reboot_goes_ahead_once_the_lock_is_free(robot, deferred):
    """The lock holds when the run starts: the run waits (the robot stays up), and reboots into 7W
    as soon as the app lets go of its lock."""
    robot.lock(time.time())
    before = robot.boot()
    seen = {}

    def free_once_waiting(line):
        if RETRYING in line and "boot" not in seen:
            seen["boot"] = robot.boot()  # still the same boot while the lock holds
            robot.sh("rm -f " + LOCK_FILE)

    with power_button(robot.fleet) as restarted:
        run, report = robot.play("playbooks/provision.yml", "--tags", "power", on_line=free_once_waiting,
                                 power_mission_lock_retries=30, **POWER_VARS)
    assert seen.get("boot") == before, "the run never waited for the lock:\n" + run.stdout[-3000:]
    assert run.rc == 0 and run.recap[ROBOT]["failed"] == 0, run.stdout[-4000:]
    assert restarted and robot.boot() != before, "the robot did not reboot"
    assert robot.mode() == "NV Power Mode: 7W"
    assert "deferred" not in report and "mission_lock" not in report, report


def test_stale_lock_holds_nothing_and_is_reported(robot):
    """A busy lock written seven hours ago (older than the agent's 6 h): the reboot goes ahead and
    the run report and the output say why, in words."""
    robot.sh("nvpmodel -m 0 </dev/null")  # back to 15W (no reboot needed that way)
    assert robot.mode() == "NV Power Mode: 15W"
    written = time.time() - 7 * 3600
    robot.lock(written)
    before = robot.boot()
    with power_button(robot.fleet) as restarted:
        run, report = robot.play("playbooks/provision.yml", "--tags", "power",
                                 power_mission_lock_retries=2, **POWER_VARS)
    assert run.rc == 0 and run.recap[ROBOT]["failed"] == 0, run.stdout[-4000:]
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(written))
    stale = "mission lock stale: busy 'delivering' since %s, older than 6 h; proceeding" % since
    assert report.get("mission_lock") == stale, report
    assert "deferred" not in report, report
    assert stale in said(run), run.stdout[-3000:]
    assert RETRYING not in run.stdout  # stale at the first ask: no waiting
    assert restarted and robot.boot() != before, "the robot did not reboot"
    assert robot.mode() == "NV Power Mode: 7W"
