"""The rollout lease (edge_agent/lease.py): one rollout at a time on a robot. Compare-and-set under an
flock, bounded waits, expiry of a dead holder's lease, renewals, releases, the `edge-agent lease`
command (no agent config needed) and the pull agent's respect for a live lease."""

from __future__ import annotations

import json
import multiprocessing

import pytest

from edge_agent import cli, lease
from edge_agent.agent import Agent
from edge_agent.config import Config
from edge_agent.errors import EXIT_BUSY
from edge_agent.lease import LeaseHeld, Leases


class Clock:
    """A clock that moves only when told to, or when the code under test sleeps."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "lease.json")


def leases(path, clock) -> Leases:
    return Leases(path, clock=clock, sleep=clock.sleep)


def held(path) -> str:
    """The run id in the lease file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["run"]


def test_a_free_robot_is_leased_and_a_second_run_is_refused_naming_the_holder(path, clock):
    first = leases(path, clock).acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=600)
    assert first["changed"] and "took_over" not in first
    assert held(path) == "7f3a"
    with pytest.raises(LeaseHeld) as refused:
        leases(path, clock).acquire("bob@ctl-2", "9b1c", "v1.3.0", ttl=600)
    assert refused.value.exit_code == EXIT_BUSY
    assert refused.value.message.startswith(
        "held by rollout of v1.1.0 by alice@ctl-1 (run 7f3a), expires "
    ), refused.value.message
    assert "UTC (in 600 s)" in refused.value.message
    assert refused.value.details["holder"]["owner"] == "alice@ctl-1"
    assert held(path) == "7f3a"  # the holder's lease is untouched


def test_the_wait_for_a_live_lease_is_bounded(path, clock):
    leases(path, clock).acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=600)
    with pytest.raises(LeaseHeld) as refused:
        leases(path, clock).acquire("bob@ctl-2", "9b1c", "v1.3.0", ttl=600, wait=5)
    assert clock.slept == 5 and "; waited 5 s" in refused.value.message
    assert refused.value.details["waited_s"] == 5


def test_a_lease_released_during_the_wait_goes_to_the_waiting_run(path, clock):
    held = leases(path, clock)
    held.acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=600)

    def sleep(seconds):
        clock.sleep(seconds)
        if clock.slept >= 3:
            held.release("7f3a")

    taken = Leases(path, clock=clock, sleep=sleep).acquire("bob@ctl-2", "9b1c", "v1.3.0", ttl=600, wait=30)
    assert taken["lease"]["run"] == "9b1c" and taken["waited_s"] == 3


def test_a_dead_holders_lease_expires_and_is_taken_over(path, clock):
    leases(path, clock).acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=60)
    clock.now += 61  # alice's controller died: nobody renewed
    taken = leases(path, clock).acquire("bob@ctl-2", "9b1c", "v1.3.0", ttl=60)
    assert taken["lease"]["owner"] == "bob@ctl-2"
    assert taken["took_over"].startswith("rollout of v1.1.0 by alice@ctl-1 (run 7f3a), expired ")
    assert taken["took_over"].endswith("(1 s ago)")


def test_the_holder_renews_by_acquiring_its_own_lease_again(path, clock):
    mine = leases(path, clock)
    acquired = mine.acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=60)["lease"]
    clock.now += 50
    renewed = mine.acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=60)
    assert renewed["lease"]["expires"] == clock.now + 60 and "took_over" not in renewed
    assert renewed["lease"]["acquired"] == acquired["acquired"]
    clock.now += 50  # past the first expiry, within the renewed one
    with pytest.raises(LeaseHeld):
        leases(path, clock).acquire("bob@ctl-2", "9b1c", "v1.3.0", ttl=60)


def test_a_lost_lease_comes_back_only_while_nobody_else_holds_it(path, clock):
    mine = leases(path, clock)
    mine.acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=60)
    clock.now += 61
    leases(path, clock).acquire("bob@ctl-2", "9b1c", "v1.3.0", ttl=60)
    with pytest.raises(LeaseHeld) as lost:
        mine.acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=60)
    assert lost.value.message.startswith("held by rollout of v1.3.0 by bob@ctl-2 (run 9b1c)")
    assert held(path) == "9b1c"
    leases(path, clock).release("9b1c")  # bob's rollout ended: no rollout is under way
    assert mine.acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=60)["lease"]["run"] == "7f3a"


