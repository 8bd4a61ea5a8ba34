"""The rollout lease in the rollout role (roles/rollout/tasks/lease*.yml), played by ansible-playbook
on local hosts in deploy.yml's shape: taken before anything else, refused robots named and not
counted by the failure threshold, a dead holder's lease taken over, a lost lease stopping its robot
before its wave, and every lease this run took released, the failed robot's in the rescue. Each
host keeps its lease in a folder of its own; the lease code runs from the controller's agent zip,
as on a robot. tests/fleet/test_rollout_lease_fleet.py plays the real thing on simulated robots."""

from __future__ import annotations

import json
import sys

from edge_agent.lease import Leases
from tests.repo import REPO
from tests.unit import local_play

ROBOTS = ["r1", "r2", "r3", "r4"]
LEASE = "{{ lease_dir }}/{{ inventory_hostname }}/lease.json"
AGENT = "{{ ansible_playbook_python }} -m edge_agent --json lease"
PLAYBOOK = (
    """
- name: Check the release and the robots
  hosts: robots
  gather_facts: false
  tasks:
    - name: Record where the robot stands
      ansible.builtin.set_fact:
        rollout_report: {release_before: v1, release_target: v2}
    - name: Take the robot's lease
      ansible.builtin.include_role:
        name: edge_deploy.jetson.rollout
        tasks_from: lease.yml

- name: Activate in waves
  hosts: robots
  gather_facts: false
  serial: "{{ serial }}"
  tasks:
    - name: Stop the rollout when too many robots failed in earlier waves
      ansible.builtin.include_role:
        name: edge_deploy.jetson.rollout
        tasks_from: threshold.yml
    - name: Another run takes the lease of the robot named lose (a stand-in)
      ansible.builtin.command:
        cmd: >-
          sh -c '"""
    + AGENT
    + """ release --force --file """
    + LEASE
    + """ &&
          """
    + AGENT
    + """ acquire --file """
    + LEASE
    + """ --owner eve@ctl-3 --run e7e --release v7'
        chdir: "{{ repo }}"
      changed_when: false
      when: inventory_hostname == lose
    - name: Renew the lease and activate the wave
      block:
        - name: Renew the leases
          ansible.builtin.include_role:
            name: edge_deploy.jetson.rollout
            tasks_from: lease_renew.yml
        - name: Activate the wave
          block:
            - name: Activate (a stand-in that fails on the robot named bad)
              ansible.builtin.fail:
                msg: health gate failed
              when: inventory_hostname == bad
            - name: Record the activation
              ansible.builtin.set_fact:
                rollout_report: "{{ rollout_report | combine({'release_after': 'v2'}) }}"
          rescue:
            - name: Release the failed robot's lease
              ansible.builtin.include_role:
                name: edge_deploy.jetson.rollout
                tasks_from: lease_release.yml
            - name: Count the robot as failed
              ansible.builtin.fail:
                msg: health gate failed
      always:
        - name: Release every lease this run holds when the whole wave failed
          ansible.builtin.include_role:
            name: edge_deploy.jetson.rollout
            tasks_from: lease_release.yml
          when: ansible_play_batch | length == 0

- name: Release the leases (the rollout ends)
  hosts: robots
  gather_facts: false
  tasks:
    - name: Release the robot's lease
      ansible.builtin.include_role:
        name: edge_deploy.jetson.rollout
        tasks_from: lease_release.yml
"""
)


def play(tmp_path, *args, **extra):
    variables = dict(
        repo=str(REPO),
        lease_dir=str(tmp_path / "leases"),
        rollout_lease_file=str(tmp_path / "leases" / "{{ inventory_hostname }}" / "lease.json"),
        rollout_lease_python=sys.executable,
        rollout_lease_owner="alice@ctl-1",
        rollout_lease_run="a11ce",
        rollout_release="v2",
        rollout_wave_soak_seconds=0,
        **extra,
    )
    inventory = local_play.robots(tmp_path, ROBOTS)
    proc, folder = local_play.play(tmp_path, PLAYBOOK, inventory, variables, *args)
    return proc, local_play.report(folder, proc)


