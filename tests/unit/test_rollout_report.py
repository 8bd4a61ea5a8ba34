"""The rollout report: summary lines and the timeline picture from a recorded report.json, and the
rollout_report callback that records it, played by ansible-playbook on six local hosts (waves as
Ansible batches them, a robot that rolled itself back)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from edge_deploy import report
from edge_deploy.runner import run_playbook
from tests.repo import REPO

RECORDED = {
    "playbook": "deploy.yml",
    "duration_s": 42.0,
    "robots": {
        "nano-01": {
            "status": "ok",
            "wave": 1,
            "release_before": "v1",
            "release_after": "v2",
            "bytes_staged": 2048,
            "engines": {"digits": True},
            "health": "passed",
            "steps": [
                {"play": "Stage", "task": "stage", "status": "changed", "start": 0.5, "end": 3.0},
                {
                    "play": "Activate",
                    "task": "activate",
                    "status": "changed",
                    "start": 5.0,
                    "end": 9.0,
                    "wave": 1,
                },
            ],
        },
        "nx-01": {
            "status": "failed",
            "wave": 2,
            "release_before": "v1",
            "release_after": "v1",
            "rolled_back": True,
            "health": "failed: /healthz 500",
            "steps": [
                {
                    "play": "Activate",
                    "task": "activate",
                    "status": "failed",
                    "start": 10.0,
                    "end": 14.0,
                    "wave": 2,
                }
            ],
        },
        "agx-01": {
            "status": "ok",
            "wave": 2,
            "deferred": "mission lock: busy",
            "release_before": "v1",
            "steps": [{"play": "Activate", "task": "lock", "status": "ok", "start": 10.0, "end": 11.0}],
        },
    },
}


def test_summary_orders_by_wave_and_says_what_happened():
    lines = report.summary_lines(RECORDED)
    assert lines[0].split() == ["robot", "wave", "release", "outcome", "staged", "engines", "health", "time"]
    assert lines[1].startswith("nano-01") and "v1 -> v2" in lines[1] and "updated" in lines[1]
    assert "digits hit" in lines[1] and "2048 B" in lines[1] and "8.5 s" in lines[1]
    assert any(line.startswith("agx-01") and "deferred" in line for line in lines)
    assert any(line.startswith("nx-01") and "rolled back" in line for line in lines)
    assert lines[-1] == "deploy.yml: 1 deferred, 1 rolled back, 1 updated in 42.0 s"


def test_summary_says_which_robots_fetched_their_bytes_themselves():
    recorded = json.loads(json.dumps(RECORDED))
    recorded["robots"]["nano-01"]["bytes_from_controller"] = 0  # fetched from a repository URL
    recorded["robots"]["agx-01"].update(bytes_staged=4096, bytes_from_controller=4096)  # pushed
    rows = {line.split()[0]: line for line in report.summary_lines(recorded)[1:4]}
    assert "2048 B fetched" in rows["nano-01"], rows["nano-01"]
    assert "4096 B" in rows["agx-01"] and "fetched" not in rows["agx-01"], rows["agx-01"]


def test_summary_shortens_long_health_messages_and_says_why_a_rollout_stopped():
    recorded = json.loads(json.dumps(RECORDED))
    message = "failed: not healthy within 60 s: http://127.0.0.1:8080/healthz answered 503: " + "x" * 300
    recorded["robots"]["nx-01"]["health"] = message
    recorded["stopped"] = "Rollout of v2 stopped: the canary wave failed (nx-01)."
    recorded["robots"]["r9"] = {"status": "ok", "release_before": "v1", "release_target": "v2"}
    lines = report.summary_lines(recorded)
    row = next(line for line in lines if line.startswith("nx-01"))
    assert message[: report.HEALTH_WIDTH - 3] + "..." in row and "x" * 300 not in row
    assert lines[-2] == recorded["stopped"]
    last_robot = [line for line in lines if line.startswith(("nano-01", "nx-01", "agx-01", "r9"))][-1]
    assert last_robot.startswith("r9") and "not activated" in last_robot  # in no wave: listed last


def test_render_writes_summary_and_a_png(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(RECORDED))
    outputs = report.render(path)
    assert (tmp_path / "summary.txt").read_text().splitlines()[-1].startswith("deploy.yml:")
    png = (tmp_path / "timeline.png").read_bytes()
    assert outputs["timeline"].endswith("timeline.png") and png[:8] == b"\x89PNG\r\n\x1a\n"


# deploy.yml's plays with stand-ins for the robots' work: a check, the staging (every robot, no
# serial: not a wave), then the activation in serial batches, where the robots named in `bad` fail
# their health gate and roll themselves back, recorded as deploy.yml's rescue records it.
ROBOTS = ["h1", "h2", "h3", "h4", "h5", "h6"]
DEMO_WAVES = [1, "50%", "100%"]  # edge_deploy.demo's rollout_waves
DEPLOY_STANDIN = """
- name: Check the release and the robots
  hosts: robots
  gather_facts: false
  tasks:
    - name: Record where the robot stands
      ansible.builtin.set_fact:
        rollout_report: {release_before: v1.0.0, release_target: v1.1.0}

