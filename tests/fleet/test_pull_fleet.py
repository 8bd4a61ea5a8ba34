"""Pull mode on a simulated robot over real SSH: the release role turns the OTA timer on, and
`<app>-update.service` takes the newest signed release from a repository served over HTTP on the
robot's own loopback (the robot reaches nothing else). A release failing its health gate goes
back and is never taken again; a mission-locked robot stages but does not activate; files kept
releases hold are not downloaded again. Over HTTPS with a private CA the robot trusts nothing
until the role gives it that CA; meanwhile the pull fails as unreachable and changes nothing.
Faults, each ending on a release that passed its gate with the robot's data intact: the OTA unit
run with a clock 400 days ahead or behind (libfaketime) fails and says so in the status; a release
server that cuts, stalls or overruns a download is named and the next run starts again; damaged
metadata or files are refused in words, in pull and in push (the agent's stage from a folder).

Short windows through variables (1 s health soak). Every wait is a bounded poll.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_deploy import paths
from edge_deploy.sim import podman
from tests.repo import REPO
from tests.tls import throwaway_ca

from .test_release_fleet import ROLE_VARS, Releases, agent, sh, status, wait_for

ROBOT = "agx-01"
PORT = 8765
SERVED = "/srv/edge-releases"
LOCK_FILE = "/run/edge-app/mission-lock.json"
TIMER_DROPIN_DIR = "/etc/systemd/system/edge-app-update.timer.d"
TIMER_DROPIN = "tests-only-manual-runs.conf"


class Pull:
    def __init__(self, fleet, releases: Releases, tmp: Path):
        self.fleet = fleet
        self.releases = releases
        self.vars_file = tmp / "pull-vars.json"

    def serve(self) -> None:
        """Copy the signed repository onto the robot (what a release server would hold)."""
        container = self.fleet.robots[ROBOT].container
        sh(self.fleet, ROBOT, "rm -rf %s && mkdir -p %s" % (SERVED, SERVED))
        for part in ("metadata", "targets"):
            podman("cp", str(Path(self.releases.repo.repo) / part), "%s:%s/" % (container, SERVED))

    def converge(self, **extra):
        variables = dict(
            ROLE_VARS,
            release_health_soak_seconds=1,
            release_repository=str(self.releases.repo.repo),
            release_pull_enabled=True,
            release_pull_url="http://127.0.0.1:%d/" % PORT,
        )
        variables.update(extra)
        self.vars_file.write_text(json.dumps(variables))
        return self.fleet.playbook("playbooks/release.yml", "-l", ROBOT, "-e", "@%s" % self.vars_file)

    def timer_run(self, unit_fails: bool = False) -> dict:
        """Start the unit the timer starts; return the agent's JSON from this run's journal."""
        cursor = sh(self.fleet, ROBOT, "journalctl -n 0 --show-cursor -q | tail -1").stdout
        cursor = cursor.split("cursor:", 1)[-1].strip()
        started = sh(self.fleet, ROBOT, "systemctl start edge-app-update.service")
        assert (started.returncode != 0) == unit_fails, started.stderr[-2000:]
        log = sh(
            self.fleet,
            ROBOT,
            "journalctl -u edge-app-update.service -o cat --no-pager --after-cursor '%s'" % cursor,
        ).stdout
        found = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        found = [entry for entry in found if entry.get("command") == "pull"]
        assert found, log[-3000:]
        return found[-1]


@pytest.fixture(scope="module")
def pull(fleet, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pull")
    releases = Releases(tmp)
    releases.publish("v1.0.0")
    releases.publish("v2.0.0", config={"golden_index": 1})
    state = Pull(fleet, releases, tmp)
    state.serve()
    # The tests start the timer's unit themselves. The timer's own first run would come at a random
    # moment (OnBootSec is long past on a shared fleet, plus RandomizedDelaySec) and could take a
    # release before a test does: a drop-in of the test's moves its only trigger a month away.
    quiet = sh(
        fleet,
        ROBOT,
        "mkdir -p %s && printf '[Timer]\\nOnBootSec=\\nOnUnitInactiveSec=\\nOnActiveSec=30d\\n' >%s/%s "
        "&& systemctl daemon-reload" % (TIMER_DROPIN_DIR, TIMER_DROPIN_DIR, TIMER_DROPIN),
    )
    assert quiet.returncode == 0, quiet.stderr
    server = sh(
        fleet,
        ROBOT,
        "systemd-run --unit edge-releases-http --property=Restart=on-failure "
        "python3 -m http.server %d --bind 127.0.0.1 --directory %s" % (PORT, SERVED),
    )
    assert server.returncode == 0, server.stderr
    wait_for(
        lambda: sh(fleet, ROBOT, "curl -sf http://127.0.0.1:%d/metadata/1.root.json" % PORT).returncode == 0,
        "the release server on the robot",
    )
    try:
        yield state
    finally:
        sh(
            fleet,
            ROBOT,
            "systemctl stop edge-releases-http edge-app-update.timer; rm -f %s %s/%s; systemctl daemon-reload"
            % (LOCK_FILE, TIMER_DROPIN_DIR, TIMER_DROPIN),
        )
        shutil.rmtree(tmp, ignore_errors=True)


def test_role_turns_the_timer_on_idempotently(pull):
    first = pull.converge()
    assert first.rc == 0, first.stdout[-4000:]
    for probe in ("is-enabled", "is-active"):
        out = sh(pull.fleet, ROBOT, "systemctl %s edge-app-update.timer" % probe).stdout.strip()
        assert out in ("enabled", "active"), (probe, out)
    config = json.loads(sh(pull.fleet, ROBOT, "cat /etc/edge-agent/edge-app.json").stdout)
    assert config["repository_url"] == "http://127.0.0.1:%d/" % PORT
    second = pull.converge()
    assert second.changed() == {ROBOT: 0}, second.stdout[-4000:]
    refused = pull.converge(release_pull_url="")
    assert refused.rc != 0 and "release_pull_url is empty" in refused.stdout, refused.stdout[-2000:]


def test_timer_pulls_the_newest_release(pull):
    result = pull.timer_run()
    assert result["ok"] and result.get("tag") == "v2.0.0" and result["current"] == "v2.0.0", result
    now = status(pull.fleet, ROBOT)
    assert now["current"] == "v2.0.0" and now["service"]["ActiveState"] == "active", now
    health = json.loads(sh(pull.fleet, ROBOT, "curl -sf http://127.0.0.1:8080/healthz").stdout)
    assert health["release"] == "v2.0.0", health
    again = pull.timer_run()
    assert again["changed"] is False and again["reason"].startswith("up to date"), again


def test_unhealthy_release_goes_back_and_is_not_taken_again(pull):
    pull.releases.publish("v3.0.0", config={"fault": "unhealthy"})
    pull.serve()
    failed = agent(pull.fleet, ROBOT, "pull")
    assert not failed["ok"] and failed["error"]["kind"] == "rolled_back", failed
    now = status(pull.fleet, ROBOT)
    assert now["current"] == "v2.0.0" and "v3.0.0" in now["bad"], now
    # the unit treats a refused or rolled-back release as a handled outcome, not a unit failure
    after = pull.timer_run()
    assert after["changed"] is False and after["skipped"] == {"v3.0.0": "marked bad: " + now["bad"]["v3.0.0"]}
    unit = sh(pull.fleet, ROBOT, "systemctl show -p Result --value edge-app-update.service").stdout.strip()
    assert unit == "success", unit


def test_mission_lock_defers_then_only_changed_files_are_downloaded(pull):
    pull.releases.publish("v4.0.0", config={"golden_index": 2})
    pull.serve()
    lock = json.dumps({"busy": True, "reason": "docking"})
    sh(pull.fleet, ROBOT, "mkdir -p /run/edge-app && printf '%%s' '%s' > %s" % (lock, LOCK_FILE))
    deferred = pull.timer_run()
    assert deferred["deferred"] == "docking" and deferred["tag"] == "v4.0.0", deferred
    assert status(pull.fleet, ROBOT)["current"] == "v2.0.0"
    stage = deferred["stage"]
    # only the config and the manifest changed since v2.0.0: the model came from the kept release
    assert stage["reused_bytes"] > 10 * stage["downloaded_bytes"] > 0, stage
    sh(pull.fleet, ROBOT, "rm -f " + LOCK_FILE)
    done = pull.timer_run()
    assert done["tag"] == "v4.0.0" and done["current"] == "v4.0.0", done
    assert status(pull.fleet, ROBOT)["service"]["ActiveState"] == "active"


HTTPS_PORT = 8766
TLS_DIR = "/srv/edge-tls"


def test_https_repository_signed_by_a_private_ca(pull, tmp_path):
    ca, cert, key = throwaway_ca(tmp_path)
    container = pull.fleet.robots[ROBOT].container
    sh(pull.fleet, ROBOT, "rm -rf %s && mkdir -p %s" % (TLS_DIR, TLS_DIR))
    for path in (ca, cert, key, REPO / "tests" / "https_server.py"):
        podman("cp", str(path), "%s:%s/" % (container, TLS_DIR))
    url = "https://127.0.0.1:%d/" % HTTPS_PORT
    server = sh(
        pull.fleet,
        ROBOT,
        f"systemd-run --unit edge-releases-https python3 {TLS_DIR}/https_server.py {HTTPS_PORT} {SERVED} "
        f"{TLS_DIR}/{cert.name} {TLS_DIR}/{key.name}",
    )
    assert server.returncode == 0, server.stderr
    try:
        probe = "curl -sf --cacert %s/ca.pem %smetadata/1.root.json" % (TLS_DIR, url)
        wait_for(lambda: sh(pull.fleet, ROBOT, probe).returncode == 0, "the HTTPS server on the robot")
        pull.releases.publish("v5.0.0", config={"golden_index": 3})
        pull.serve()
        # the robot's system store does not hold the CA: nothing is verified, nothing changes
        plain = pull.converge(release_pull_url=url)
        assert plain.rc == 0, plain.stdout[-4000:]
        unreachable = agent(pull.fleet, ROBOT, "pull")
        assert not unreachable["ok"] and unreachable["error"]["kind"] == "unreachable", unreachable
        message = unreachable["error"]["message"]
        assert "CERTIFICATE_VERIFY_FAILED" in message and "release_pull_ca_certificate" in message, message
        now = status(pull.fleet, ROBOT)
        assert now["current"] == "v4.0.0" and now["pull"]["result"] == "unreachable", now
        # the timer's unit fails (the reason is in its journal), unlike a refused release
        sh(pull.fleet, ROBOT, "systemctl start edge-app-update.service")
        unit = sh(pull.fleet, ROBOT, "systemctl show -p Result --value edge-app-update.service").stdout
        assert unit.strip() == "exit-code", unit

        trusted = pull.converge(release_pull_url=url, release_pull_ca_certificate=str(ca))
        assert trusted.rc == 0, trusted.stdout[-4000:]
        installed = sh(pull.fleet, ROBOT, "cat /etc/edge-agent/edge-app-repository-ca.pem").stdout
        assert installed == ca.read_text()
        config = json.loads(sh(pull.fleet, ROBOT, "cat /etc/edge-agent/edge-app.json").stdout)
        assert config["ca_file"] == "/etc/edge-agent/edge-app-repository-ca.pem", config
        again = pull.converge(release_pull_url=url, release_pull_ca_certificate=str(ca))
        assert again.changed() == {ROBOT: 0}, again.stdout[-4000:]
        result = pull.timer_run()
        assert result["tag"] == "v5.0.0" and result["current"] == "v5.0.0", result
        # not a certificate: refused by the role before anything changes on the robot
        bogus = pull.converge(release_pull_url=url, release_pull_ca_certificate=str(key))
        assert bogus.rc != 0 and "holds no PEM certificate" in bogus.stdout, bogus.stdout[-2000:]
        assert sh(pull.fleet, ROBOT, "cat /etc/edge-agent/edge-app-repository-ca.pem").stdout == installed
    finally:
        sh(pull.fleet, ROBOT, "systemctl stop edge-releases-https; rm -rf %s" % TLS_DIR)


SYSTEM_SITE = "/usr/local/lib/python3.11/dist-packages"
VENV_PYTHON = "/opt/edge-agent/venv/bin/python"


def tuf_wheel(tmp: Path) -> Path:
    """The robot image's own python-tuf wheel (kept by the image recipe), else PyPI's."""
    pinned = next(line.strip() for line in (paths.SIM_DIR / "image" / "wheels.txt").open()
                  if line.lower().startswith("tuf=="))
    cache = Path(os.environ.get("EDGE_SIM_CACHE", "/var/cache/edge-deploy")) / "wheels"
    name = "tuf-%s-py3-none-any.whl" % pinned.split("==")[1]
    if (cache / name).is_file():
        return cache / name
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(tmp), pinned],
                   check=True, timeout=300)
    return tmp / name


def test_role_stops_without_python_tuf_and_installs_the_wheel_it_is_given(pull, tmp_path):
    """JetPack images ship no python-tuf: the role says so and how to fix it, then installs it."""
    wheel = tuf_wheel(tmp_path)
    container = pull.fleet.robots[ROBOT].container
    hide = "mv {0}/tuf {0}/tuf.hidden && mv {0}/{1} {0}/{1}.hidden".format(SYSTEM_SITE, "tuf-*.dist-info")
    hidden = sh(pull.fleet, ROBOT, hide)
    assert hidden.returncode == 0, hidden.stderr
    try:
        before = status(pull.fleet, ROBOT)
        stopped = pull.converge()
        assert stopped.rc != 0, stopped.stdout[-3000:]
        told = stopped.stdout
        assert "cannot import python-tuf" in told and "tuf>=5,<6" in told, told[-3000:]
        sh(pull.fleet, ROBOT, "mkdir -p /tmp/edge-wheels")
        podman("cp", str(wheel), "%s:/tmp/edge-wheels/" % container)
        given = ["/tmp/edge-wheels/" + wheel.name]
        installed = pull.converge(release_agent_pip_packages=given)
        assert installed.rc == 0, installed.stdout[-4000:]
        found = sh(pull.fleet, ROBOT, "%s -c 'import tuf; print(tuf.__file__)'" % VENV_PYTHON).stdout
        assert found.startswith("/opt/edge-agent/venv/"), found
        again = pull.converge(release_agent_pip_packages=given)
        assert again.changed() == {ROBOT: 0}, again.stdout[-4000:]
        after = status(pull.fleet, ROBOT)
        assert after["current"] == before["current"] and after["service"]["ActiveState"] == "active", after
    finally:
        sh(pull.fleet, ROBOT, "%s -m pip uninstall --yes --quiet tuf; rm -rf /tmp/edge-wheels; "
           "for d in %s/*.hidden; do mv \"$d\" \"${d%%.hidden}\"; done" % (VENV_PYTHON, SYSTEM_SITE))


# ---------------------------------------------------------------------------------------- faults
DATA = "/opt/edge-app/shared/data/faults.bin"
DROPIN = "/etc/systemd/system/edge-app-update.service.d/50-faketime.conf"
FAULTY_PORT = 8767
FAULTY_DIR = "/srv/edge-faulty"
FAULTY_CONFIG = "/etc/edge-agent/edge-faulty.json"


def robot_data(pull) -> str:
    return sh(pull.fleet, ROBOT, "sha256sum %s" % DATA).stdout.split()[0]


def pull_words(pull) -> str:
    """The robot's `pull` column as `edge-deploy status` shows it (from the same agent status)."""
    from edge_deploy.status import robot_row

    return robot_row(ROBOT, {"ansible_local": {"edge_release": status(pull.fleet, ROBOT)}})["pull"]