def lease_file(tmp_path, robot: str):
    return tmp_path / "leases" / robot / "lease.json"


def holder(tmp_path, robot: str):
    path = lease_file(tmp_path, robot)
    return json.loads(path.read_text())["run"] if path.exists() else None


def test_refused_robots_are_named_and_not_counted_and_the_rest_released_at_the_end(tmp_path):
    # r2: another rollout's live lease; r3: the lease of a holder that died (expired); r4's lease
    # goes to another run (eve) before its wave
    Leases(str(lease_file(tmp_path, "r2"))).acquire("bob@ctl-2", "b0b", "v9", ttl=600)
    Leases(str(lease_file(tmp_path, "r3")), clock=lambda: 1_000_000.0).acquire(
        "dan@ctl-4", "dead", "v8", ttl=60
    )
    # waves r1 r2 | r3 r4; the threshold is 20%: counted, the refused r2 would be 1 of 4 and stop
    # the rollout before the second wave
    proc, report = play(
        tmp_path,
        serial=2,
        bad="none",
        lose="r4",
        rollout_lease_wait_seconds=1,
        rollout_max_fail_percentage=20,
    )
    assert proc.returncode != 0
    robots = report["robots"]
    assert report["lease"] == {"owner": "alice@ctl-1", "run": "a11ce", "release": "v2"}, report["lease"]
    assert report["stopped"] is None, report["stopped"]

    # refused, naming the holder, after the bounded wait; its lease untouched; no wave for it
    assert robots["r2"]["lease"].startswith("refused: held by rollout of v9 by bob@ctl-2 (run b0b), expires ")
    assert robots["r2"]["lease"].endswith("; waited 1 s"), robots["r2"]["lease"]
    assert robots["r2"]["status"] == "failed" and robots["r2"]["wave"] is None, robots["r2"]
    assert "nothing was staged" in robots["r2"]["error"], robots["r2"]["error"]
    assert holder(tmp_path, "r2") == "b0b"

    # the dead holder's lease was taken over; r1 and r3 were released by the last play
    assert robots["r3"]["lease_took_over"].startswith("rollout of v8 by dan@ctl-4 (run dead), expired ")
    for robot in ("r1", "r3"):
        assert robots[robot]["lease"] == "released" and robots[robot]["release_after"] == "v2", robots[robot]
        assert holder(tmp_path, robot) is None, robot

    # a lost lease stops its robot before activation; the run that holds it now keeps it
    assert robots["r4"]["lease"].startswith("lost: held by rollout of v7 by eve@ctl-3 (run e7e)"), robots[
        "r4"
    ]
    assert robots["r4"]["status"] == "failed" and robots["r4"].get("release_after") is None, robots["r4"]
    assert holder(tmp_path, "r4") == "e7e"
    assert "changed=1" not in proc.stdout.split("PLAY RECAP")[1]  # a lease is bookkeeping, no change


def test_a_wave_that_fails_whole_releases_every_lease_before_ansible_ends_the_run(tmp_path):
    # waves of one: the canary r1 fails, Ansible ends the run there (the last play never runs)
    proc, report = play(tmp_path, serial=1, bad="r1", lose="none")
    assert proc.returncode != 0
    assert "PLAY [Release the leases (the rollout ends)]" not in proc.stdout
    robots = report["robots"]
    assert robots["r1"]["status"] == "failed" and robots["r1"]["lease"] == "released", robots["r1"]
    for robot in ("r2", "r3", "r4"):
        assert robots[robot]["wave"] is None, robots[robot]
        assert robots[robot]["lease"] == "released (the run ended with a wave that failed whole)", robots[
            robot
        ]
    for robot in ROBOTS:
        assert holder(tmp_path, robot) is None, robot


def test_check_mode_takes_no_lease(tmp_path):
    proc, report = play(tmp_path, "--check", serial=2, bad="none", lose="none")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not (tmp_path / "leases").exists()
    for name, robot in report["robots"].items():
        assert "lease" not in robot, (name, robot)
