"""provision.yml over real SSH: converges, changes nothing the second time, and
never locks the controller out, not even when an input is wrong."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edge_deploy.sim import podman
from tests.repo import REPO

SUPPORTED = ("nano-01", "nx-01", "agx-01")
MODES = {"nano-01": "15W", "nx-01": "25W", "agx-01": "MAXN"}


def ssh(fleet, robot: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A fresh SSH connection (no multiplexing) to a robot, as a user would open one."""
    argv = ["ssh", "-p", str(fleet.robots[robot].port),
            "-o", "UserKnownHostsFile=%s" % fleet.fleet.known_hosts, "-o", "StrictHostKeyChecking=yes",
            "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", "ConnectTimeout=10", *extra, "nvidia@127.0.0.1", "true"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)


def key_login(fleet, robot: str) -> subprocess.CompletedProcess:
    """The controller's key login. A hardened robot's firewall refuses new SSH connections from a
    source that opened 6 within 30 s (ufw limit), which the tests before can reach on one robot
    (the many-keys tests open several): a refused connection is tried once more after a quiet
    31 s (a try while refused counts towards the limit, so no faster retries)."""
    argv = ("-i", str(fleet.fleet.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes")
    result = ssh(fleet, robot, *argv)
    if result.returncode == 255 and "Connection refused" in result.stderr:
        time.sleep(31)
        result = ssh(fleet, robot, *argv)
    return result


def password_login(fleet, robot: str, tmp_path) -> subprocess.CompletedProcess:
    """Try the default account's factory password, really typed in through SSH_ASKPASS."""
    askpass = tmp_path / "askpass"
    askpass.write_text("#!/bin/sh\necho nvidia\n")
    askpass.chmod(askpass.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")
    return ssh(fleet, robot, "-o", "PubkeyAuthentication=no", "-o", "IdentityAgent=none",
               "-o", "PreferredAuthentications=password,keyboard-interactive",
               "-o", "NumberOfPasswordPrompts=1", env=env)


def changed_tasks(stdout: str) -> list[str]:
    """The tasks a run reported as changed, for a failure message that says what moved."""
    found, task = [], None
    for line in stdout.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed: ") and task and task not in found:
            found.append(task)
    return found


def address(fleet, robot: str) -> str:
    container = fleet.robots[robot].container
    return podman("inspect", "--format", "{{.NetworkSettings.IPAddress}}", container).stdout.strip()


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def provisioned(fleet):
    first = fleet.playbook("playbooks/provision.yml", "-l", fleet.supported, check=True)
    second = fleet.playbook("playbooks/provision.yml", "-l", fleet.supported, check=True)
    return first, second


def test_provision_converges_and_second_run_changes_nothing(fleet, provisioned):
    first, second = provisioned
    assert set(first.recap) == set(SUPPORTED)
    assert second.changed() == {robot: 0 for robot in SUPPORTED}, changed_tasks(second.stdout)


@pytest.mark.parametrize("robot", SUPPORTED)
def test_nvpmodel_reports_the_class_mode(fleet, provisioned, robot):
    assert fleet.exec(robot, "nvpmodel", "-q").stdout.splitlines()[0] == "NV Power Mode: %s" % MODES[robot]
    facts = json.loads(fleet.exec(robot, "cat", "/etc/ansible/facts.d/power.fact").stdout)
    assert (facts["mode_name"], facts["pending_mode"], facts["clocks_locked"]) == (MODES[robot], None, True)
    service = fleet.exec(robot, "systemctl", "is-active", "edge-jetson-clocks.service")
    assert service.stdout.strip() == "active"


@pytest.mark.parametrize("robot", SUPPORTED)
def test_base_os_holds_l4t_and_exports_metrics(fleet, provisioned, robot):
    held = fleet.exec(robot, "apt-mark", "showhold").stdout.split()
    assert "nvidia-l4t-core" in held and any(name.startswith("libnvinfer") for name in held), held
    watchdog = fleet.exec(robot, "systemctl", "show", "--property=RuntimeWatchdogUSec").stdout.strip()
    assert watchdog == "RuntimeWatchdogUSec=30s"
    metrics = fleet.exec(robot, "cat", "/var/lib/prometheus/node-exporter/tegrastats.prom").stdout
    assert "tegrastats_sample_ok 1" in metrics and 'tegrastats_power_watts{rail="VDD_IN"}' in metrics, metrics


@pytest.mark.parametrize("robot", SUPPORTED)
def test_key_login_works_and_password_login_is_refused(fleet, provisioned, robot, tmp_path):
    assert key_login(fleet, robot).returncode == 0
    refused = password_login(fleet, robot, tmp_path)
    assert refused.returncode == 255
    # The server offers nothing but public keys.
    assert "Permission denied (publickey)." in refused.stderr, refused.stderr


class Agent:
    """An ssh-agent of the test's own holding `keys` in that order (ssh offers them in that order)."""

    def __init__(self, folder, keys):
        self.socket = str(folder / "agent.sock")
        self.process = subprocess.Popen(["ssh-agent", "-D", "-a", self.socket],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.env = dict(os.environ, SSH_AUTH_SOCK=self.socket)
        for _ in range(100):
            if os.path.exists(self.socket) or self.process.poll() is not None:
                break
            time.sleep(0.05)
        for key in keys:
            subprocess.run(["ssh-add", "-q", str(key)], env=self.env, check=True, capture_output=True)

    def fingerprints(self) -> list[str]:
        listed = subprocess.run(["ssh-add", "-l"], env=self.env, capture_output=True, text=True, check=True)
        return [line.split()[1] for line in listed.stdout.splitlines()]

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def fingerprint(key) -> str:
    return subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.fixture
def loaded_agent(tmp_path):
    """Four keys the robots do not hold, made for the test; the agent gets them first."""
    others = []
    for number in range(4):
        key = tmp_path / ("other-%d" % number)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "not-the-robots-key",
                        "-f", str(key)], check=True)
        others.append(key)
    agents = []

    def start(*keys):
        folder = tmp_path / ("agent-%d" % len(agents))
        folder.mkdir()
        agent = Agent(folder, [*others, *keys])
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.close()


def ansible_ping(fleet, robot: str, agent: Agent, tmp_path) -> subprocess.CompletedProcess:
    """`ansible -m ping` the way a production inventory reaches a robot (inventory/example): its
    address, user and the controller's key, with the repository's ansible.cfg (ssh_args). No
    multiplexed connection from an earlier run may answer for it: a control path of its own."""
    target = fleet.robots[robot]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {robot: {
        "ansible_host": "127.0.0.1", "ansible_port": target.port, "ansible_user": "nvidia",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_private_key_file": str(fleet.fleet.key),
        "ansible_ssh_common_args": "-o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes"
                                   % fleet.fleet.known_hosts}}}}))
    control = tempfile.mkdtemp(prefix="cp-", dir="/tmp")  # short: a socket path has ~100 characters
    try:
        env = dict(agent.env, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_SSH_CONTROL_PATH_DIR=control)
        return subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(inventory), robot,
                               "-m", "ansible.builtin.ping"],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    finally:
        shutil.rmtree(control, ignore_errors=True)