def ends_live(pull, tag: str, data: str) -> dict:
    result = pull.timer_run()
    assert result["ok"] and result["tag"] == tag and result["current"] == tag, result
    assert result["activate"]["health"]["passed"], result
    now = status(pull.fleet, ROBOT)
    assert now["current"] == tag and now["service"]["ActiveState"] == "active", now
    assert robot_data(pull) == data
    return result


def test_a_wrong_clock_fails_the_unit_and_says_so(pull):
    sh(pull.fleet, ROBOT, "head -c 65536 /dev/urandom > %s && chown edge-app: %s" % (DATA, DATA))
    data, live = robot_data(pull), status(pull.fleet, ROBOT)["current"]
    pull.releases.publish("v6.0.0", config={"note": "clock"})
    pull.serve()
    library = sh(pull.fleet, ROBOT, "dpkg -L libfaketime | grep '/libfaketime.so.1$'").stdout.strip()
    assert library, "libfaketime is not in the simulated robot's image"
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    dropin = "[Service]\\nEnvironment=LD_PRELOAD=%s FAKETIME=%s FAKETIME_DONT_FAKE_MONOTONIC=1\\n"
    try:
        for days, says in ((400, "the repository server says %s" % today), (-400, "later than that")):
            sh(pull.fleet, ROBOT, "mkdir -p %s && printf '%s' > %s && systemctl daemon-reload"
               % (os.path.dirname(DROPIN), dropin % (library, "%+dd" % days), DROPIN))
            robot_day = (datetime.now(timezone.utc) + timedelta(days=days)).strftime("%Y-%m-%d")
            failed = pull.timer_run(unit_fails=True)
            assert not failed["ok"] and failed["error"]["kind"] == "clock", failed
            message = failed["error"]["message"]
            assert message.startswith("clock wrong: this robot says " + robot_day), message
            assert says in message, message
            unit = sh(pull.fleet, ROBOT, "systemctl show -p Result -p ExecMainStatus edge-app-update.service")
            assert unit.stdout.split() == ["Result=exit-code", "ExecMainStatus=7"], unit.stdout
            shown = pull_words(pull)
            assert shown.startswith("clock - at " + robot_day) and message in shown, shown
            assert status(pull.fleet, ROBOT)["current"] == live
    finally:
        sh(pull.fleet, ROBOT, "rm -f %s && systemctl daemon-reload" % DROPIN)
    ends_live(pull, "v6.0.0", data)


