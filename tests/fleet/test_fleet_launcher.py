"""The launcher's fleet: reachable over real SSH, grouped like production."""

from __future__ import annotations

import yaml


def test_inventory_groups_robots_by_module_class(fleet):
    data = yaml.safe_load(fleet.fleet.inventory.read_text())
    groups = data["all"]["children"]
    assert set(groups) == {"orin_nano_robots", "orin_nx_robots", "agx_orin_robots", "xavier_nx_robots"}
    assert set(groups["orin_nx_robots"]["hosts"]) == {"nx-01"}


def test_every_robot_answers_ansible_ping_over_ssh(fleet):
    result = fleet.ansible("all", "ansible.builtin.ping")
    assert result.returncode == 0, result.stdout + result.stderr
    for robot in fleet.robots:
        assert "%s | SUCCESS" % robot in result.stdout


def test_robots_have_their_own_host_keys(fleet):
    lines = fleet.fleet.known_hosts.read_text().split("\n")
    keys = {line.split()[2] for line in lines if line.strip()}
    assert len(keys) == len(fleet.robots)


def test_become_root_over_ssh(fleet):
    result = fleet.ansible("nx-01", "ansible.builtin.command", "id -u")
    assert result.returncode == 0, result.stdout
    assert "\n0" in result.stdout
