"""The rollout's mission lock step (roles/rollout/tasks/mission_lock.yml) played by ansible-playbook
on three local hosts, each asking the real agent (`python -m edge_agent lock`) about a lock file of
its own: a free robot goes on, a busy one is deferred, a stale one goes on and the run report says
why in words. tests/fleet plays the whole rollout on simulated robots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.repo import REPO

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
    (tmp_path / "hosts.yml").write_text(json.dumps({"robots": {"hosts": hosts, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "rollout_mission_lock_retries": 1, "rollout_mission_lock_delay_seconds": 0}}}))
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               EDGE_ROLLOUT_REPORT_DIR=str(tmp_path / "reports"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(tmp_path / "hosts.yml"),
         str(tmp_path / "play.yml")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = sorted((tmp_path / "reports").glob("*/report.json"))
    assert len(found) == 1, proc.stdout[-3000:]
    robots = json.loads(found[0].read_text())["robots"]
    free, busy = robots["free"], robots["busy"]
    assert free.get("release_after") == "v2" and "mission_lock" not in free, free
    assert busy["deferred"] == "delivering" and "release_after" not in busy, busy
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(written))
    stale = "mission lock stale: busy 'delivering' since %s, older than 6 h; proceeding" % since
    assert robots["stale"]["mission_lock"] == stale, robots["stale"]
    assert robots["stale"].get("release_after") == "v2" and "deferred" not in robots["stale"], robots["stale"]
