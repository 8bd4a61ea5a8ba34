"""edge-deploy status rows, from facts shaped as the robots give them: the agent's own status
output (what ansible_local.edge_release runs) and the jetson_facts fact."""

from __future__ import annotations

from test_release_agent import interrupt_activation, live

from edge_deploy import status


def test_row_from_a_real_agent_status(releases, make_agent):
    agent = make_agent()
    live(agent, releases, "v1.0.0", "v1.1.0")
    facts = {
        "ansible_local": {
            "edge_release": agent.status(),
            "jetson": {"module_name": "Jetson Orin NX 16GB", "jetpack": "6.0", "l4t": "36.3.0"},
        }
    }
    row = status.robot_row("nx-01", facts)
    assert row["current"] == "v1.1.0" and row["previous"] == "v1.0.0"
    assert row["kept"] == ["v1.0.0", "v1.1.0"] and row["bad"] == []
    assert row["module"] == "Jetson Orin NX 16GB" and row["jetpack"] == "6.0"
    assert row["last"] == "activate v1.0.0 -> v1.1.0 (ok)"
    cells = status.cells(row)
    assert cells[:5] == ["nx-01", "Jetson Orin NX 16GB", "6.0", "v1.1.0", "v1.0.0"]
    assert cells[5] == "v1.0.0, v1.1.0" and cells[6] == "-"


def test_row_says_why_an_interrupted_activation_was_undone(releases, make_agent, monkeypatch):
    agent = make_agent()
    live(agent, releases, "v1.0.0")
    releases.publish("v1.1.0")
    agent.stage(str(releases.repo_dir), "v1.1.0")
    interrupt_activation(agent, "v1.1.0", monkeypatch, interrupt=KeyboardInterrupt)
    make_agent().recover()
    row = status.robot_row("nx-01", {"ansible_local": {"edge_release": agent.status()}})
    assert row["current"] == "v1.0.0" and row["bad"] == []
    assert row["last"] == (
        "recover v1.1.0 -> v1.0.0 (ok): activate of v1.1.0 interrupted before its health gate passed "
        "(the robot or the agent stopped); v1.1.0 may be tried again"
    )


def test_rows_for_robots_without_the_agent_or_out_of_reach():
    bare = status.robot_row("xavier-01", {"ansible_local": {}})
    assert bare["current"] is None and bare["kept"] == [] and status.cells(bare)[3] == "-"
    gone = status.cells(status.robot_row("nano-09", None, reachable=False))
    assert gone[:2] == ["nano-09", "unreachable"] and set(gone[2:]) == {"-"}


def test_pull_column_only_where_robots_pull(releases, make_agent):
    pusher = make_agent()
    live(pusher, releases, "v1.0.0")
    push_row = status.robot_row("nx-01", {"ansible_local": {"edge_release": pusher.status()}})
    assert push_row["pull"] is None and "pull" not in status.columns([push_row])
    pusher.pull(str(releases.repo_dir))  # v1.0.0 is the newest: up to date
    pull_row = status.robot_row("nx-02", {"ansible_local": {"edge_release": pusher.status()}})
    assert pull_row["pull"].startswith("up to date v1.0.0 at "), pull_row
    assert pull_row["pull_message"] == "up to date: v1.0.0 is the newest signed release"
    shown = status.columns([push_row, pull_row])
    assert shown[-1] == "pull" and status.cells(push_row, shown)[-1] == "-"
    assert status.cells(pull_row, shown)[-1] == pull_row["pull"]
