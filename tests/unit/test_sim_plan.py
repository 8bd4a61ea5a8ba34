"""The fleet launcher's plan and inventory, without starting containers."""

from __future__ import annotations

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
