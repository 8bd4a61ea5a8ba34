"""The rollout report: summary lines and the timeline picture from a recorded report.json."""

from __future__ import annotations

import json

from edge_deploy import report

RECORDED = {
    "playbook": "deploy.yml",
    "duration_s": 42.0,
    "robots": {
        "nano-01": {
            "status": "ok",
            "wave": 1,
            "release_before": "v1",
            "release_after": "v2",
            "bytes_staged": 2048,
            "engines": {"digits": True},
            "health": "passed",
            "steps": [
                {"play": "Stage", "task": "stage", "status": "changed", "start": 0.5, "end": 3.0},
                {
                    "play": "Activate",
                    "task": "activate",
                    "status": "changed",
                    "start": 5.0,
                    "end": 9.0,
                    "wave": 1,
                },
            ],
        },
        "nx-01": {
            "status": "failed",
            "wave": 2,
            "release_before": "v1",
            "release_after": "v1",
            "rolled_back": True,
            "health": "failed: /healthz 500",
            "steps": [
                {
                    "play": "Activate",
                    "task": "activate",
                    "status": "failed",
                    "start": 10.0,
                    "end": 14.0,
                    "wave": 2,
                }
            ],
        },
        "agx-01": {
            "status": "ok",
            "wave": 2,
            "deferred": "mission lock: busy",
            "release_before": "v1",
            "steps": [{"play": "Activate", "task": "lock", "status": "ok", "start": 10.0, "end": 11.0}],
        },
    },
}


def test_summary_orders_by_wave_and_says_what_happened():
    lines = report.summary_lines(RECORDED)
    assert lines[0].split() == ["robot", "wave", "release", "outcome", "staged", "engines", "health", "time"]
    assert lines[1].startswith("nano-01") and "v1 -> v2" in lines[1] and "updated" in lines[1]
    assert "digits hit" in lines[1] and "2048 B" in lines[1] and "8.5 s" in lines[1]
    assert any(line.startswith("agx-01") and "deferred" in line for line in lines)
    assert any(line.startswith("nx-01") and "rolled back" in line for line in lines)
    assert lines[-1] == "deploy.yml: 1 deferred, 1 rolled back, 1 updated in 42.0 s"


def test_summary_shortens_long_health_messages_and_says_why_a_rollout_stopped():
    recorded = json.loads(json.dumps(RECORDED))
    message = "failed: not healthy within 60 s: http://127.0.0.1:8080/healthz answered 503: " + "x" * 300
    recorded["robots"]["nx-01"]["health"] = message
    recorded["stopped"] = "Rollout of v2 stopped: the canary wave failed (nx-01)."
    recorded["robots"]["r9"] = {"status": "ok", "release_before": "v1", "release_target": "v2"}
    lines = report.summary_lines(recorded)
    row = next(line for line in lines if line.startswith("nx-01"))
    assert message[: report.HEALTH_WIDTH - 3] + "..." in row and "x" * 300 not in row
    assert lines[-2] == recorded["stopped"]
    last_robot = [line for line in lines if line.startswith(("nano-01", "nx-01", "agx-01", "r9"))][-1]
    assert last_robot.startswith("r9") and "not activated" in last_robot  # in no wave: listed last


def test_render_writes_summary_and_a_png(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(RECORDED))
    outputs = report.render(path)
    assert (tmp_path / "summary.txt").read_text().splitlines()[-1].startswith("deploy.yml:")
    png = (tmp_path / "timeline.png").read_bytes()
    assert outputs["timeline"].endswith("timeline.png") and png[:8] == b"\x89PNG\r\n\x1a\n"