def serve_faulty(pull, fault: str) -> str:
    """The release server on another port, misbehaving on the release's config file."""
    sh(pull.fleet, ROBOT, "systemctl stop edge-releases-faulty; systemctl reset-failed edge-releases-faulty")
    started = sh(
        pull.fleet,
        ROBOT,
        "systemd-run --unit edge-releases-faulty python3 %s/https_server.py %d %s --fault %s "
        "--match config/app.json --stall-seconds 5" % (FAULTY_DIR, FAULTY_PORT, SERVED, fault),
    )
    assert started.returncode == 0, started.stderr
    url = "http://127.0.0.1:%d/" % FAULTY_PORT
    probe = "curl -sf %smetadata/1.root.json" % url
    wait_for(lambda: sh(pull.fleet, ROBOT, probe).returncode == 0, "the faulty release server")
    return url


def test_download_faults_are_named_and_the_next_run_starts_again(pull):
    data = robot_data(pull)
    pull.releases.publish("v7.0.0", config={"note": "faults"})  # only the config and manifest are new
    pull.serve()
    container = pull.fleet.robots[ROBOT].container
    sh(pull.fleet, ROBOT, "rm -rf %s && mkdir -p %s" % (FAULTY_DIR, FAULTY_DIR))
    podman("cp", str(REPO / "tests" / "https_server.py"), "%s:%s/" % (container, FAULTY_DIR))
    config = json.loads(sh(pull.fleet, ROBOT, "cat /etc/edge-agent/edge-app.json").stdout)
    config.update(download_stall_seconds=1, download_timeout_seconds=30)
    pull.fleet.exec(ROBOT, "sh", "-c", "cat > %s" % FAULTY_CONFIG, input_text=json.dumps(config))
    name = "edge-app/v7.0.0/config/app.json"
    expected = {
        "cut": r"connection cut after \d+ of \d+ bytes of ",
        "stall": r"server stalled: no data for 1 s \(download_stall_seconds\) after \d+ of \d+ bytes of ",
        "too-long": r"the server sent more than the \d+ bytes the signed metadata declares for ",
    }
    try:
        for fault, words in expected.items():
            url = serve_faulty(pull, fault)
            failed = agent(pull.fleet, ROBOT, "pull", "--repo", url, config=FAULTY_CONFIG)
            assert not failed["ok"] and failed["error"]["kind"] == "unreachable", failed
            message = failed["error"]["message"]
            assert re.match("release edge-app v7.0.0: " + words + re.escape(name), message), message
            assert "the next run downloads it again from its first byte" in message, message
            assert message in pull_words(pull)
            partial = sh(pull.fleet, ROBOT, "find /opt/edge-app -name '.staging-*' -o -name '.part-*'").stdout
            assert partial == "", partial
            assert "v7.0.0" not in [r["tag"] for r in status(pull.fleet, ROBOT)["releases"]]
    finally:
        stop = "systemctl stop edge-releases-faulty; rm -rf %s %s" % (FAULTY_DIR, FAULTY_CONFIG)
        sh(pull.fleet, ROBOT, stop)
    done = ends_live(pull, "v7.0.0", data)
    assert done["restarted"] == message, done
    assert "started them again from the first byte" in status(pull.fleet, ROBOT)["pull"]["message"]


