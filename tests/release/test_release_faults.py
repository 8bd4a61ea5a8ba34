"""Faults around a release, on loopback: a robot whose clock is wrong, a release server that sends
too much, cuts the connection, stalls or trickles, and damaged metadata or files, in pull mode
(over HTTP) and push mode (a repository folder on the robot, read through the same fetcher).

Each fault is a refusal or a failure in words, with no traceback, nothing staged and nothing
changed; each test ends with the robot on a release that passed its gate and its data intact.
A wrong clock is simulated by shifting the time python-tuf checks expiry against (the fleet test
runs the agent under libfaketime instead).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import types
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import FakeSystemd
from test_release_agent import tree

from edge_agent import cli, clock
from edge_agent.errors import ClockWrong, Refused, Unreachable
from edge_common import exitcodes, signing
from edge_deploy import status as fleet_status
from edge_deploy.release.repo import ReleaseRepository
from tests.tls import ServedRepository

MODEL = os.urandom(256 * 1024)  # bigger than one read: "half of it" is some reads in
STAMP = "%Y-%m-%dT%H:%M:%SZ"


@pytest.fixture
def served(releases, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    repo = ServedRepository(releases.repo_dir, stall_seconds=3)
    yield repo
    repo.close()


@pytest.fixture
def robot_clock(monkeypatch):
    """Shift the clock python-tuf checks expiry against (ngclient's reference time), as a robot
    with a wrong clock has it; the server and the signing keep the true time."""
    from tuf.ngclient._internal import trusted_metadata_set

    monkeypatch.setattr(clock, "sync_state", lambda: None)  # as on a robot with no time sync service

    def shift(delta: timedelta) -> None:
        class Shifted(datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime.now(tz) + delta

        fake = types.SimpleNamespace(datetime=Shifted, timezone=timezone, timedelta=timedelta)
        monkeypatch.setattr(trusted_metadata_set, "datetime", fake)

    return shift


def live_robot(releases, make_agent, repo: str, **config):
    """A robot on v1.0.0 (gate passed) with data of its own; returns the agent and that data."""
    agent = make_agent(systemd=FakeSystemd(), **config)
    releases.publish("v1.0.0")
    first = agent.pull(repo)
    assert first["activate"]["health"]["passed"] and agent.current_tag() == "v1.0.0", first
    data = Path(agent.cfg.shared_dir) / "data" / "map.bin"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_bytes(os.urandom(4096))
    return agent, data.read_bytes()


def leftovers(agent) -> list:
    found = []
    for _base, dirs, files in os.walk(agent.cfg.root):
        found += [n for n in dirs + files if n.startswith((".staging-", ".verify-", ".part-"))]
    return found


def ends_live(agent, repo: str, tag: str, data: bytes) -> dict:
    """The next pull takes `tag` behind its gate, and the robot's data is what it was."""
    result = agent.pull(repo)
    assert result["tag"] == tag and agent.current_tag() == tag, result
    assert result["activate"]["health"]["passed"], result
    assert (Path(agent.cfg.shared_dir) / "data" / "map.bin").read_bytes() == data
    assert leftovers(agent) == []
    return result


def words(agent) -> str:
    """The pull column of `edge-deploy status` for this robot, from its own status."""
    row = fleet_status.robot_row("robot", {"ansible_local": {"edge_release": agent.status()}})
    return row["pull"]


# ------------------------------------------------------------------------- 2. a wrong clock
def test_a_clock_far_ahead_is_the_clocks_fault_and_fails_the_run(
    releases, make_agent, served, robot_clock, tmp_path, capsys
):
    agent, data = live_robot(releases, make_agent, served.url)
    releases.publish("v1.1.0")
    before = tree(Path(agent.cfg.root))
    robot_clock(timedelta(days=400))
    ahead = (datetime.now(timezone.utc) + timedelta(days=400)).strftime("%Y-%m-%d")
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    with pytest.raises(ClockWrong) as wrong:
        agent.pull(served.url)
    message = wrong.value.message
    assert message.startswith("clock wrong: this robot says %s" % ahead), message
    assert "the repository server says %s" % today in message, message
    # 400 days: past even root.json's year (python-tuf checks it first)
    assert "root.json expired" in message and "the repository's metadata was signed %s" % today in message
    assert "Fix the robot's clock (not synchronized, no time sync service runs)" in message, message
    assert agent.current_tag() == "v1.0.0" and tree(Path(agent.cfg.root)).keys() - {"state.json"} == (
        before.keys() - {"state.json"}
    )
    noted = agent.status()["pull"]
    assert (noted["result"], noted["message"]) == ("clock", message), noted
    shown = words(agent)
    assert shown.startswith("clock - at ") and "clock wrong: this robot says %s" % ahead in shown, shown
    # the command line: exit 7 (not 3, which the OTA unit counts as handled), the words in the JSON
    config = tmp_path / "agent.json"
    config.write_text(json.dumps(agent.cfg.data))
    assert cli.main(["--config", str(config), "--json", "pull", "--repo", served.url]) == exitcodes.CLOCK
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["error"]["kind"] == "clock" and printed["error"]["message"].startswith("clock wrong")

    robot_clock(timedelta(0))  # NTP set it right
    ends_live(agent, served.url, "v1.1.0", data)


def test_a_clock_behind_the_signing_time_is_the_clocks_fault_in_push_and_pull(
    releases, make_agent, served, robot_clock
):
    agent, data = live_robot(releases, make_agent, served.url)
    releases.publish("v1.1.0")
    robot_clock(-timedelta(days=400))  # a reset RTC: the metadata looks valid, but signed in the future
    behind = (datetime.now(timezone.utc) - timedelta(days=400)).strftime("%Y-%m-%d")
    for where in (served.url, str(releases.repo_dir)):
        with pytest.raises(ClockWrong) as wrong:
            agent.stage(where, "v1.1.0")
        message = wrong.value.message
        assert message.startswith("clock wrong: this robot says %s" % behind), message
        assert "later than that: its clock is behind" in message, message
    with pytest.raises(ClockWrong):
        agent.pull(served.url)
    assert agent.current_tag() == "v1.0.0" and "v1.1.0" not in agent.kept()
    assert agent.status()["pull"]["result"] == "clock"
    robot_clock(timedelta(0))
    ends_live(agent, served.url, "v1.1.0", data)


def test_expired_metadata_names_the_command_that_renews_it(releases, make_agent, served, expired_repo):
    agent, data = live_robot(releases, make_agent, served.url)
    releases.publish("v1.1.0", repo=expired_repo)  # the controller's clock is right; nobody renewed
    refresh = "edge-deploy release refresh --repo <repository> --keys <keys>"
    # push mode: a folder tells nothing of the repository's clock, so both remedies are named
    with pytest.raises(Refused) as push:
        agent.stage(str(releases.repo_dir), "v1.1.0")
    message = push.value.message
    assert "ExpiredMetadataError: timestamp.json is expired (timestamp.json expired " in message, message
    assert refresh in message and "if this robot's clock is wrong, fix the clock instead" in message, message
    # pull mode: the server's clock agrees with the robot's, so the metadata is what expired
    with pytest.raises(Refused) as pull:
        agent.pull(served.url)
    message = pull.value.message
    assert refresh in message and "fix the clock instead" not in message, message
    assert agent.status()["pull"]["result"] == "refused" and refresh in words(agent)
    assert agent.current_tag() == "v1.0.0"
    # the command it names, as a user runs it: targets expired too, so it renews them as well
    from edge_deploy.cli import main as edge_deploy

    keys = ["--repo", str(releases.repo_dir), "--keys", str(releases.keys)]
    assert edge_deploy(["release", "refresh", *keys]) == 0
    renewed = ReleaseRepository(str(releases.repo_dir), str(releases.keys)).expiries()
    assert all(datetime.strptime(v, STAMP) > datetime.utcnow() for v in renewed.values()), renewed
    ends_live(agent, served.url, "v1.1.0", data)


def test_every_role_the_controller_signs_says_when(releases):
    releases.publish("v1.0.0")
    for role in ("root", "targets", "snapshot", "timestamp"):
        signed = json.loads((releases.repo_dir / "metadata" / ("%s.json" % role)).read_text())["signed"]
        moment = signing.parse(signed[signing.SIGNED_AT])
        assert moment is not None and abs(datetime.now(timezone.utc) - moment) < timedelta(minutes=5), signed


@pytest.mark.parametrize(
    "states, polls, synced",
    [
        ([True], 0, True),  # synchronized already
        ([None], 0, None),  # no time sync service: waiting cannot help
        ([False, False, True], 2, True),  # synchronized while waiting
        ([False] * 10, 5, False),  # bounded: 10 s at one poll per 2 s, then on without it
    ],
)
def test_the_wait_for_time_sync_is_bounded(states, polls, synced):
    answers, slept = iter(states), []
    found = clock.wait_for_sync(10, sleep=slept.append, state=lambda: next(answers))
    assert len(slept) == polls and found["synchronized"] is synced, found


# ------------------------------------------------------------------------- 3. network faults
FAULTS = {
    "too-long": "the server sent more than the {length} bytes the signed metadata declares for {name}",
    "endless": "the server sent more than the {length} bytes the signed metadata declares for {name}",
    "cut": "connection cut after {half} of {length} bytes of {name}",
    "stall": "server stalled: no data for 1 s (download_stall_seconds) after {half} of {length} bytes "
    "of {name}",
    "trickle": "downloads took longer than 2 s in all (download_timeout_seconds)",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_download_faults_are_named_bounded_and_retried(releases, make_agent, served, fault):
    agent, data = live_robot(
        releases, make_agent, served.url, download_stall_seconds=1, download_timeout_seconds=2
    )
    releases.publish("v1.1.0", files={"app.py": "print('v1.1.0')\n", "model.bin": MODEL})
    served.server.fault, served.server.match = fault, "model.bin"
    started = time.monotonic()
    with pytest.raises(Unreachable) as failed:
        agent.pull(served.url)
    assert time.monotonic() - started < 10  # bounded: the stall and total limits, not the server
    name = "edge-app/v1.1.0/model.bin"
    expected = FAULTS[fault].format(length=len(MODEL), half=len(MODEL) // 2, name=name)
    message = failed.value.message
    assert message.startswith("release edge-app v1.1.0: " + expected), message
    assert "the next run downloads it again from its first byte" in message, message
    assert agent.current_tag() == "v1.0.0" and "v1.1.0" not in agent.kept() and leftovers(agent) == []
    noted = agent.status()["pull"]
    assert (noted["result"], noted["tag"]) == ("unreachable", "v1.1.0") and expected in words(agent), noted

    served.server.fault = None  # the server behaves again: the next run starts the downloads over
    done = ends_live(agent, served.url, "v1.1.0", data)
    assert done["restarted"] == message and done["stage"]["downloaded_bytes"] > len(MODEL), done
    assert "started them again from the first byte" in agent.status()["pull"]["message"]


def test_a_cut_in_the_metadata_is_named_too(releases, make_agent, served):
    agent, data = live_robot(releases, make_agent, served.url)
    releases.publish("v1.1.0")
    served.server.fault, served.server.match = "cut", "timestamp.json"
    with pytest.raises(
        Unreachable,
        match=r"^releases of edge-app: connection cut after \d+ of \d+ bytes of "
        r"metadata/timestamp\.json from http://127\.0\.0\.1",
    ):
        agent.pull(served.url)
    served.server.fault = None
    ends_live(agent, served.url, "v1.1.0", data)


# ------------------------------------------------------------------------- 4. damaged metadata and files
def _resign_targets(releases, change) -> None:
    """targets.json changed by `change` and signed again with the targets key: what a broken
    signer could publish (signatures fine, content not valid TUF)."""
    from securesystemslib.formats import encode_canonical

    path = releases.repo_dir / "metadata" / "targets.json"
    md = json.loads(path.read_text())
    change(md["signed"])
    signature = releases.repo.signer("targets").sign(encode_canonical(md["signed"]).encode("utf-8"))
    md["signatures"] = [signature.to_dict()]
    path.write_text(json.dumps(md, indent=1))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "garbage timestamp": (
        lambda r: (r.repo_dir / "metadata/timestamp.json").write_text("<html>502 Bad Gateway</html>"),
        "metadata/timestamp.json from {where} is not valid TUF metadata",
    ),
    "truncated snapshot": (
        lambda r: _truncate(r.repo_dir / "metadata/snapshot.json"),
        "metadata/snapshot.json from {where} is not valid TUF metadata",
    ),
    "truncated targets": (
        lambda r: _truncate(r.repo_dir / "metadata/targets.json"),
        "metadata/targets.json from {where} is not valid TUF metadata",
    ),
    "target without length": (
        lambda r: _resign_targets(r, lambda s: s["targets"]["edge-app/v1.1.0/app.py"].pop("length")),
        "metadata/targets.json from {where} is not valid TUF metadata (a required field is missing: "
        "'length')",
    ),
    "target without hashes": (
        lambda r: _resign_targets(r, lambda s: s["targets"]["edge-app/v1.1.0/app.py"].pop("hashes")),
        "metadata/targets.json from {where} is not valid TUF metadata (a required field is missing: "
        "'hashes')",
    ),
    "truncated target file": (
        lambda r: _truncate(r.repo_dir / "targets/edge-app/v1.1.0/model.bin"),
        "LengthOrHashMismatchError: Observed length 131072 does not match expected length 262144 "
        "(edge-app/v1.1.0/model.bin from {where} is not the file the metadata signs",
    ),
    "truncated release.json": (
        lambda r: _truncate(r.repo_dir / "targets/edge-app/v1.1.0/release.json"),
        "LengthOrHashMismatchError: Observed length",
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_metadata_or_files_are_refused_in_words_in_push_and_pull(
    releases, make_agent, served, tmp_path, damage, capsys
):
    agent, data = live_robot(releases, make_agent, served.url)
    releases.publish("v1.1.0", files={"app.py": "print('v1.1.0')\n", "model.bin": MODEL})
    good = tmp_path / "good"
    shutil.copytree(releases.repo_dir, good)
    change, expected = DAMAGE[damage]
    change(releases)
    folder = "file://%s/" % releases.repo_dir
    before = tree(Path(agent.cfg.root))
    with pytest.raises(Refused) as push:  # push mode: the repository copied onto the robot
        agent.stage(str(releases.repo_dir), "v1.1.0")
    assert expected.format(where=folder) in push.value.message, push.value.message
    with pytest.raises(Refused) as pull:
        agent.pull(served.url)
    assert expected.format(where=served.url) in pull.value.message, pull.value.message
    assert agent.status()["pull"]["result"] == "refused" and expected.format(where=served.url) in words(agent)
    assert tree(Path(agent.cfg.root)).keys() - {"state.json"} == before.keys() - {"state.json"}
    assert agent.current_tag() == "v1.0.0" and leftovers(agent) == []
    # the command line: exit 3 and one line of words on stderr, no traceback
    config = tmp_path / "agent.json"
    config.write_text(json.dumps(agent.cfg.data))
    code = cli.main(["--config", str(config), "stage", "--repo", str(releases.repo_dir), "--tag", "v1.1.0"])
    err = capsys.readouterr().err
    assert code == exitcodes.REFUSED and "Traceback" not in err and expected.format(where=folder) in err, err

    shutil.rmtree(releases.repo_dir)  # the repository repaired
    shutil.copytree(good, releases.repo_dir)
    ends_live(agent, served.url, "v1.1.0", data)


def test_a_bundle_listing_a_file_without_hash_or_length_is_not_signed(releases, tmp_path, capsys):
    built = releases.publish("v1.0.0")
    from edge_deploy.cli import main as edge_deploy

    keys = ["--repo", str(releases.repo_dir), "--keys", str(releases.keys)]
    for field in ("sha256", "length"):
        broken = tmp_path / ("bundle-" + field)
        shutil.copytree(built, broken)
        manifest = json.loads((broken / "release.json").read_text())
        manifest["tag"], manifest["version"] = "v1.1.0", "1.1.0"
        del manifest["files"][0][field]
        (broken / "release.json").write_text(json.dumps(manifest))
        assert edge_deploy(["release", "sign", str(broken), *keys]) == 1
        out = capsys.readouterr().out
        told = "error: %s/release.json is not a bundle manifest (KeyError: '%s')" % (broken, field)
        assert out.startswith(told), out
        assert "edge-deploy release build" in out and "Traceback" not in out, out
    truncated = tmp_path / "bundle-truncated"
    shutil.copytree(built, truncated)
    manifest = json.loads((truncated / "release.json").read_text())
    manifest["tag"], manifest["version"] = "v1.1.0", "1.1.0"
    (truncated / "release.json").write_text(json.dumps(manifest))
    _truncate(truncated / "app.py")
    assert edge_deploy(["release", "sign", str(truncated), *keys]) == 1
    assert "app.py is missing or changed since the bundle was built" in capsys.readouterr().out
    assert releases.repo.releases() == {"edge-app": ["v1.0.0"]}


def test_refresh_renews_a_root_about_to_expire_and_robots_follow(releases, make_agent, served):
    agent, data = live_robot(releases, make_agent, served.url)
    short = ReleaseRepository(str(releases.repo_dir), str(releases.keys), {"root": timedelta(days=3)})
    with short.edit_root():  # root version 2, expiring within the new snapshot's 30 days
        pass
    renewed = ReleaseRepository(str(releases.repo_dir), str(releases.keys)).refresh()
    assert renewed["renewed"] == ["root", "snapshot", "timestamp"], renewed
    assert (releases.repo_dir / "metadata" / "3.root.json").is_file()
    releases.publish("v1.1.0")
    ends_live(agent, served.url, "v1.1.0", data)
    trusted = json.loads((Path(agent.cfg.tuf_dir) / "root.json").read_text())["signed"]
    assert trusted["version"] == 3 and trusted["expires"] == renewed["expires"]["root"], trusted
