"""The fleet launcher's plan and inventory, without starting containers."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from edge_deploy import sim


def test_default_mix_names_robots_per_class():
    plan = sim.Fleet("unit").plan(6)
    assert [name for name, _ in plan] == ["nano-01", "nano-02", "nx-01", "nx-02", "agx-01", "agx-02"]
    assert {profile for _, profile in plan} == set(sim.DEFAULT_MIX)


def test_unknown_profile_is_refused_with_the_known_ones():
    with pytest.raises(sim.SimError, match=r"unknown simulated profile.*orin-nx-16gb-jp60"):
        sim.Fleet("unit").plan(2, ("orin-nx-99",))


def test_empty_fleet_is_refused():
    with pytest.raises(sim.SimError, match="at least one robot"):
        sim.Fleet("unit").plan(0)


def test_every_profile_has_a_production_group():
    groups = {profile["inventory_group"] for profile in sim.profiles().values()}
    assert {"orin_nano_robots", "orin_nx_robots", "agx_orin_robots"} <= groups


def test_inventory_groups_like_production(tmp_path):
    fleet = sim.Fleet("unit", state_dir=tmp_path / "state", inventory_dir=tmp_path / "inventory")
    robots = [sim.Robot("nano-01", "orin-nano-8gb-jp512", "orin_nano_robots", 2201, "edge-unit-nano-01"),
              sim.Robot("agx-01", "agx-orin-64gb-jp62", "agx_orin_robots", 2202, "edge-unit-agx-01")]
    path = fleet.write_inventory(robots)
    data = yaml.safe_load(path.read_text())
    assert data["all"]["children"]["orin_nano_robots"]["hosts"]["nano-01"]["ansible_port"] == 2201
    assert data["all"]["children"]["agx_orin_robots"]["hosts"]["agx-01"]["ansible_port"] == 2202
    assert "StrictHostKeyChecking=yes" in data["all"]["vars"]["ansible_ssh_common_args"]
    assert (tmp_path / "inventory" / "group_vars" / "orin_nx_robots.yml").exists()


class ScriptedPodman:
    """Answers `podman exec ... systemctl is-system-running` from a script of (stdout, stderr)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        if "is-system-running" in args:
            out, err = self.answers.pop(0)
            return subprocess.CompletedProcess(args, 1, out + "\n", err)
        return subprocess.CompletedProcess(args, 0, "JOB UNIT\n3 basic.target start waiting\n", "")


ROBOT = sim.Robot(name="nx-01", profile="orin-nx-16gb-jp60", group="orin_nx_robots",
                  port=2222, container="edge-unit-nx-01")


def test_boot_wait_asks_again_while_systemd_has_no_socket_yet(monkeypatch):
    fake = ScriptedPodman([("", "Failed to connect to bus: No such file or directory"),
                           ("", "Failed to connect to bus: No such file or directory"),
                           ("running", "")])
    monkeypatch.setattr(sim, "podman", fake)
    monkeypatch.setattr(sim.time, "sleep", lambda seconds: None)
    sim.Fleet("unit")._ready(ROBOT, "ssh-ed25519 AAAA unit\n", timeout=60)
    assert sum("is-system-running" in call for call in fake.calls) == 3


def test_boot_in_maintenance_fails_at_once_with_what_systemd_waits_for(monkeypatch):
    fake = ScriptedPodman([("maintenance", "")])
    monkeypatch.setattr(sim, "podman", fake)
    with pytest.raises(sim.SimError, match=r"(?s)nx-01 did not boot.*'maintenance'.*basic.target"):
        sim.Fleet("unit")._ready(ROBOT, "ssh-ed25519 AAAA unit\n", timeout=60)
    assert sum("is-system-running" in call for call in fake.calls) == 1
