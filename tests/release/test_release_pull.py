"""Pull mode on a temp robot root: what the OTA timer runs (`edge-agent pull`). It takes the newest
signed release that is newer than the current one, not marked bad and compatible, reuses the files
kept releases hold, and waits for the robot's mission lock before activating."""

from __future__ import annotations

import json
import os
import socket

import pytest
from conftest import FakeSystemd

from edge_agent import mission
from edge_agent.errors import AgentError, RolledBack, Unreachable, UsageError


def test_pull_takes_the_newest_signed_release(releases, make_agent):
    agent = make_agent()
    repo = str(releases.repo_dir)
    releases.publish("v1.0.0")
    first = agent.pull(repo)
    assert first["changed"] and first["tag"] == "v1.0.0" and agent.current_tag() == "v1.0.0"
    assert agent.pull(repo) == dict(agent.pull(repo), changed=False)
    assert agent.pull(repo)["reason"] == "up to date: v1.0.0 is the newest signed release"
    releases.publish("v1.2.0")
    releases.publish("v1.10.0")  # newer than v1.2.0
    assert agent.pull(repo, dry_run=True) == {
        "changed": True,
        "dry_run": True,
        "tag": "v1.10.0",
        "current": "v1.0.0",
        "skipped": {},
    }
    assert agent.current_tag() == "v1.0.0"
    result = agent.pull(repo)
    assert result["tag"] == "v1.10.0" and agent.current_tag() == "v1.10.0"
    assert result["activate"]["from"] == "v1.0.0"


def test_pull_reuses_files_kept_releases_hold(releases, make_agent):
    agent = make_agent()
    repo = str(releases.repo_dir)
    model = os.urandom(40000).hex()
    files = {"app.py": "print('app')\n", "model.txt": model}
    releases.publish("v1.0.0", files=files)
    assert agent.pull(repo)["stage"]["reused_bytes"] == 0
    releases.publish("v1.1.0", files=dict(files, **{"app.py": "print('app 1.1')\n"}))
    stage = agent.pull(repo)["stage"]
    assert stage["reused_bytes"] == len(model), stage
    signed = json.loads((releases.repo_dir / "metadata/targets.json").read_text())["signed"]["targets"]
    changed = ("edge-app/v1.1.0/app.py", "edge-app/v1.1.0/release.json")
    assert stage["downloaded_bytes"] == sum(signed[p]["length"] for p in changed), stage


def test_pull_skips_bad_and_incompatible_releases(releases, make_agent, tmp_path, monkeypatch):
    systemd = FakeSystemd()
    agent = make_agent(systemd=systemd)
    repo = str(releases.repo_dir)
    releases.publish("v1.0.0", health={"soak_seconds": 0, "interval_seconds": 0})
    agent.pull(repo)
    releases.publish("v2.0.0", health={"soak_seconds": 0, "interval_seconds": 0})
    monkeypatch.setattr(agent, "gate", lambda tag, golden=True: {"passed": False, "reason": "crashed"})
    with pytest.raises(RolledBack):
        agent.pull(repo)
    monkeypatch.undo()
    assert agent.current_tag() == "v1.0.0" and "v2.0.0" in agent.state()["bad"]
    back = agent.status()["pull"]
    assert (back["result"], back["tag"]) == ("rolled_back", "v2.0.0") and "crashed" in back["message"], back
    # the bad tag is not taken again; a newer release that the robot cannot run is skipped too
    facts = tmp_path / "jetson.fact"
    facts.write_text(json.dumps({"jetpack": "5.1.2", "module_class": "orin_nano"}))
    monkeypatch.setattr("edge_agent.compatibility.JETSON_FACT", str(facts))
    releases.publish("v3.0.0", compatible={"jetpack_min": "6.0"})
    result = agent.pull(repo)
    assert result["changed"] is False and agent.current_tag() == "v1.0.0", result
    assert result["skipped"]["v2.0.0"] == "marked bad: crashed", result
    assert "cannot take edge-app v3.0.0" in result["skipped"]["v3.0.0"], result
    assert "JetPack 5.1.2 is older than 6.0" in result["skipped"]["v3.0.0"], result
    assert sorted(result["skipped"]) == ["v2.0.0", "v3.0.0"], result
    # not "up to date": the status says which newer release the robot refused, and why
    now = agent.status()["pull"]
    assert (now["result"], now["tag"]) == ("refused", "v3.0.0"), now
    assert now["message"] == result["skipped"]["v3.0.0"], now


