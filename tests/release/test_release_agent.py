"""The robot-side agent on a temp root: verify refusals, stage, activate, rollback, snapshots."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import FakeSystemd

from edge_agent import tufclient
from edge_agent.errors import AgentError, Refused, RolledBack, UsageError
from edge_common import resources
from edge_common.versions import version_key
from tests import tegrastats_double


def tree(path):
    return {
        os.path.relpath(os.path.join(b, f), path): open(os.path.join(b, f), "rb").read()
        for b, _, files in os.walk(path)
        for f in files
    }


def live(agent, releases, *tags, **manifest):
    """Publish `tags`, then stage and activate each in turn; returns the repository path."""
    repo = str(releases.repo_dir)
    for tag in tags:
        releases.publish(tag, **manifest)
    for tag in tags:
        agent.stage(repo, tag)
        agent.activate(tag)
    return repo


def test_push_cycle_v1_v2_rollback_forward(releases, make_agent, tmp_path):
    agent = make_agent()
    repo = str(releases.repo_dir)
    releases.publish("v1.0.0")
    releases.publish("v2.0.0")
    assert agent.stage(repo, "v1.0.0")["changed"]
    assert not agent.stage(repo, "v1.0.0")["changed"]
    agent.activate("v1.0.0")
    data = tmp_path / "opt" / "shared" / "data"
    data.mkdir()
    (data / "map.bin").write_bytes(os.urandom(4096))
    before = tree(data)
    agent.stage(repo, "v2.0.0")
    result = agent.activate("v2.0.0")
    assert result["from"] == "v1.0.0" and agent.current_tag() == "v2.0.0"
    assert json.loads((tmp_path / "opt/shared/config/app.json").read_text()) == {"tag": "v2.0.0"}
    back = agent.rollback()
    assert back["tag"] == "v1.0.0" and back["outside_state"] == "snapshot"
    assert json.loads((tmp_path / "opt/shared/config/app.json").read_text()) == {"tag": "v1.0.0"}
    assert "v1.0.0" in (tmp_path / "systemd/edge-app.service.d/50-release.conf").read_text()
    forward = agent.rollback("v2.0.0")
    assert forward["tag"] == "v2.0.0" and agent.current_tag() == "v2.0.0"
    assert tree(data) == before
    status = agent.status()
    assert status["current"] == "v2.0.0" and status["previous"] == "v1.0.0"
    assert [r["tag"] for r in status["releases"]] == ["v1.0.0", "v2.0.0"]


@pytest.mark.parametrize("attack", ["tampered", "bad_signature", "expired", "replayed"])
def test_refused_releases_change_nothing(releases, make_agent, tmp_path, expired_repo, attack):
    agent = make_agent()
    repo = releases.repo_dir
    releases.publish("v1.0.0")
    agent.stage(str(repo), "v1.0.0")
    agent.activate("v1.0.0")
    old_metadata = tmp_path / "old-metadata"
    shutil.copytree(repo / "metadata", old_metadata)
    if attack == "expired":
        releases.publish("v2.0.0", repo=expired_repo)
    else:
        releases.publish("v2.0.0")
    if attack == "tampered":
        path = repo / "targets/edge-app/v2.0.0/app.py"
        path.write_text(path.read_text().replace("v2", "v9"))  # same length, other bytes
    elif attack == "bad_signature":
        path = repo / "metadata/targets.json"
        md = json.loads(path.read_text())
        md["signed"]["expires"] = "2099-01-01T00:00:00Z"
        path.write_text(json.dumps(md))
    elif attack == "replayed":
        agent.verify(str(repo), "v2.0.0")  # the robot now trusts the newer metadata
        shutil.rmtree(repo / "metadata")
        shutil.copytree(old_metadata, repo / "metadata")
    before = tree(tmp_path / "opt")
    with pytest.raises(Refused) as info:
        agent.stage(str(repo), "v2.0.0")
    expected = {
        "tampered": "LengthOrHashMismatch",
        "bad_signature": "UnsignedMetadata",
        "expired": "ExpiredMetadata",
        # the robot trusts timestamp version 3: the replayed version 2 is a rollback attack
        "replayed": "BadVersionNumberError: New timestamp version 2 must be >= 3",
    }[attack]
    assert expected in info.value.message, info.value.message
    after = tree(tmp_path / "opt")
    assert after == before
    assert agent.current_tag() == "v1.0.0"


def test_older_version_is_refused_unless_rollback(releases, make_agent):
    agent = make_agent()
    repo = str(releases.repo_dir)
    releases.publish("v1.0.0")
    releases.publish("v2.0.0")
    agent.stage(repo, "v2.0.0")
    agent.activate("v2.0.0")
    with pytest.raises(Refused, match="older than the installed"):
        agent.stage(repo, "v1.0.0")
    assert agent.stage(repo, "v1.0.0", allow_downgrade=True)["changed"]


def test_killed_mid_stage_leaves_current_and_a_rerun_completes(releases, make_agent, tmp_path):
    agent = make_agent()
    repo = live(agent, releases, "v1.0.0")
    releases.publish("v2.0.0")
    leftover = tmp_path / "opt/releases/.staging-v2.0.0-99999"
    leftover.mkdir()
    (leftover / "app.py").write_text("half")
    assert not agent.is_staged("v2.0.0")
    result = agent.stage(repo, "v2.0.0")
    assert result["leftovers_removed"] == [".staging-v2.0.0-99999"]
    assert agent.is_staged("v2.0.0") and agent.current_tag() == "v1.0.0"


def test_disk_full_while_staging_fails_cleanly(releases, make_agent, tmp_path, monkeypatch):
    agent = make_agent()
    repo = live(agent, releases, "v1.0.0")
    releases.publish("v2.0.0")
    real = tufclient.fetch_release

    def full(*args, **kwargs):
        real(*args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tufclient, "fetch_release", full)
    with pytest.raises(AgentError, match=r"disk full while staging v2\.0\.0"):
        agent.stage(repo, "v2.0.0")
    assert sorted(os.listdir(tmp_path / "opt/releases")) == ["v1.0.0"]
    assert agent.current_tag() == "v1.0.0"


def test_failed_health_gate_rolls_back_on_the_robot(releases, make_agent, tmp_path):
    systemd = FakeSystemd()
    agent = make_agent(systemd=systemd)
    repo = str(releases.repo_dir)
    check = {
        "command": ["sh", "-c", "test ! -e broken"],
        "soak_seconds": 0.3,
        "interval_seconds": 0.1,
        "start_timeout_seconds": 0.3,
    }
    releases.publish("v1.0.0", health=check)
    releases.publish("v2.0.0", files={"app.py": "", "broken": "", "config/app.json": "{}"}, health=check)
    agent.stage(repo, "v1.0.0")
    agent.activate("v1.0.0")
    agent.stage(repo, "v2.0.0")
    with pytest.raises(RolledBack, match=r"rolled back to v1\.0\.0") as info:
        agent.activate("v2.0.0")
    assert info.value.details["rollback_health"]["passed"]
    assert agent.current_tag() == "v1.0.0"
    assert agent.status()["bad"] == {"v2.0.0": info.value.details["health"]["reason"]}
    assert json.loads((tmp_path / "opt/shared/config/app.json").read_text()) == {"tag": "v1.0.0"}


def test_a_release_that_breaks_the_robots_resource_budget_in_its_soak_rolls_back(
    releases, make_agent, tmp_path, monkeypatch
):
    """tegrastats (its test double: a recorded Orin Nano line, 12.479 W on VDD_IN) runs through
    the soak; v1.0.0 soaks under a 15 W budget, v2.0.0 under a 10 W one does not."""
    monkeypatch.setattr(resources, "TEGRASTATS", tegrastats_double.write(tmp_path))
    check = {"soak_seconds": 0.3, "interval_seconds": 0.1, "start_timeout_seconds": 0.3}
    releases.publish("v1.0.0", health=check)
    releases.publish("v2.0.0", health=check)
    agent = make_agent(systemd=FakeSystemd(), resources={"power_max_w": 15, "tj_temp_max_c": 99})
    agent.stage(str(releases.repo_dir), "v1.0.0")
    soaked = agent.activate("v1.0.0")["health"]["service"]["resources"]
    assert soaked["passed"] and soaked["samples"] >= 2 and soaked["power_peak_w"] == 12.479
    assert soaked["tj_temp_peak_c"] == 53.968 and soaked["trace"][0]["power_w"] == 12.479

    agent = make_agent(systemd=FakeSystemd(), resources={"power_max_w": 10})
    agent.stage(str(releases.repo_dir), "v2.0.0")
    with pytest.raises(RolledBack) as info:
        agent.activate("v2.0.0")
    reason = info.value.details["health"]["reason"]
    assert reason == (
        "resource budget broken: power peak 12.479 W > budget 10 W (over by 2.479 W) during the soak window"
    )
    assert info.value.details["health"]["service"]["resources"]["breaches"][0]["by"] == 2.479
    assert agent.current_tag() == "v1.0.0" and agent.status()["bad"] == {"v2.0.0": reason}

    with pytest.raises(UsageError, match="unknown resource budget 'watts'"):
        make_agent(resources={"watts": 10})


def test_on_failure_rolls_back_a_crash_loop(releases, make_agent):
    systemd = FakeSystemd()
    agent = make_agent(systemd=systemd)
    live(agent, releases, "v1.0.0", "v2.0.0")
    assert not agent.on_failure()["changed"]  # active: nothing to do
    systemd.state.update(ActiveState="failed", Result="start-limit-hit")
    dropin = Path(agent.cfg.dropin_path)

    def show(unit):  # failed until the agent has switched back to v1.0.0
        up = "v1.0.0" in dropin.read_text()
        return dict(systemd.state, ActiveState="active") if up else dict(systemd.state)

    systemd.show = show
    result = agent.on_failure()
    assert result["tag"] == "v1.0.0" and agent.current_tag() == "v1.0.0"
    assert "crash loop" in agent.status()["bad"]["v2.0.0"]


def test_keeps_n_releases_never_the_current_or_previous(releases, make_agent):
    agent = make_agent(keep_releases=2)
    live(agent, releases, "v1.0.0", "v2.0.0", "v3.0.0", "v4.0.0")
    assert agent.kept() == ["v3.0.0", "v4.0.0"]
    assert agent.status()["previous"] == "v3.0.0"


def test_damaged_snapshot_falls_back_to_the_release(releases, make_agent, tmp_path):
    agent = make_agent()
    live(agent, releases, "v1.0.0", "v2.0.0")
    (tmp_path / "opt/snapshots/v1.0.0/files/config/app.json").write_text('{"tag": "evil"}')
    assert agent.rollback()["outside_state"] == "release"
    assert json.loads((tmp_path / "opt/shared/config/app.json").read_text()) == {"tag": "v1.0.0"}


def test_version_order():
    key = version_key
    assert key("1.2.10") > key("1.2.9") > key("1.2.9-rc1")
    assert key("v2.0") == key("2.0.0")


class Killed(BaseException):
    """Stands for the agent process dying (power loss, podman kill) in the middle of a move."""


def interrupt_activation(agent, tag, monkeypatch, interrupt=Killed) -> None:
    """Start activating the staged `tag`; the agent stops inside the gate (after the switch, before
    a verdict), as a killed agent would."""
    monkeypatch.setattr(agent, "gate", lambda tag, golden=True: (_ for _ in ()).throw(interrupt()))
    with pytest.raises(interrupt):
        agent.activate(tag)
    monkeypatch.undo()


def test_recover_finishes_an_activation_cut_short_in_its_gate(releases, make_agent, tmp_path, monkeypatch):
    agent = make_agent()
    live(agent, releases, "v1.0.0")
    releases.publish("v2.0.0")
    agent.stage(str(releases.repo_dir), "v2.0.0")

    def die(tag, golden=True):
        raise Killed()

    monkeypatch.setattr(agent, "gate", die)
    with pytest.raises(Killed):
        agent.activate("v2.0.0")
    # between two releases: the link and the config name v2.0.0, whose gate never passed
    assert agent.current_tag() == "v2.0.0" and agent.state()["pending"]["to"] == "v2.0.0"
    monkeypatch.undo()
    booted = make_agent()  # the next boot's ExecStartPre
    result = booted.recover()
    assert result["changed"] and result["tag"] == "v1.0.0" and result["from"] == "v2.0.0"
    assert booted.current_tag() == "v1.0.0"
    state = booted.state()
    assert "pending" not in state and state["current"] == "v1.0.0"
    # its gate never ran: not bad, and tried again by the next activation, which passes
    assert "v2.0.0" not in state["bad"] and state["interrupted"] == {"v2.0.0": 1}
    assert result["reason"] == (
        "activate of v2.0.0 interrupted before its health gate passed (the robot or the agent "
        "stopped); v2.0.0 may be tried again"
    )
    assert state["last"]["op"] == "recover" and state["last"]["to"] == "v1.0.0"
    assert json.loads((tmp_path / "opt/shared/config/app.json").read_text()) == {"tag": "v1.0.0"}
    assert "EDGE_RELEASE=v1.0.0" in Path(booted.cfg.dropin_path).read_text()
    assert booted.recover() == {"changed": False}  # nothing pending any more
    again = booted.activate("v2.0.0")
    assert again["changed"] and again["health"]["passed"] and booted.current_tag() == "v2.0.0"
    assert booted.state()["interrupted"] == {}


def test_recover_gives_up_on_a_release_interrupted_again_and_again(releases, make_agent, monkeypatch):
    agent = make_agent()
    live(agent, releases, "v1.0.0")
    releases.publish("v2.0.0")
    agent.stage(str(releases.repo_dir), "v2.0.0")
    outcomes = []
    for _ in range(3):
        interrupt_activation(agent, "v2.0.0", monkeypatch)
        outcomes.append(make_agent().recover(restart=False)["retry"])
    assert outcomes == ["may be tried again", "may be tried again", "given up after 3 interrupted tries"]
    state = agent.state()
    assert state["current"] == "v1.0.0" and "(3 times)" in state["bad"]["v2.0.0"]


def test_recover_keeps_an_interrupted_first_install(releases, make_agent, monkeypatch):
    agent = make_agent()
    releases.publish("v1.0.0")
    agent.stage(str(releases.repo_dir), "v1.0.0")
    monkeypatch.setattr(agent, "gate", lambda tag, golden=True: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        agent.activate("v1.0.0")
    result = make_agent().recover()
    assert result["changed"] is False and result["tag"] == "v1.0.0"
    assert "pending" not in agent.state() and agent.state()["last"]["result"] == "kept"


def test_recover_leaves_a_running_agent_alone(releases, make_agent):
    agent = make_agent()
    live(agent, releases, "v1.0.0")
    with agent._lock():
        assert agent.recover() == {"changed": False, "reason": "an agent run is under way"}


def incoming(releases, tmp_path, *tags):
    """What the controller's copy leaves on the robot: the metadata, and `tags`' files if given."""
    repo = tmp_path / "incoming"
    shutil.copytree(releases.repo_dir / "metadata", repo / "metadata", dirs_exist_ok=True)
    for tag in tags:
        shutil.copytree(
            releases.repo_dir / "targets/edge-app" / tag, repo / "targets/edge-app" / tag, dirs_exist_ok=True
        )
    return str(repo)


def test_seed_reuses_kept_files_so_only_changed_ones_are_sent(releases, make_agent, tmp_path):
    agent = make_agent()
    model = os.urandom(50000).hex()
    files = {"app.py": "print('app')\n", "model.txt": model, "config/app.json": "{}"}
    releases.publish("v1.0.0", files=files)
    repo = incoming(releases, tmp_path, "v1.0.0")
    agent.stage(repo, "v1.0.0")
    agent.activate("v1.0.0")
    releases.publish("v2.0.0", files=dict(files, **{"config/app.json": '{"a": 1}'}))
    repo = incoming(releases, tmp_path)
    signed = json.loads((releases.repo_dir / "metadata/targets.json").read_text())["signed"]["targets"]
    size = {p.split("/", 2)[2]: t["length"] for p, t in signed.items() if p.startswith("edge-app/v2.0.0/")}

    counted = agent.seed(repo, "v2.0.0", dry_run=True)
    assert not counted["changed"] and not (tmp_path / "incoming/targets/edge-app/v2.0.0").exists()
    result = agent.seed(repo, "v2.0.0")
    assert result == dict(counted, changed=True, dry_run=False)
    assert sorted(result["seeded"]) == ["app.py", "model.txt"]
    assert sorted(result["missing"]) == ["config/app.json", "release.json"]
    assert result["missing_bytes"] == size["config/app.json"] + size["release.json"]
    assert result["seeded_bytes"] == size["app.py"] + size["model.txt"] and result["present_bytes"] == 0
    seeded = tmp_path / "incoming/targets/edge-app/v2.0.0/model.txt"
    assert seeded.read_text() == model
    assert seeded.stat().st_ino == (tmp_path / "opt/releases/v1.0.0/model.txt").stat().st_ino  # a link

    # the controller's copy sends the rest; staging verifies every file against the signatures
    incoming(releases, tmp_path, "v2.0.0")
    again = agent.seed(repo, "v2.0.0")
    assert not again["changed"] and again["missing_bytes"] == 0 and again["seeded"] == []
    assert again["present_bytes"] == sum(size.values())
    staged = agent.stage(repo, "v2.0.0")
    assert staged["reused_bytes"] == size["app.py"] + size["model.txt"], staged
    agent.activate("v2.0.0")
    assert (tmp_path / "opt/releases/v2.0.0/model.txt").read_text() == model
    # the file that crossed the network is on disk once: the release links the verified copy
    sent = tmp_path / "incoming/targets/edge-app/v2.0.0/config/app.json"
    assert sent.stat().st_ino == (tmp_path / "opt/releases/v2.0.0/config/app.json").stat().st_ino


def test_seed_never_trusts_a_damaged_local_copy_and_drops_unkept_tags(releases, make_agent, tmp_path):
    agent = make_agent(keep_releases=2)
    files = {"app.py": "print('same')\n"}
    releases.publish("v1.0.0", files=files)
    releases.publish("v2.0.0", files=files)
    repo = incoming(releases, tmp_path, "v1.0.0", "v2.0.0")
    for tag in ("v1.0.0", "v2.0.0"):
        agent.stage(repo, tag)
        agent.activate(tag)
    (tmp_path / "opt/releases/v2.0.0/app.py").write_text("print('tampered')\n")
    (tmp_path / "opt/releases/v1.0.0/app.py").write_text("print('tampered')\n")
    releases.publish("v3.0.0", files=files)
    result = agent.seed(incoming(releases, tmp_path), "v3.0.0")
    assert result["seeded"] == [] and sorted(result["missing"]) == ["app.py", "release.json"]
    assert not (tmp_path / "incoming/targets/edge-app/v3.0.0/app.py").exists()
    # v1.0.0 and v2.0.0 are kept: their folders stay; a folder of a tag no longer kept goes
    (tmp_path / "incoming/targets/edge-app/v0.9.0").mkdir()
    assert agent.seed(repo, "v3.0.0")["removed"] == ["v0.9.0"]
    assert sorted(os.listdir(tmp_path / "incoming/targets/edge-app")) == ["v1.0.0", "v2.0.0"]


def test_seed_refuses_unsigned_tags_and_remote_repositories(releases, make_agent, tmp_path):
    agent = make_agent()
    releases.publish("v1.0.0")
    repo = incoming(releases, tmp_path)
    with pytest.raises(Refused, match=r"no release edge-app v9\.9\.9"):
        agent.seed(repo, "v9.9.9")
    with pytest.raises(AgentError, match="repository folder on this robot"):
        agent.seed("https://releases.example.com/repo", "v1.0.0")
    meta = tmp_path / "incoming/metadata/timestamp.json"
    meta.write_text(meta.read_text().replace('"version"', '"versions"', 1))
    with pytest.raises(Refused):
        agent.seed(repo, "v1.0.0")
    assert not (tmp_path / "incoming/targets").exists()


def test_a_robot_whose_identity_is_unknown_refuses_a_release_with_a_contract(
    releases, make_agent, tmp_path, monkeypatch
):
    """The agent fails closed: no saved identity, no release that names a contract; it says what to run."""
    agent = make_agent()
    monkeypatch.setattr("edge_agent.compatibility.JETSON_FACT", str(tmp_path / "removed.fact"))
    releases.publish("v1.0.0", compatible={"jetpack_min": "5.1", "modules": ["orin_nx"]})
    with pytest.raises(Refused) as refused:
        agent.stage(str(releases.repo_dir), "v1.0.0")
    message = refused.value.message
    assert "cannot take edge-app v1.0.0" in message and "unknown" in message
    assert "missing or unreadable" in message and "--tags jetson_facts" in message
    assert agent.kept() == []
    releases.publish("v1.1.0")  # no contract: any robot may take it
    assert agent.stage(str(releases.repo_dir), "v1.1.0")["staged"]
