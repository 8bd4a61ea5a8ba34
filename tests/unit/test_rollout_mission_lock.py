"""The rollout's mission lock step (roles/rollout/tasks/mission_lock.yml) played by ansible-playbook
on three local hosts, each asking the real agent (`python -m edge_agent lock`) about a lock file of
its own: a free robot goes on, a busy one is deferred, a stale one goes on and the run report says
why in words. tests/fleet plays the whole rollout on simulated robots."""

from __future__ import annotations

import json
import sys
import time

from tests.unit import local_play

PLAYBOOK = """
- name: Ask the mission lock
  hosts: robots
  gather_facts: false
  tasks:
    - name: Ask the robot's mission lock
      ansible.builtin.include_role:
        name: edge_deploy.jetson.rollout
        tasks_from: mission_lock.yml
    - name: Record the activation (a stand-in)
      ansible.builtin.set_fact:
        rollout_report: "{{ rollout_report | default({}) | combine({'release_after': 'v2'}) }}"
"""


def test_free_busy_and_stale_locks(tmp_path):
    written = time.time() - 7 * 3600
    locks = {
        "free": None,
        "busy": {"busy": True, "reason": "delivering", "written_at": time.time()},
        "stale": {"busy": True, "reason": "delivering", "written_at": written},
    }
    hosts = {}
    for name, lock in locks.items():
        path = tmp_path / ("%s.json" % name)
        if lock:
            path.write_text(json.dumps(lock))
        config = tmp_path / ("%s-agent.json" % name)
        config.write_text(json.dumps({"app": "edge-app", "mission_lock_file": str(path)}))
        hosts[name] = {
            "rollout_agent_command": "%s -m edge_agent --config %s --json" % (sys.executable, config),
            "rollout_mission_lock_file": str(path),
        }
    inventory = local_play.robots(tmp_path, hosts, rollout_mission_lock_retries=1,
                                  rollout_mission_lock_delay_seconds=0)
    proc, folder = local_play.play(tmp_path, PLAYBOOK, inventory)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    robots = local_play.report(folder, proc)["robots"]
    free, busy = robots["free"], robots["busy"]
    assert free.get("release_after") == "v2" and "mission_lock" not in free, free
    assert busy["deferred"] == "delivering" and "release_after" not in busy, busy
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(written))
    stale = "mission lock stale: busy 'delivering' since %s, older than 6 h; proceeding" % since
    assert robots["stale"]["mission_lock"] == stale, robots["stale"]
    assert robots["stale"].get("release_after") == "v2" and "deferred" not in robots["stale"], robots["stale"]
