"""run_playbook drives ansible-playbook through ansible-runner: per-robot progress from its events."""

from __future__ import annotations

import json
import sys

from edge_deploy.runner import run_playbook

PLAYBOOK = """
- name: Two robots, one task each robot skips
  hosts: robots
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.command: echo hello
      changed_when: true
    - name: Set a fact
      ansible.builtin.set_fact:
        greeting: hello
    - name: Only on r2, and it fails
      ansible.builtin.fail:
        msg: r2 broke
      when: inventory_hostname == 'r2'
    - name: Skipped everywhere
      ansible.builtin.debug:
        msg: never
      when: false
"""


def test_progress_counts_and_the_last_task_that_ran(tmp_path):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    inventory = {
        "robots": {
            "hosts": {"r1": {}, "r2": {}},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        }
    }
    (tmp_path / "hosts.json").write_text(json.dumps(inventory))
    result = run_playbook(
        tmp_path / "play.yml", tmp_path / "hosts.json", quiet=True, report_dir=tmp_path / "reports"
    )
    assert result.rc != 0 and not result.ok
    r1, r2 = result.hosts["r1"], result.hosts["r2"]
    assert (r1.ok, r1.changed, r1.failed, r1.skipped) == (2, 1, 0, 2)
    assert (r2.ok, r2.changed, r2.failed) == (2, 1, 1) and r2.messages == ["r2 broke"]
    # a skipped task is not shown as what the robot does
    assert r1.task == "Set a fact" and r2.task == "Only on r2, and it fails"
    assert result.facts["r1"]["greeting"] == "hello"
    assert list((tmp_path / "reports").glob("*/report.json"))  # the rollout_report callback ran
