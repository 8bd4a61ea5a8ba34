"""The run report as job artifacts (roles/rollout/tasks/publish.yml, set_stats `edge_rollout`): what
AWX / Automation Platform keeps of a run in an execution environment, read here as AWX reads it, from
ansible-runner's stats event. Played on three local hosts with deploy.yml's wave shape (block, rescue,
always, then a last play); the robots' work is a stand-in. deploy.yml and rollback.yml are checked to
publish the same way."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.repo import REPO

ROBOTS = ["r1", "r2", "r3"]
PUBLISH = {"name": "edge_deploy.jetson.rollout", "tasks_from": "publish.yml"}
PLAYBOOK = """
- name: Stage (a stand-in)
  hosts: robots
  gather_facts: false
  tasks:
    - name: Record the target
      ansible.builtin.set_fact:
        rollout_report: {release_before: v1, release_target: v2}

- name: Activate in waves
  hosts: robots
  gather_facts: false
  serial: [1, "100%"]
  tasks:
    - name: Activate
      block:
        - name: Activate (a stand-in that fails on the robots named bad)
          ansible.builtin.fail:
            msg: health gate failed
          when: inventory_hostname in bad
        - name: Record the activation
          ansible.builtin.set_fact:
            rollout_report: "{{ rollout_report | combine({'release_after': 'v2'}) }}"
      rescue:
        - name: Record the failure
          ansible.builtin.set_fact:
            rollout_report: "{{ rollout_report | combine({'release_after': 'v1', 'health': 'failed'}) }}"
        - name: Count the robot as failed
          ansible.builtin.fail:
            msg: did not take v2
      always:
        - name: Publish the run report as job artifacts
          ansible.builtin.include_role:
            name: edge_deploy.jetson.rollout
            tasks_from: publish.yml

- name: Publish the run report
  hosts: robots
  gather_facts: false
  tasks:
    - name: Publish the run report as job artifacts
      ansible.builtin.include_role:
        name: edge_deploy.jetson.rollout
        tasks_from: publish.yml
"""
TARGET = {"release_before": "v1", "release_target": "v2"}


def artifacts(tmp_path: Path, bad: list[str]) -> tuple[dict, str]:
    """Run the stand-in through ansible-runner; return the stats event's artifact data and the status."""
    import ansible_runner

    # The collection through a link of the test's own; no ansible.cfg of the repository's.
    link = tmp_path / "collections" / "ansible_collections" / "edge_deploy"
    link.mkdir(parents=True)
    (link / "jetson").symlink_to(REPO)
    (tmp_path / "ansible.cfg").write_text("[defaults]\ncollections_path = %s\n" % (tmp_path / "collections"))
    (tmp_path / "hosts.json").write_text(json.dumps({"robots": {
        "hosts": {name: {} for name in ROBOTS},
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
    }}))  # fmt: skip
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "runner").mkdir()
    run = ansible_runner.run(
        private_data_dir=str(tmp_path / "runner"),
        playbook=str(tmp_path / "play.yml"),
        inventory=str(tmp_path / "hosts.json"),
        extravars={"bad": bad},
        envvars={
            "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        },
        quiet=True,
    )
    stats = [event for event in run.events if event["event"] == "playbook_on_stats"]
    assert len(stats) == 1, run.stdout.read()[-3000:]
    return stats[0]["event_data"].get("artifact_data") or {}, run.status


def test_every_robot_report_is_a_job_artifact(tmp_path):
    data, status = artifacts(tmp_path, bad=["r3"])
    assert status == "failed"  # r3 failed
    reports = data["edge_rollout"]
    assert sorted(reports) == ROBOTS, data
    for name in ("r1", "r2"):
        assert reports[name] == dict(TARGET, release_after="v2"), reports
    assert reports["r3"] == dict(TARGET, release_after="v1", health="failed"), reports


def test_a_failed_canary_ends_the_run_and_its_report_is_still_published(tmp_path):
    # the canary wave's only robot fails: Ansible ends the run there, the last play never runs
    data, status = artifacts(tmp_path, bad=["r1"])
    assert status == "failed"
    reports = data["edge_rollout"]
    assert reports["r1"]["health"] == "failed", reports
    for name in ("r2", "r3"):  # never activated: their report as staging left it
        assert reports[name] == TARGET, reports


@pytest.mark.parametrize("playbook", ["deploy.yml", "rollback.yml"])
def test_deploy_and_rollback_publish_after_every_wave_and_at_the_end(playbook):
    plays = yaml.safe_load((REPO / "playbooks" / playbook).read_text())
    waves = [play for play in plays if "serial" in play]
    assert waves, playbook
    for play in waves:
        always = [task for block in play["tasks"] if "always" in block for task in block["always"]]
        included = [task.get("ansible.builtin.include_role") for task in always]
        assert PUBLISH in included, (playbook, play["name"])
    last = plays[-1]
    assert [task.get("ansible.builtin.include_role") for task in last["tasks"]] == [PUBLISH], (playbook, last)