def test_release_removes_only_the_runs_own_lease_unless_forced(path, clock):
    leases(path, clock).acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=60)
    other = leases(path, clock).release("9b1c")
    assert not other["changed"] and other["note"].startswith("held by rollout of v1.1.0")
    assert leases(path, clock).release("7f3a")["released"]["run"] == "7f3a"
    assert leases(path, clock).release("7f3a") == {"changed": False, "file": path, "note": "no lease"}
    leases(path, clock).acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=60)
    assert leases(path, clock).release(None, force=True)["changed"]
    assert lease.read(path) is None


def test_a_damaged_lease_protects_nothing(path, clock):
    with open(path, "w") as fh:
        fh.write('{"owner": "alice@ct')
    assert lease.holder(path, clock()) is None
    assert leases(path, clock).acquire("bob@ctl-2", "9b1c", "v1.3.0", ttl=60)["lease"]["run"] == "9b1c"


def _race(path: str, run: str, start, results) -> None:
    start.wait()
    try:
        Leases(path).acquire("ctl-%s" % run, run, "v-%s" % run, ttl=60)
        results.put(run)
    except LeaseHeld:
        results.put(None)


def test_racing_controllers_cannot_both_win(tmp_path):
    """Eight processes released at once against one file: the flock lets exactly one of them in."""
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        path = str(tmp_path / ("lease-%d.json" % attempt))
        start = context.Event()
        results = context.Queue()
        racers = [context.Process(target=_race, args=(path, "r%d" % i, start, results)) for i in range(8)]
        for racer in racers:
            racer.start()
        start.set()
        for racer in racers:
            racer.join(30)
        winners = [run for run in (results.get(timeout=5) for _ in racers) if run]
        assert len(winners) == 1, winners
        assert held(path) == winners[0]


def test_the_lease_command_needs_no_agent_config(path, capsys):
    argv = ["--config", "/nonexistent/edge-app.json", "--json", "lease"]
    assert (
        cli.main(
            [
                *argv,
                "acquire",
                "--file",
                path,
                "--owner",
                "alice@ctl-1",
                "--run",
                "7f3a",
                "--release",
                "v1.1.0",
                "--ttl",
                "60",
            ]
        )
        == 0
    )
    taken = json.loads(capsys.readouterr().out)
    assert taken["ok"] and taken["lease"]["owner"] == "alice@ctl-1"
    assert (
        cli.main(
            [*argv, "acquire", "--file", path, "--owner", "bob@ctl-2", "--run", "9b1c", "--release", "v1.3.0"]
        )
        == EXIT_BUSY
    )
    refused = json.loads(capsys.readouterr().out)
    assert refused["error"]["kind"] == "leased"
    assert refused["error"]["message"].startswith("held by rollout of v1.1.0 by alice@ctl-1 (run 7f3a)")
    assert cli.main([*argv, "release", "--file", path]) == 2  # neither --run nor --force
    capsys.readouterr()
    assert cli.main([*argv, "release", "--file", path, "--run", "7f3a"]) == 0
    assert json.loads(capsys.readouterr().out)["released"]["run"] == "7f3a"


def test_pull_leaves_a_robot_that_a_push_rollout_holds(tmp_path):
    held = str(tmp_path / "lease.json")
    Leases(held).acquire("alice@ctl-1", "7f3a", "v1.1.0", ttl=600)
    agent = Agent(
        Config(
            {
                "root": str(tmp_path / "opt"),
                "state_dir": str(tmp_path / "state"),
                "systemd": False,
                "lease_file": held,
            }
        )
    )
    with pytest.raises(LeaseHeld) as refused:
        agent.pull(str(tmp_path / "repo"))
    assert "held by rollout of v1.1.0 by alice@ctl-1 (run 7f3a)" in refused.value.message
    assert not (tmp_path / "opt" / "releases").exists()  # nothing staged
    pulled = agent.state()["pull"]
    assert pulled["result"] == "leased" and "alice@ctl-1" in pulled["message"], pulled