def test_a_controller_offering_its_whole_agent_is_cut_off(fleet, provisioned, loaded_agent):
    """The control for the next test: five keys in the agent, the robot's last, offered the way ssh
    does without IdentitiesOnly and without a key named. The hardened robot ends the connection
    before the right key comes up, so a login that works with them is the fix's doing."""
    agent = loaded_agent(fleet.fleet.key)
    assert len(agent.fingerprints()) == 5 and agent.fingerprints()[-1] == fingerprint(fleet.fleet.key)
    offered = ssh(fleet, "nano-01", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=no", env=agent.env)
    assert offered.returncode == 255
    assert "Too many authentication failures" in offered.stderr, offered.stderr


@pytest.mark.parametrize("where", ["agent, last of five", "file, agent holds four others"])
def test_controller_logs_in_whatever_its_agent_holds(fleet, provisioned, loaded_agent, tmp_path, where):
    """The robot's key in the agent after four others, or only on disk while the agent holds four
    others: ansible offers the key its inventory names and nothing else (ssh_args IdentitiesOnly)."""
    agent = loaded_agent(fleet.fleet.key) if where.startswith("agent") else loaded_agent()
    run = ansible_ping(fleet, "nano-01", agent, tmp_path)
    assert run.returncode == 0 and "ping: pong" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]


