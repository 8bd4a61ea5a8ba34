"""The mission lock's age (edge_agent.mission): a lock older than the configured age holds nothing,
and whoever asked says so in words; `edge-agent lock` prints it, exits 3 under --condition while the
lock holds (systemd's ExecCondition=), and pull mode writes it to the agent log."""

from __future__ import annotations

import calendar
import json
import os

import pytest

from edge_agent import cli, mission

NOW = calendar.timegm((2026, 11, 27, 17, 0, 0))  # 2026-11-27 17:00 UTC
SEVEN_HOURS_AGO = "2026-11-27T10:00:00Z"
DELIVERING = {"busy": True, "reason": "delivering", "written_at": SEVEN_HOURS_AGO}


def write(path, lock, mtime=NOW):
    path.write_text(json.dumps(lock) if isinstance(lock, dict) else lock)
    os.utime(path, (mtime, mtime))
    return str(path)


def test_a_busy_lock_older_than_the_age_is_stale_and_says_so(tmp_path):
    path = write(tmp_path / "lock.json", DELIVERING)
    found = mission.read(path, max_age_hours=6, now=NOW)
    assert found.free and found.reason is None
    assert found.stale == (
        "mission lock stale: busy 'delivering' since 2026-11-27 10:00 UTC, older than 6 h; proceeding"
    )


def test_a_lock_within_the_age_still_holds(tmp_path):
    path = write(tmp_path / "lock.json", DELIVERING)
    assert mission.read(path, max_age_hours=8, now=NOW) == mission.Lock("delivering", None)


def test_the_written_timestamp_counts_before_the_files_time(tmp_path):
    """A file copied or touched later is still as old as its content says; a fresh write is not stale."""
    old_content = {"busy": True, "written_at": SEVEN_HOURS_AGO}
    assert mission.read(write(tmp_path / "a.json", old_content, mtime=NOW), now=NOW).free
    fresh_content = {"busy": True, "written_at": NOW - 60}
    assert not mission.read(write(tmp_path / "b.json", fresh_content, mtime=NOW - 86400), now=NOW).free


@pytest.mark.parametrize("written_at", [None, "not a time", True])
def test_without_a_readable_timestamp_the_files_time_dates_the_lock(tmp_path, written_at):
    lock = {"busy": True} if written_at is None else {"busy": True, "written_at": written_at}
    path = write(tmp_path / "lock.json", lock, mtime=NOW - 7 * 3600)
    found = mission.read(path, max_age_hours=6, now=NOW)
    assert found.free and found.stale.startswith("mission lock stale: busy since 2026-11-27 10:00 UTC"), found
    assert not mission.read(write(tmp_path / "fresh.json", lock, mtime=NOW - 60), now=NOW).free


@pytest.mark.parametrize(
    "lock, said",
    [
        ({"battery": 0.1}, "battery 0.10 below 0.30"),
        ({"battery": 0.9, "docked": False}, "not docked"),
        ("{half a write", "mission lock unreadable"),
    ],
)
def test_any_held_lock_goes_stale(tmp_path, lock, said):
    path = write(tmp_path / "lock.json", lock, mtime=NOW - 7 * 3600)
    found = mission.read(path, require_docked=True, max_age_hours=6, now=NOW)
    assert found.free and found.stale.startswith("mission lock stale: " + said), found


def test_a_free_lock_has_nothing_to_report_however_old(tmp_path):
    path = write(tmp_path / "lock.json", {"busy": False, "battery": 0.9}, mtime=0)
    assert mission.read(path, now=NOW) == mission.Lock(None, None)


@pytest.mark.parametrize("age", [0, None])
def test_age_zero_means_never_stale(tmp_path, age):
    path = write(tmp_path / "lock.json", {"busy": True, "reason": "mapping"}, mtime=0)
    assert mission.read(path, max_age_hours=age, now=NOW).reason == "mapping"


def test_timestamps_with_a_zone_or_in_seconds(tmp_path):
    for written_at in ("2026-11-27T12:00:00+02:00", "2026-11-27T10:00:00.250Z", NOW - 7 * 3600):
        path = write(tmp_path / "lock.json", {"busy": True, "written_at": written_at})
        found = mission.read(path, max_age_hours=6, now=NOW)
        assert "since 2026-11-27 10:00 UTC" in (found.stale or ""), (written_at, found)


def lock_cli(tmp_path, capsys, *args):
    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"app": "edge-app", "mission_lock_file": str(tmp_path / "lock.json")}))
    code = cli.main(["--config", str(config), "--json", "lock", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_lock_command_reports_a_stale_lock_and_lets_the_caller_proceed(tmp_path, capsys):
    write(tmp_path / "lock.json", {"busy": True, "reason": "delivering"}, mtime=0)
    code, out, err = lock_cli(tmp_path, capsys, "--condition")
    assert code == 0 and out["free"] and out["reason"] is None
    assert out["stale"].startswith("mission lock stale: busy 'delivering' since 1970-01-01 00:00 UTC"), out
    assert "older than 6 h; proceeding" in out["stale"] and out["stale"] in err


def test_lock_command_under_condition_exits_3_while_held(tmp_path, capsys):
    write(tmp_path / "lock.json", {"busy": True, "reason": "delivering"}, mtime=0)
    code, out, err = lock_cli(tmp_path, capsys, "--condition", "--max-age-hours", "0")
    assert code == 3 and not out["free"] and out["reason"] == "delivering" and out["stale"] is None
    assert "held: delivering" in err
    # without --condition the answer is in the JSON and the command itself succeeded
    code, out, _ = lock_cli(tmp_path, capsys, "--max-age-hours", "0")
    assert code == 0 and not out["free"]


def test_pull_logs_a_stale_lock_and_activates(releases, make_agent, tmp_path):
    lock = tmp_path / "mission-lock.json"
    logged = []
    agent = make_agent(mission_lock_file=str(lock), mission_lock_max_age_hours=1)
    agent.log = logged.append
    repo = str(releases.repo_dir)
    releases.publish("v1.0.0")
    agent.pull(repo)
    releases.publish("v1.1.0")
    write(lock, {"busy": True, "reason": "delivering", "written_at": 0})
    assert agent.pull(repo)["tag"] == "v1.1.0" and agent.current_tag() == "v1.1.0"
    stale = "mission lock stale: busy 'delivering' since 1970-01-01 00:00 UTC"
    assert [message for message in logged if message.startswith(stale)], logged