- name: Stage the release on every robot
  hosts: robots
  gather_facts: false
  tasks:
    - name: Stage the release (a stand-in that reaches the robot)
      ansible.builtin.command: "true"
      changed_when: false

- name: Activate in waves
  hosts: robots
  gather_facts: false
  serial: "{{ rollout_waves }}"
  tasks:
    - name: Remember the canary wave (once per batch, as threshold.yml does)
      ansible.builtin.set_fact:
        canary: "{{ ansible_play_batch }}"
      run_once: true

    - name: Record the wave in the run report
      ansible.builtin.set_fact:
        rollout_report: "{{ rollout_report | combine({'wave_hosts': ansible_play_batch}) }}"

    - name: Activate the wave
      block:
        - name: Activate the release (a stand-in whose health gate fails on the robots named bad)
          ansible.builtin.fail:
            msg: health gate failed
          when: inventory_hostname in bad

        - name: Record the activation in the run report
          ansible.builtin.set_fact:
            rollout_report: "{{ rollout_report | combine({'release_after': 'v1.1.0', 'health': 'passed'}) }}"
      rescue:
        - name: Record the failed activation in the run report
          ansible.builtin.set_fact:
            rollout_report: >-
              {{ rollout_report | combine({'release_after': 'v1.0.0', 'health': 'failed: /healthz 500',
                                           'rolled_back': true, 'rolled_back_to': 'v1.0.0'}) }}

        - name: Count the robot as failed
          ansible.builtin.fail:
            msg: did not take v1.1.0
"""
# A closed port on the loopback: ssh to it is refused at once, so the robot is unreachable.
UNREACHABLE = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1}


def write_standin(folder, unreachable=()):
    hosts = {name: (dict(UNREACHABLE) if name in unreachable else {}) for name in ROBOTS}
    inventory = {
        "robots": {
            "hosts": hosts,
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        }
    }
    (folder / "hosts.json").write_text(json.dumps(inventory))
    (folder / "deploy.yml").write_text(DEPLOY_STANDIN)
    return folder / "deploy.yml", folder / "hosts.json"


def recorded(folder):
    found = sorted((folder / "reports").glob("*/report.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text()), (found[0].parent / "summary.txt").read_text()


def waves(recorded_report):
    found = {}
    for name, robot in sorted(recorded_report["robots"].items()):
        if robot["wave"] is not None:
            found.setdefault(robot["wave"], []).append(name)
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's waves, played the way the demo plays them (ansible-runner, edge_deploy.runner)."""
    folder = tmp_path_factory.mktemp("demo")
    playbook, inventory = write_standin(folder)
    result = run_playbook(
        playbook,
        inventory,
        extravars={"rollout_waves": DEMO_WAVES, "bad": ["h6"]},
        quiet=True,
        report_dir=folder / "reports",
    )
    shutil.rmtree(result.artifacts, ignore_errors=True)
    assert result.rc != 0 and "did not take v1.1.0" in result.hosts["h6"].messages, result
    return recorded(folder)