def test_password_login_attempt_works_where_not_hardened(fleet, tmp_path):
    """The control: the same attempt gets in on the unsupported robot, which provision.yml does not touch."""
    assert password_login(fleet, "xavier-01", tmp_path).returncode == 0


def test_port_off_the_allow_list_is_closed(fleet, provisioned):
    robot = "nx-01"
    host = address(fleet, robot)
    units = []
    try:
        for port in (9100, 8081):
            unit = "probe-%d" % port
            fleet.exec(robot, "systemd-run", "--unit", unit, "--property=Type=exec",
                       "python3", "-m", "http.server", "--bind", "0.0.0.0", str(port))
            units.append(unit)
        listening = fleet.exec(robot, "timeout", "10", "sh", "-c",
                               "until curl -so /dev/null http://127.0.0.1:8081/; do sleep 0.2; done")
        assert listening.returncode == 0, "the probe server on the robot did not start"
        assert answers(host, 9100), "port 9100 is on the allow-list but does not answer from the controller"
        assert not answers(host, 8081), "port 8081 is not on the allow-list but answers from the controller"
    finally:
        for unit in units:
            fleet.exec(robot, "systemctl", "stop", unit)
    status = fleet.exec(robot, "ufw", "status", "verbose").stdout
    for line in ("Status: active", "Default: deny (incoming)", "Logging: on (low)"):
        assert line in status, status


# A well-formed key that is not the controller's.
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOEV2jjOwmynygcsCnYk4c9xULIJBfTmUSNYGmaY7/kV someone-else"
BAD_INPUTS = {
    "unknown power mode": (
        "nano-01", "jetson_facts,power", {"power_mode_name": "42W"},
        ['power_mode_name "42W" is not a power mode of nano-01', "it has 15W, 7W"],
        ["nvpmodel", "-q"]),
    "malformed authorized key": (
        "nx-01", "ssh_hardening",
        {"ssh_hardening_authorized_keys": [{"user": "nvidia",
                                            "keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAbroken"]}]},
        ["ssh-keygen rejects 1 key(s)", "not a valid public key for nvidia"],
        ["cat", "/home/nvidia/.ssh/authorized_keys"]),
    "exclusive keys without the controller's key": (
        "nx-01", "ssh_hardening",
        {"ssh_hardening_authorized_keys": [{"user": "nvidia", "keys": [OTHER_KEY]}]},
        ["do not include the controller's key"],
        ["cat", "/home/nvidia/.ssh/authorized_keys"]),
    "invalid sshd option": (
        "agx-01", "ssh_hardening", {"ssh_hardening_extra_options": {"NoSuchOption": "yes"}},
        ["sshd refused the new configuration", "Bad configuration option: NoSuchOption"],
        ["sha256sum", "/etc/ssh/sshd_config"]),
    "empty admin CIDR list": (
        "nano-01", "firewall", {"firewall_ssh_admin_cidrs": []},
        ["firewall_ssh_admin_cidrs is empty"],
        ["ufw", "status", "verbose"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_clear_error_and_changes_nothing(fleet, provisioned, case):
    robot, tags, extra_vars, messages, state_probe = BAD_INPUTS[case]
    before = fleet.exec(robot, *state_probe)
    assert before.returncode == 0, before.stderr
    run = fleet.playbook("playbooks/provision.yml", "-l", robot, "--tags", tags, "-e", json.dumps(extra_vars))
    assert run.rc != 0
    assert run.recap[robot]["failed"] == 1 and run.recap[robot]["changed"] == 0, run.stdout[-3000:]
    for message in messages:
        assert message in run.stdout, run.stdout[-3000:]
    assert "Nothing was changed" in run.stdout or "was left as it was" in run.stdout
    assert fleet.exec(robot, *state_probe).stdout == before.stdout
    assert key_login(fleet, robot).returncode == 0
