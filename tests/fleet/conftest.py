"""One simulated fleet shared by every fleet test of a run, reached over real SSH."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_deploy.sim import Fleet, machine_turn, podman
from tests.repo import REPO

FLEET_MIX = ("orin-nano-8gb-jp512", "orin-nx-16gb-jp60", "agx-orin-64gb-jp62", "xavier-nx-jp46")
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
                   r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.M)


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/fleet/" in str(item.fspath):
            item.add_marker(pytest.mark.fleet)


class FleetRun:
    """A started fleet plus helpers to drive it the way a user would."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.robots = {robot.name: robot for robot in fleet.robots()}

    @property
    def supported(self) -> str:
        return "orin_nano_robots:orin_nx_robots:agx_orin_robots"

    def playbook(self, playbook: str, *args: str, check: bool = False) -> PlaybookRun:
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                   ANSIBLE_NOCOLOR="1")
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        argv = ["ansible-playbook", "-i", str(self.fleet.inventory_dir), str(REPO / playbook), *args]
        result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
        run = PlaybookRun(result)
        if check and result.returncode != 0:
            raise AssertionError("%s failed (rc=%d):\n%s"
                                 % (playbook, result.returncode, result.stdout[-6000:]))
        return run

    def ansible(self, pattern: str, module: str, args: str = "") -> subprocess.CompletedProcess:
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
        argv = [str(Path(sys.executable).parent / "ansible"), "-i", str(self.fleet.inventory_dir), pattern,
                "-m", module]
        if args:
            argv += ["-a", args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)

    def exec(self, robot: str, *argv: str, input_text: str | None = None) -> subprocess.CompletedProcess:
        return podman("exec", "-i", self.robots[robot].container, *argv, check=False, input_text=input_text)


class PlaybookRun:
    def __init__(self, result: subprocess.CompletedProcess):
        self.rc = result.returncode
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.recap = {m.group("host"): {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                      for m in RECAP.finditer(result.stdout)}

    def changed(self) -> dict:
        return {host: stats["changed"] for host, stats in self.recap.items()}


@pytest.fixture(scope="session")
def fleet(tmp_path_factory) -> FleetRun:
    with machine_turn():  # fleet runs on one machine take turns
        yield from _fleet(tmp_path_factory)


def _fleet(tmp_path_factory):
    state = tmp_path_factory.mktemp("fleet")
    # A name of its own per run, so parallel runs on one machine never share robots.
    fleet = Fleet("t%d" % os.getpid(), state_dir=state, inventory_dir=state / "inventory")
    try:
        fleet.up(len(FLEET_MIX), FLEET_MIX)
        yield FleetRun(fleet)
    finally:
        fleet.down()
