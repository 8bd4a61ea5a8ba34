"""Releases on simulated robots over real SSH: push, health gate, rollback, watchdog, self-rollback,
refusals, a killed stage and a full disk. Everything lives under /opt/edge-app and
/var/lib/edge-agent, so the other fleet tests are not affected.

Short windows through variables: 2 s soak, 0.5 s probes, WatchdogSec 2 s for the faulty release,
StartLimitBurst 2. Every wait below is a bounded poll, never a timed assertion. One robot carries
the pushes; the cases run in order on it (v1 -> v2 -> ... -> v3.1.0), each from where the last left it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from edge_deploy import paths
from edge_deploy.release import bundle
from edge_deploy.release.repo import ReleaseRepository
from edge_deploy.sim import podman
from tests.repo import REPO

ROBOT = "nx-01"
AGENT = ["/opt/edge-agent/venv/bin/python", "/opt/edge-agent/edge-agent.pyz"]
CONFIG = "/etc/edge-agent/edge-app.json"
KEYS = "sha256sum /home/*/.ssh/authorized_keys"
ROLE_VARS = {
    "release_health_soak_seconds": 2,
    "release_health_interval_seconds": 0.5,
    "release_health_start_timeout_seconds": 15,
    "release_service_start_limit_burst": 2,
    "release_service_restart_seconds": 1,
    "release_service_watchdog_seconds": 10,
    "release_recover_interval": "3s",
}


class Releases:
    """A signed repository with the sample app in several versions (some of them faulty)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.repo = ReleaseRepository(str(tmp / "repo"), str(tmp / "keys"))
        self.repo.init()
        self.vars_file = tmp / "vars.json"

    def source(self, tag: str, config=None, **manifest) -> Path:
        return bundle.variant(
            str(REPO / "examples" / "sample_app"), str(self.tmp / ("src-" + tag)), config, **manifest
        )

    def publish(self, tag: str, repo: ReleaseRepository = None, **kwargs) -> None:
        built = bundle.build(str(self.source(tag, **kwargs)), tag, str(self.tmp / "build"))
        (repo or self.repo).add_release(built["path"])

    def variant(self, name: str, expiry=None) -> ReleaseRepository:
        """A copy of the repository (same keys) to sign or damage without touching the real one."""
        target = self.tmp / name
        shutil.copytree(self.tmp / "repo", target)
        return ReleaseRepository(str(target), str(self.tmp / "keys"), expiry)


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Releases:
    rel = Releases(tmp_path_factory.mktemp("releases"))
    rel.publish("v1.0.0")
    rel.publish("v2.0.0", config={"golden_index": 1})
    return rel


def push(fleet, releases, tag, repo=None, **extra):
    variables = dict(ROLE_VARS, release_repository=str(repo or releases.repo.repo), release_tag=tag, **extra)
    releases.vars_file.write_text(json.dumps(variables))
    return fleet.playbook("playbooks/release.yml", "-l", ROBOT, "-e", "@%s" % releases.vars_file)


def agent(fleet, robot, *args, config=CONFIG) -> dict:
    proc = fleet.exec(robot, *AGENT, "--config", config, "--json", *args)
    out = proc.stdout.strip().splitlines()
    assert out, "agent %s printed nothing (rc=%d): %s" % (args, proc.returncode, proc.stderr[-2000:])
    return json.loads(out[-1])


def status(fleet, robot=ROBOT) -> dict:
    return agent(fleet, robot, "status")


def sh(fleet, robot, script: str) -> subprocess.CompletedProcess:
    return fleet.exec(robot, "sh", "-c", script)


def wait_for(predicate, what: str, attempts: int = 120, delay: float = 0.5):
    """Poll `predicate` up to `attempts` times; return its first truthy value."""
    for _ in range(attempts):
        value = predicate()
        if value:
            return value
        time.sleep(delay)
    raise AssertionError("gave up waiting for " + what)