def test_damaged_metadata_or_files_are_refused_in_words(pull):
    data, live = robot_data(pull), status(pull.fleet, ROBOT)["current"]
    pull.releases.publish("v8.0.0", config={"note": "damaged"})
    served = "http://127.0.0.1:%d/" % PORT
    damage = {  # a file cut to its first 7 bytes on the server
        "metadata/timestamp.json": "DeserializationError: metadata/timestamp.json from {} is not valid TUF",
        "targets/edge-app/v8.0.0/config/app.json": "LengthOrHashMismatchError: Observed length 7 does not "
        "match expected length",
    }
    try:
        for path, words in damage.items():
            pull.serve()
            sh(pull.fleet, ROBOT, "truncate -s 7 %s/%s" % (SERVED, path))
            refused = pull.timer_run()  # exit 3: a handled outcome, the unit does not fail
            assert not refused["ok"] and refused["error"]["kind"] == "refused", refused
            message = refused["error"]["message"]
            assert words.format(served) in message and message in pull_words(pull), message
            # push mode reads a copy on the robot through the same fetcher and checks
            sh(pull.fleet, ROBOT, "rm -rf /tmp/damaged && cp -r %s /tmp/damaged" % SERVED)
            pushed = agent(pull.fleet, ROBOT, "stage", "--repo", "/tmp/damaged", "--tag", "v8.0.0")
            assert not pushed["ok"] and pushed["error"]["kind"] == "refused", pushed
            assert words.format("file:///tmp/damaged/") in pushed["error"]["message"], pushed
            assert status(pull.fleet, ROBOT)["current"] == live
    finally:
        sh(pull.fleet, ROBOT, "rm -rf /tmp/damaged")
    pull.serve()
    ends_live(pull, "v8.0.0", data)
