"""provision.yml over real SSH: converges, changes nothing the second time, and
never locks the controller out, not even when an input is wrong."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess

import pytest

from edge_deploy.sim import podman

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
    return ssh(fleet, robot, "-i", str(fleet.fleet.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes")


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