def kill_agent_when(fleet, args: str, ready, what: str) -> None:
    """Run the agent with `args` in the background on ROBOT and kill -9 it as soon as `ready()`."""
    command = "echo $$ > /tmp/agent.pid; exec %s --config %s %s" % (" ".join(AGENT), CONFIG, args)
    background = subprocess.Popen(
        ["podman", "exec", fleet.robots[ROBOT].container, "sh", "-c", command],
        env=dict(os.environ, CONTAINERS_CONF=str(paths.CONTAINERS_CONF)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(ready, what, attempts=400, delay=0.05)
        sh(fleet, ROBOT, "kill -9 $(cat /tmp/agent.pid)")
    finally:
        background.wait(timeout=60)


def tree_digest(fleet, robot, path) -> str:
    return sh(fleet, robot, "cd %s && find . -type f | sort | xargs sha256sum" % path).stdout


def test_push_v1_converges_hardened_and_idempotent(fleet, releases):
    first = push(fleet, releases, "v1.0.0")
    assert first.rc == 0, first.stdout[-4000:]
    now = status(fleet)
    assert now["current"] == "v1.0.0" and now["service"]["ActiveState"] == "active", now
    health = json.loads(sh(fleet, ROBOT, "curl -sf http://127.0.0.1:8080/healthz").stdout)
    assert health["ok"] and health["backend"] == "onnxruntime" and health["release"] == "v1.0.0"
    # exposure <= 4.0: systemd-analyze fails above the threshold (10 x the shown score)
    score = sh(fleet, ROBOT, "systemd-analyze security --threshold=40 edge-app.service")
    assert score.returncode == 0, score.stdout[-1500:]
    assert "Overall exposure level for edge-app.service" in score.stdout
    user = sh(fleet, ROBOT, "ps -o user= -p $(systemctl show -p MainPID --value edge-app)").stdout.strip()
    assert user == "edge-app"
    second = push(fleet, releases, "v1.0.0")
    assert second.changed() == {ROBOT: 0}, second.stdout[-4000:]


def test_converge_puts_back_what_drifted_on_the_robot(fleet, releases):
    """The role's probe skips what is in place: what drifted must still be found and put back."""
    watched = (
        "/etc/systemd/system/edge-app-rollback.service /etc/edge-agent/edge-app.json "
        "/var/lib/edge-agent/edge-app/incoming/metadata/timestamp.json /opt/edge-agent/edge-agent.pyz"
    )
    sums = "sha256sum %s" % watched
    before = sh(fleet, ROBOT, sums).stdout
    app_pid = status(fleet)["service"]["MainPID"]
    drift = sh(
        fleet,
        ROBOT,
        " && ".join(
            [
                "chmod 0777 /opt/edge-app/shared/data",
                "echo '# edited by hand' >> /etc/systemd/system/edge-app-rollback.service",
                "echo '{}' > /etc/edge-agent/edge-app.json",
                "echo 'not json' > /var/lib/edge-agent/edge-app/incoming/metadata/timestamp.json",
                "echo 'print(1)' > /opt/edge-agent/edge-agent.pyz",
                "systemctl disable --now edge-app-recover.timer",
                "gpasswd -d edge-app video",
            ]
        ),
    )
    assert drift.returncode == 0, drift.stderr
    assert sh(fleet, ROBOT, sums).stdout != before
    run = push(fleet, releases, "v1.0.0")
    assert run.rc == 0, run.stdout[-4000:]
    assert run.changed()[ROBOT] >= 6, run.stdout[-4000:]
    assert sh(fleet, ROBOT, sums).stdout == before
    assert sh(fleet, ROBOT, "stat -c %a /opt/edge-app/shared/data").stdout.strip() == "750"
    timer = sh(fleet, ROBOT, "for q in is-enabled is-active; do systemctl $q edge-app-recover.timer; done")
    assert timer.stdout.split() == ["enabled", "active"], timer.stdout
    assert "video" in sh(fleet, ROBOT, "id -nG edge-app").stdout.split()
    now = status(fleet)
    assert now["current"] == "v1.0.0" and now["service"]["MainPID"] == app_pid, now  # the app kept running
    again = push(fleet, releases, "v1.0.0")
    assert again.changed() == {ROBOT: 0}, again.stdout[-4000:]


def test_up_rollback_forward_keep_shared_data(fleet, releases):
    sh(
        fleet,
        ROBOT,
        "head -c 65536 /dev/urandom > /opt/edge-app/shared/data/map.bin && "
        "chown edge-app: /opt/edge-app/shared/data/map.bin",
    )
    data = tree_digest(fleet, ROBOT, "/opt/edge-app/shared/data")
    run = push(fleet, releases, "v2.0.0")
    assert run.rc == 0, run.stdout[-4000:]
    assert status(fleet)["current"] == "v2.0.0"
    config = json.loads(sh(fleet, ROBOT, "cat /opt/edge-app/shared/config/app.json").stdout)
    assert config["golden_index"] == 1
    back = agent(fleet, ROBOT, "rollback")
    assert back["ok"] and back["tag"] == "v1.0.0" and back["outside_state"] == "snapshot", back
    config = json.loads(sh(fleet, ROBOT, "cat /opt/edge-app/shared/config/app.json").stdout)
    assert config["golden_index"] == 0
    dropin = sh(fleet, ROBOT, "cat /etc/systemd/system/edge-app.service.d/50-release.conf").stdout
    assert "EDGE_RELEASE=v1.0.0" in dropin
    forward = agent(fleet, ROBOT, "rollback", "--tag", "v2.0.0")
    assert forward["ok"] and status(fleet)["current"] == "v2.0.0", forward
    assert tree_digest(fleet, ROBOT, "/opt/edge-app/shared/data") == data


def test_failing_health_gate_rolls_back_on_the_robot(fleet, releases):
    # healthy at first, failing within the soak window: the gate fails without waiting out the start timeout
    releases.publish("v2.1.0", config={"fault": "unhealthy", "fault_after_seconds": 1.5})
    run = push(fleet, releases, "v2.1.0")
    assert run.rc != 0
    assert "failed its health gate" in run.stdout and "rolled back to v2.0.0" in run.stdout, run.stdout[
        -4000:
    ]
    now = status(fleet)
    assert now["current"] == "v2.0.0" and now["service"]["ActiveState"] == "active"
    assert "v2.1.0" in now["bad"]


ATTACKS = ["older", "tampered", "bad_signature", "expired"]


@pytest.fixture
def attack_config(fleet):
    """The robot's agent config with a scratch trust store, so damaged repositories cannot move the
    robot's real TUF state; the app root (/opt/edge-app) is the real one."""
    config = json.loads(fleet.exec(ROBOT, "cat", CONFIG).stdout)
    config["state_dir"] = "/var/lib/edge-agent/edge-attack"
    fleet.exec(ROBOT, "sh", "-c", "cat > /etc/edge-agent/edge-attack.json", input_text=json.dumps(config))
    sh(
        fleet,
        ROBOT,
        "rm -rf /var/lib/edge-agent/edge-attack && mkdir -p /var/lib/edge-agent/edge-attack/tuf && "
        "cp /var/lib/edge-agent/edge-app/tuf/root_history/1.root.json "
        "/var/lib/edge-agent/edge-attack/tuf/root.json",
    )
    yield "/etc/edge-agent/edge-attack.json"
    sh(fleet, ROBOT, "rm -rf /var/lib/edge-agent/edge-attack /etc/edge-agent/edge-attack.json /tmp/attack-*")


@pytest.mark.parametrize("attack", ATTACKS)
def test_refused_releases_change_nothing(fleet, releases, attack_config, attack):
    before = tree_digest(fleet, ROBOT, "/opt/edge-app")
    tag, offered = "v9.%d.0" % ATTACKS.index(attack), releases.repo.repo
    if attack == "older":
        tag = "v1.0.0"
    else:
        expiry = {role: timedelta(days=-1) for role in ("targets", "snapshot", "timestamp")}
        variant = releases.variant("repo-" + attack, expiry if attack == "expired" else None)
        # content of its own: a file whose signed content a kept release holds is taken from
        # there, so a tampered copy of it would never be read
        releases.publish(tag, repo=variant, config={"attack": attack})
        offered = variant.repo
        if attack == "tampered":  # same length, other bytes
            config = Path(variant.repo) / "targets" / "edge-app" / tag / "config" / "app.json"
            config.write_text(config.read_text().replace('"tampered"', '"TAMPERED"', 1))
        elif attack == "bad_signature":  # signed content changed after signing
            targets = Path(variant.repo) / "metadata" / "targets.json"
            md = json.loads(targets.read_text())
            md["signed"]["targets"]["edge-app/%s/app.py" % tag]["length"] += 1
            targets.write_text(json.dumps(md))
    podman("cp", str(offered), "%s:/tmp/attack-%s" % (fleet.robots[ROBOT].container, attack))
    result = agent(
        fleet, ROBOT, "stage", "--repo", "/tmp/attack-" + attack, "--tag", tag, config=attack_config
    )
    assert not result["ok"] and result["error"]["kind"] == "refused", result
    expected = {
        "tampered": "LengthOrHashMismatch",
        "bad_signature": "UnsignedMetadata",
        "expired": "ExpiredMetadata",
        "older": "older than the installed",
    }[attack]
    assert expected in result["error"]["message"], result
    assert status(fleet)["current"] == "v2.0.0"
    assert tree_digest(fleet, ROBOT, "/opt/edge-app") == before


def test_agent_killed_mid_stage_then_rerun_completes(fleet, releases):
    releases.publish("v3.0.0")
    live = status(fleet)["current"]
    run = push(fleet, releases, "v3.0.0", release_activate_enabled=False, release_stage_enabled=True)
    assert run.rc == 0, run.stdout[-3000:]
    # Stage again from scratch, and kill the agent once its staging folder exists.
    sh(fleet, ROBOT, "rm -rf /opt/edge-app/releases/v3.0.0")
    kill_agent_when(
        fleet,
        "stage --repo /var/lib/edge-agent/edge-app/incoming --tag v3.0.0",
        lambda: sh(fleet, ROBOT, "ls -d /opt/edge-app/releases/.staging-v3.0.0-*").returncode == 0,
        "the staging folder",
    )
    now = status(fleet)
    assert now["current"] == live and now["service"]["ActiveState"] == "active"
    assert "v3.0.0" not in [r["tag"] for r in now["releases"]]
    rerun = agent(fleet, ROBOT, "stage", "--repo", "/var/lib/edge-agent/edge-app/incoming", "--tag", "v3.0.0")
    assert rerun["ok"] and rerun["changed"], rerun
    assert any(name.startswith(".staging-v3.0.0") for name in rerun["leftovers_removed"])
    assert sh(fleet, ROBOT, "ls -a /opt/edge-app/releases | grep -c staging").stdout.strip() == "0"


def test_agent_killed_mid_activation_is_undone_without_a_reboot(fleet, releases):
    """The agent dies inside `activate` (after the switch, before its health gate passed) while the
    robot stays up: the recover timer (or the app's restart, if the agent had already asked for it)
    puts the robot back on its gated release within the timer's interval, restarts the app there,
    and leaves the interrupted release free to be tried again."""
    live = status(fleet)["current"]
    assert live != "v3.0.0" and "v3.0.0" in [r["tag"] for r in status(fleet)["releases"]]
    data = tree_digest(fleet, ROBOT, "/opt/edge-app/shared/data")
    keys = sh(fleet, ROBOT, KEYS).stdout
    assert "authorized_keys" in keys, keys
    booted = sh(fleet, ROBOT, "ps -o lstart= -p 1").stdout
    # killed once the link names v3.0.0: the app runs a release whose gate has not passed
    kill_agent_when(
        fleet,
        "activate --tag v3.0.0",
        lambda: sh(fleet, ROBOT, "readlink /opt/edge-app/current").stdout.strip() == "releases/v3.0.0",
        "the switch to v3.0.0",
    )

    def undone():
        now = status(fleet)
        return now if not now["pending"] and now["service"]["ActiveState"] == "active" else None

    now = wait_for(undone, "the recover timer (every 3 s) to undo the switch", attempts=60)
    assert now["current"] == live, now
    assert now["last"]["op"] == "recover" and now["last"]["result"] == "ok", now["last"]
    assert now["last"]["reason"] == (
        "activate of v3.0.0 interrupted before its health gate passed (the robot or the agent "
        "stopped); v3.0.0 may be tried again"
    ), now["last"]
    assert "v3.0.0" not in now["bad"], now["bad"]
    # the app was restarted on the gated release: active as a unit first, then answering
    health = wait_for(
        lambda: sh(fleet, ROBOT, "curl -sf http://127.0.0.1:8080/healthz").stdout.strip(),
        "the restarted app to answer /healthz",
        attempts=40,
    )
    assert json.loads(health)["release"] == live, health
    # The recover timer undoes it, or the app's own start does (ExecStartPre=+ runs the same
    # recover) when the agent had already asked systemd to restart the app before it died.
    journal = sh(fleet, ROBOT, "journalctl -u edge-app-recover -u edge-app --no-pager -o cat").stdout
    assert "recovered: activate of v3.0.0 interrupted" in journal, journal[-2000:]
    assert sh(fleet, ROBOT, "ps -o lstart= -p 1").stdout == booted  # no reboot
    assert tree_digest(fleet, ROBOT, "/opt/edge-app/shared/data") == data
    assert sh(fleet, ROBOT, KEYS).stdout == keys
    again = agent(fleet, ROBOT, "activate", "--tag", "v3.0.0")  # tried again: its gate passes
    assert again["ok"] and again["health"]["passed"] and status(fleet)["current"] == "v3.0.0", again


def test_disk_full_during_stage_fails_cleanly(fleet, releases):
    """A second app root on a small tmpfs: v1 lives there, the disk fills, staging v3.0.5 fails cleanly."""
    container = fleet.robots[ROBOT].container
    small = {
        "app": "edge-app",
        "root": "/opt/edge-small",
        "state_dir": "/var/lib/edge-agent/edge-small",
        "systemd": False,
        # its own unit folder: the drop-in it writes must not replace the real edge-app's
        "systemd_dir": "/var/lib/edge-agent/edge-small/systemd",
        "python": AGENT[0],
        "agent_path": AGENT[1],
        "engine_backend": "onnxruntime",
    }
    setup = (
        "mkdir -p /opt/edge-small /var/lib/edge-agent/edge-small/tuf && "
        "mount -t tmpfs -o size=1m tmpfs /opt/edge-small && "
        "cp /var/lib/edge-agent/edge-app/tuf/root_history/1.root.json "
        "/var/lib/edge-agent/edge-small/tuf/root.json"
    )
    assert podman("exec", "--privileged", container, "sh", "-c", setup, check=False).returncode == 0
    try:
        fleet.exec(ROBOT, "sh", "-c", "cat > /etc/edge-agent/edge-small.json", input_text=json.dumps(small))
        cfg = "/etc/edge-agent/edge-small.json"
        incoming = "/var/lib/edge-agent/edge-small/incoming"
        # the signed repository, copied in
        sh(fleet, ROBOT, "mkdir -p " + incoming)
        podman("cp", str(Path(releases.repo.repo) / "targets"), "%s:%s/" % (container, incoming))
        podman("cp", str(Path(releases.repo.repo) / "metadata"), "%s:%s/" % (container, incoming))
        assert agent(fleet, ROBOT, "stage", "--repo", incoming, "--tag", "v1.0.0", config=cfg)["ok"]
        assert agent(fleet, ROBOT, "activate", "--tag", "v1.0.0", config=cfg)["ok"]
        before = tree_digest(fleet, ROBOT, "/opt/edge-small/releases")
        # leave about 16 KiB free
        sh(
            fleet,
            ROBOT,
            "free=$(df --output=avail -k /opt/edge-small | tail -1); "
            "head -c $(( (free - 16) * 1024 )) /dev/zero > /opt/edge-small/filler",
        )
        # v3.0.5 brings 64 KiB of new content (files it shares with v1.0.0 are linked, not copied)
        releases.publish("v3.0.5", config={"padding": "x" * 65536})
        podman("cp", str(Path(releases.repo.repo) / "targets"), "%s:%s/" % (container, incoming))
        podman("cp", str(Path(releases.repo.repo) / "metadata"), "%s:%s/" % (container, incoming))
        full = agent(fleet, ROBOT, "stage", "--repo", incoming, "--tag", "v3.0.5", config=cfg)
        assert not full["ok"] and "disk full while staging v3.0.5" in full["error"]["message"], full
        assert tree_digest(fleet, ROBOT, "/opt/edge-small/releases") == before
        assert agent(fleet, ROBOT, "status", config=cfg)["current"] == "v1.0.0"
        sh(fleet, ROBOT, "rm /opt/edge-small/filler")
        assert agent(fleet, ROBOT, "stage", "--repo", incoming, "--tag", "v3.0.5", config=cfg)["changed"]
    finally:
        podman(
            "exec",
            "--privileged",
            container,
            "sh",
            "-c",
            "umount /opt/edge-small; rm -rf /opt/edge-small /var/lib/edge-agent/edge-small "
            "/etc/edge-agent/edge-small.json",
            check=False,
        )


def test_hang_then_crash_loop_rolls_back_by_itself(fleet, releases):
    """A release that passes its gate, then hangs (the watchdog kills it) and, restarted, crashes,
    until systemd gives up; the OnFailure= unit then rolls the robot back with no controller."""
    tag = "v3.1.0"
    if status(fleet)["current"] != "v3.0.0":
        assert agent(fleet, ROBOT, "activate", "--tag", "v3.0.0")["ok"]
    releases.publish(tag, config={"fault": ["hang", "crash"], "fault_after_seconds": 4}, watchdog_seconds=2)
    run = push(fleet, releases, tag)
    assert run.rc == 0, run.stdout[-4000:]
    assert status(fleet)["current"] == tag

    def rolled_back():
        now = status(fleet)
        done = now["current"] == "v3.0.0" and (now["last"] or {}).get("op") == "rollback"
        return now if done and now["service"]["ActiveState"] == "active" else None

    try:
        back = wait_for(rolled_back, "the self-rollback to v3.0.0", attempts=180)
    except AssertionError as exc:
        units = sh(fleet, ROBOT, "journalctl -u 'edge-app*' --no-pager -o short-monotonic | tail -60").stdout
        raise AssertionError("%s\nstatus: %s\n%s" % (exc, json.dumps(status(fleet)), units)) from None
    # first start: hung, killed by the watchdog; second start: crashed; no third start (StartLimitBurst=2)
    journal = sh(fleet, ROBOT, "journalctl -u edge-app --no-pager -o cat").stdout
    assert "Watchdog timeout" in journal and "injected hang" in journal, journal[-3000:]
    assert "injected crash" in journal, journal[-3000:]
    starts = sh(fleet, ROBOT, "cat /opt/edge-app/shared/logs/fault-starts-" + tag).stdout.strip()
    assert starts == "2", starts
    assert "crash loop" in back["bad"][tag], back
    assert back["last"]["result"] == "ok" and back["last"]["from"] == tag, back
