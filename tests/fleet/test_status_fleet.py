"""edge-deploy status over real SSH: one row per robot, matching what each robot's agent says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.repo import REPO

from .test_release_fleet import AGENT, CONFIG


def test_status_matches_every_robots_agent(fleet):
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    proc = subprocess.run(
        [sys.executable, "-m", "edge_deploy", "status", "-i", str(fleet.fleet.inventory_dir), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert set(found["robots"]) == set(fleet.robots)
    for name, row in found["robots"].items():
        assert row["reachable"], row
        agent = fleet.exec(name, *AGENT, "--config", CONFIG, "--json", "status")
        if agent.returncode != 0:  # no release agent on this robot (yet): no release either
            assert row["current"] is None and row["kept"] == [], row
            continue
        truth = json.loads(agent.stdout.strip().splitlines()[-1])
        assert row["current"] == truth["current"] and row["previous"] == truth["previous"], (row, truth)
        assert row["kept"] == [entry["tag"] for entry in truth["releases"]], (row, truth)
        assert row["bad"] == sorted(truth["bad"]), (row, truth)
        pulled = truth.get("pull")  # the pull module's robot pulled; the others never did
        if pulled:
            assert row["pull"].startswith("%s %s at" % (pulled["result"], pulled["tag"] or "-")), (row, truth)
        else:
            assert row["pull"] is None, (row, truth)