def test_pull_stages_but_waits_for_the_mission_lock(releases, make_agent, tmp_path):
    lock = tmp_path / "mission-lock.json"
    agent = make_agent(mission_lock_file=str(lock), min_battery=0.3)
    repo = str(releases.repo_dir)
    releases.publish("v1.0.0")
    agent.pull(repo)
    releases.publish("v1.1.0")
    lock.write_text(json.dumps({"busy": True, "reason": "delivering"}))
    result = agent.pull(repo)
    assert result["deferred"] == "delivering" and agent.current_tag() == "v1.0.0", result
    assert "v1.1.0" in agent.kept()  # staged while the mission goes on
    lock.write_text(json.dumps({"busy": False, "battery": 0.9}))
    assert agent.pull(repo)["tag"] == "v1.1.0" and agent.current_tag() == "v1.1.0"


def test_pull_needs_a_repository(make_agent):
    with pytest.raises(AgentError, match="repository_url"):
        make_agent().pull(None)


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, None),
        ({}, None),
        ({"busy": True}, "busy"),
        ({"busy": True, "reason": "delivering"}, "delivering"),
        ({"battery": 0.1}, "battery 0.10 below 0.30"),
        ({"battery": 0.5, "docked": False}, "not docked"),
        ("{not json", "mission lock unreadable"),
    ],
)
def test_mission_lock(tmp_path, content, reason):
    path = tmp_path / "lock.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(json.dumps(content))
    found = mission.read(str(path), min_battery=0.3, require_docked=True).reason
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.startswith(reason), found


def test_pull_over_https_trusts_the_ca_it_is_given(releases, make_agent, https_repo):
    releases.publish("v1.0.0")
    untrusting = make_agent()
    with pytest.raises(Unreachable) as refused:
        untrusting.pull(https_repo.url)
    message = refused.value.message
    assert message.startswith("cannot read the release repository at %s" % https_repo.url), message
    assert "CERTIFICATE_VERIFY_FAILED" in message and "release_pull_ca_certificate" in message, message
    assert untrusting.current_tag() is None and untrusting.kept() == []

    agent = make_agent(ca_file=str(https_repo.ca_file), repository_url=https_repo.url)
    result = agent.pull(None)
    assert result["tag"] == "v1.0.0" and agent.current_tag() == "v1.0.0", result
    assert result["stage"]["downloaded_bytes"] > 0


def test_pull_names_a_missing_ca_file_and_an_unreachable_repository(releases, make_agent, tmp_path):
    releases.publish("v1.0.0")
    missing = make_agent(ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(UsageError, match=r"ca_file .*nope\.pem in the agent config does not exist"):
        missing.pull(str(releases.repo_dir))
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = "http://127.0.0.1:%d/" % port
    with pytest.raises(Unreachable, match="cannot read the release repository at %s" % closed):
        make_agent().pull(closed)


def test_each_pull_leaves_its_outcome_in_the_status(releases, make_agent, tmp_path):
    agent = make_agent()
    repo = str(releases.repo_dir)
    assert agent.status()["pull"] is None
    releases.publish("v1.0.0")
    agent.pull(repo)
    first = agent.status()["pull"]
    assert (first["result"], first["tag"], first["message"]) == ("updated", "v1.0.0", "from -"), first
    agent.pull(repo, dry_run=True)  # a dry run leaves no trace
    assert agent.status()["pull"]["result"] == "updated"
    agent.pull(repo)
    now = agent.status()["pull"]
    assert (now["result"], now["tag"]) == ("up to date", "v1.0.0"), now
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = "http://127.0.0.1:%d/" % probe.getsockname()[1]
    with pytest.raises(Unreachable):
        agent.pull(closed)
    failed = agent.status()["pull"]
    assert failed["result"] == "unreachable" and failed["message"].startswith("cannot read"), failed
    releases.publish("v1.1.0")
    lock = tmp_path / "lock.json"
    lock.write_text(json.dumps({"busy": True, "reason": "mapping the warehouse"}))
    locked = make_agent(mission_lock_file=str(lock))
    locked.pull(repo)
    deferred = locked.status()["pull"]
    assert (deferred["result"], deferred["tag"], deferred["message"]) == (
        "deferred",
        "v1.1.0",
        "mapping the warehouse",
    ), deferred