def test_demo_waves_are_numbered_as_ansible_batches_them(demo):
    # ansible-runner's stdout callback renames each batch's play (<uuid>_2, ...): numbering batches
    # by play uuid read wave 1 for every robot
    recorded_report, summary = demo
    assert waves(recorded_report) == {1: ["h1"], 2: ["h2", "h3", "h4"], 3: ["h5", "h6"]}
    for name, robot in recorded_report["robots"].items():
        # the batch Ansible played the robot in (ansible_play_batch) is its wave
        assert sorted(robot["wave_hosts"]) == waves(recorded_report)[robot["wave"]], (name, robot)
        for step in robot["steps"]:
            assert step["wave"] == (robot["wave"] if step["play"] == "Activate in waves" else None), step
    rows = {line.split()[0]: line.split()[1] for line in summary.splitlines()[1:] if line.startswith("h")}
    assert rows == {"h1": "1", "h2": "2", "h3": "2", "h4": "2", "h5": "3", "h6": "3"}, summary


def test_waves_start_at_one_after_an_unreachable_first_robot(tmp_path):
    # h1 is unreachable from the staging on: its batch of the wave play runs nothing and is no wave
    playbook, inventory = write_standin(tmp_path, unreachable=["h1"])
    proc = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
            "-i",
            str(inventory),
            "-e",
            json.dumps({"rollout_waves": DEMO_WAVES, "bad": []}),
            str(playbook),
        ],
        cwd=REPO,
        env=dict(
            os.environ,
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            EDGE_ROLLOUT_REPORT_DIR=str(tmp_path / "reports"),
            ANSIBLE_NOCOLOR="1",
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "h1" in proc.stdout and "UNREACHABLE" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    recorded_report, _ = recorded(tmp_path)
    h1 = recorded_report["robots"]["h1"]
    assert h1["status"] == "unreachable" and h1["wave"] is None, h1
    assert waves(recorded_report) == {1: ["h2", "h3", "h4"], 2: ["h5", "h6"]}


def test_a_rolled_back_robot_says_which_release_it_tried_and_which_it_runs(demo):
    robots = demo[0]["robots"]
    h6 = robots["h6"]
    assert h6["status"] == "failed" and h6["rolled_back"] is True, h6
    assert (h6["release_before"], h6["release_tried"], h6["release_after"]) == ("v1.0.0", "v1.1.0", "v1.0.0")
    for name in ROBOTS[:-1]:  # updated: they run what they tried
        robot = robots[name]
        assert robot["release_tried"] is None and robot["release_after"] == "v1.1.0", (name, robot)


def _callback_module():
    path = REPO / "plugins" / "callback" / "rollout_report.py"
    spec = importlib.util.spec_from_file_location("rollout_report_callback", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CallbackModule


@pytest.mark.parametrize(
    "fact, tried",
    [
        # deploy.yml: the health gate failed and the robot went back by itself
        ({"release_target": "v1.2.0", "release_after": "v1.1.0", "rolled_back": True}, "v1.2.0"),
        ({"release_target": "v1.2.0", "rolled_back": True, "rolled_back_to": "v1.1.0"}, "v1.2.0"),
        # rollback.yml: rolled back to its target, as asked
        ({"release_target": "v1.0.0", "release_after": "v1.0.0", "rolled_back": True}, None),
        ({"release_target": "v1.2.0", "release_after": "v1.2.0", "rolled_back": False}, None),
        ({"release_before": "v1.1.0", "release_target": "v1.2.0"}, None),  # not activated
    ],
)
def test_release_tried_only_for_a_robot_that_went_back_from_its_target(fact, tried):
    assert _callback_module()._release_tried(fact) == tried
