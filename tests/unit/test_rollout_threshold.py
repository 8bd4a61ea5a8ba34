"""The fleet-wide failure threshold (roles/rollout/tasks/threshold.yml) and the rollout_report
callback, played by ansible-playbook on six local hosts: waves, failed robots, and where a stop leaves
the robots that were not activated. The robots' work is a stand-in task here; tests/fleet plays the
real thing on simulated robots."""

from __future__ import annotations

import json

import pytest

from tests.unit import local_play

ROBOTS = ["r1", "r2", "r3", "r4", "r5", "r6"]
PLAYBOOK = """
- name: Stage (a stand-in)
  hosts: robots
  gather_facts: false
  tasks:
    - name: Record the target
      ansible.builtin.set_fact:
        rollout_report: {{release_before: v1, release_target: v2}}

- name: Activate in waves
  hosts: robots
  gather_facts: false
  serial: {waves}
  vars:
    rollout_release: v2
  tasks:
    - name: Stop the rollout when too many robots failed in earlier waves
      ansible.builtin.include_role:
        name: edge_deploy.jetson.rollout
        tasks_from: threshold.yml
    - name: Activate (a stand-in that fails on the robots named bad)
      ansible.builtin.fail:
        msg: health gate failed
      when: inventory_hostname in bad
    - name: Record the activation
      ansible.builtin.set_fact:
        rollout_report: "{{{{ rollout_report | combine({{'release_after': 'v2'}}) }}}}"
"""


def play(tmp_path, waves, bad, **extra):
    inventory = local_play.robots(tmp_path, ROBOTS)
    proc, folder = local_play.play(tmp_path, PLAYBOOK.format(waves=json.dumps(waves)), inventory,
                                   dict(extra, bad=bad))
    return proc, local_play.report(folder, proc), (folder / "summary.txt").read_text()


def test_threshold_stops_the_rollout_and_leaves_later_waves_alone(tmp_path):
    # (a wave whose robots all fail ends the play in Ansible itself: r4 passes in wave 2)
    proc, report, summary = play(tmp_path, [1, 3, 2], ["r2", "r3"], rollout_max_fail_percentage=20)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert report["stopped"].startswith("Rollout of v2 stopped: 2 of 6 robots failed (r2, r3)"), report
    robots = report["robots"]
    for name in ("r1", "r4"):
        assert robots[name]["wave"] in (1, 2) and robots[name]["release_after"] == "v2", robots[name]
    for name in ("r2", "r3"):
        assert robots[name]["wave"] == 2 and robots[name]["status"] == "failed", robots[name]
    for name in ("r5", "r6"):  # never activated: no wave, not failed, on their release
        assert robots[name]["wave"] is None and robots[name]["status"] == "ok", robots[name]
        assert robots[name].get("release_after") is None, robots[name]
    assert proc.stdout.count("TASK [Activate (a stand-in") == 2, proc.stdout[-3000:]  # waves 1 and 2 only
    assert report["stopped"] in summary
    assert "2 failed, 2 not activated, 2 updated" in summary, summary


def test_threshold_counts_failures_across_waves(tmp_path):
    # r1 | r2 r3 | r4 r5 | r6: one failure in wave 2 and one in wave 3, each 1 of 6 (under 20%) on
    # its own; together 2 of 6 (over 20%), so wave 4 (r6) never starts
    proc, report, _ = play(tmp_path, [1, 2, 2, 1], ["r2", "r4"], rollout_max_fail_percentage=20)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert report["stopped"].startswith("Rollout of v2 stopped: 2 of 6 robots failed (r2, r4)"), report
    robots = report["robots"]
    assert [robots[name]["wave"] for name in ROBOTS] == [1, 2, 2, 3, 3, None], robots
    assert robots["r2"]["status"] == robots["r4"]["status"] == "failed"
    assert robots["r5"]["release_after"] == "v2", robots["r5"]  # wave 3 ran after wave 2's failure
    assert robots["r6"]["status"] == "ok" and robots["r6"].get("release_after") is None, robots["r6"]
    assert proc.stdout.count("TASK [Activate (a stand-in") == 3, proc.stdout[-3000:]


def test_a_failed_canary_stops_even_under_the_threshold(tmp_path):
    proc, report, _ = play(tmp_path, [2, "100%"], ["r1"], rollout_max_fail_percentage=50)
    assert proc.returncode != 0
    assert "the canary wave failed (r1)" in report["stopped"], report["stopped"]
    assert report["robots"]["r2"]["release_after"] == "v2" and report["robots"]["r2"]["wave"] == 1
    for name in ROBOTS[2:]:
        assert report["robots"][name]["wave"] is None, report["robots"][name]
        assert report["robots"][name]["status"] == "ok", report["robots"][name]


@pytest.mark.parametrize("canary_stop", [True, False])
def test_failures_under_the_threshold_do_not_stop_it(tmp_path, canary_stop):
    # one failure of six is under 20%; with the canary stop off, a failing canary does not stop it
    waves, bad = ([1, "50%", "100%"], ["r4"]) if canary_stop else ([2, "100%"], ["r1"])
    proc, report, _ = play(
        tmp_path, waves, bad, rollout_max_fail_percentage=20, rollout_canary_stop_enabled=canary_stop
    )
    assert proc.returncode != 0  # a robot failed
    assert report["stopped"] is None, report["stopped"]
    for name in set(ROBOTS) - set(bad):
        assert report["robots"][name]["release_after"] == "v2", report["robots"][name]
        assert report["robots"][name]["wave"] in (1, 2, 3)
