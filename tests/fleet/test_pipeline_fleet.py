"""`edge-deploy pipeline` end to end on simulated robots, as a CI job runs it: a fleet repository
under git (the layout of examples/ci/README.md) whose last commit changes the model only, and the
command of the GitHub Actions template run as it stands, with the online keys as CI secrets in the
environment and the root key elsewhere.

The module starts a fleet of its own: two Orin NX robots (nx-01 is the canary of orin_nx_robots).
The first release goes to both (--whole-group); the model commit's release goes to the canary only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge_deploy.release import bundle
from edge_deploy.release.repo import KEY_ENV, ReleaseRepository
from edge_deploy.sim import Fleet
from tests import digits
from tests.browser import CHROMIUM, pictures, rendered
from tests.repo import REPO

from .conftest import FleetRun
from .test_release_fleet import AGENT, CONFIG, sh

onnx = pytest.importorskip("onnx")

MIX = ("orin-nx-16gb-jp60",)
CANARY, OTHER = "nx-01", "nx-02"
WINDOWS = {
    "release_health_soak_seconds": 1,
    "release_health_interval_seconds": 0.5,
    "release_health_start_timeout_seconds": 30,
    "rollout_wave_soak_seconds": 0,
}
DIGITS = digits.DIGITS


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@example.com",
               GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@example.com")  # fmt: skip
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


def template_command(number: int) -> str:
    """The pipeline step of the GitHub Actions template, with this run's number."""
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "github-actions.yml").read_text())
    step = next(s for s in workflow["jobs"]["pipeline"]["steps"] if s.get("name") == "Model to canary")
    edge_deploy = str(Path(sys.executable).parent / "edge-deploy")
    return (
        step["run"]
        .replace(".venv/bin/edge-deploy", edge_deploy)
        .replace("${{ github.run_number }}", str(number))
    )


def retrained(src: Path, dest: Path, scale: float) -> None:
    """The digits model with its output layer's bias scaled: another file, the same classifier."""
    model = onnx.load(str(src))
    bias = next(init for init in model.graph.initializer if init.dims == [10])
    values = onnx.numpy_helper.to_array(bias) * scale
    bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
    onnx.save(model, str(dest))


def agent_status(fleet: FleetRun, robot: str) -> dict:
    proc = fleet.exec(robot, *AGENT, "--config", CONFIG, "--json", "status")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ci(tmp_path_factory):
    """The fleet, a signed repository whose online keys are the job's secrets, and the fleet's git
    repository with its first release on both robots."""
    state = tmp_path_factory.mktemp("pipeline-fleet")
    fleet = Fleet("p%d" % os.getpid(), state_dir=state, inventory_dir=state / "inventory")
    try:
        fleet.up(2, MIX)
        fleet.write_vars("test-windows", WINDOWS, "short health and wave windows for the test")
        offline = state / "offline-keys"  # where the root key stays: never in the job's reach
        repository = ReleaseRepository(str(state / "repo"), str(offline))
        repository.init()
        work = state / "fleet-repo"
        (work / "models").mkdir(parents=True)
        shutil.copyfile(DIGITS / "digits_fp32.onnx", work / "models" / "digits_fp32.onnx")
        digits.calibration(work / "models" / "calibration")
        digits.labelled(work / "models" / "golden.npz")
        models = bundle.load_source_manifest(REPO / "examples" / "sample_app")["models"]
        models[0]["golden"]["p99_ms"] = 5000  # the robots share this machine's cores
        bundle.variant(str(REPO / "examples" / "sample_app"), str(work / "app"), None, models=models)
        (work / "inventory").symlink_to(fleet.inventory_dir)
        (work / ".gitignore").write_text("reports/\n")
        git(work, "init", "-q", "-b", "main")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "fleet repository: app, model, inventory")
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            CI="true",
            RELEASE_REPO=str(repository.repo),
            MODEL_NAME="digits",
            CANARY_GROUP="orin_nx_robots",
            PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        )
        for role, variable in KEY_ENV.items():  # the CI secrets
            env[variable] = (offline / ("%s.pem" % role)).read_text()
        argv = ["pipeline", "--model", "models/digits_fp32.onnx", "--calibration", "models/calibration",
                "--golden", "models/golden.npz", "--release-source", "app", "--model-name", "digits",
                "--tag", "v1.1.0", "--repo", str(repository.repo), "-i", "inventory",
                "-l", "orin_nx_robots", "--whole-group", "--out", "reports/pipeline-1"]  # fmt: skip
        first = subprocess.run([str(Path(sys.executable).parent / "edge-deploy"), *argv], cwd=work, env=env,
                               capture_output=True, text=True, timeout=1200)  # fmt: skip
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
        yield FleetRun(fleet), repository, work, env
    finally:
        fleet.down()


@pytest.fixture(scope="module")
def model_commit(ci):
    """A commit that changes the model only, then the template's command as the CI job runs it."""
    fleet, _, work, env = ci
    retrained(DIGITS / "digits_fp32.onnx", work / "models" / "digits_fp32.onnx", 1.01)
    git(work, "commit", "-q", "-am", "models: retrained digits")
    changed = git(work, "show", "--name-only", "--format=", "HEAD").split()
    before = {robot: agent_status(fleet, robot) for robot in (CANARY, OTHER)}
    proc = subprocess.run(["bash", "-c", template_command(2)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=1200)  # fmt: skip
    report = json.loads((work / "reports" / "pipeline" / "pipeline.json").read_text())
    return changed, before, proc, report


def test_a_model_commit_goes_through_every_gate_to_the_canary_only(ci, model_commit):
    fleet, repository, work, _ = ci
    changed, before, proc, report = model_commit
    assert changed == ["models/digits_fp32.onnx"], changed  # the model is the commit's only change
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert report["status"] == "ok" and report["tag"] == "v1.2.0", report
    steps = {step["step"]: step for step in report["steps"]}
    assert list(steps) == ["export", "check", "quantize", "accuracy", "build", "sign", "deploy"]
    assert all(step["status"] == "ok" for step in steps.values()), steps
    accuracy = steps["accuracy"]
    assert accuracy["drop_points"] <= 1.0 and accuracy["samples"] == 450, accuracy
    assert "v1.2.0" in ReleaseRepository(str(repository.repo), str(work)).releases()["edge-app"]
    # the canary took it, with an engine built from the new model and gated
    deploy = steps["deploy"]
    assert deploy["limit"] == CANARY and list(deploy["robots"]) == [CANARY], deploy
    canary = deploy["robots"][CANARY]
    assert canary["status"] == "ok" and canary["release_after"] == "v1.2.0", canary
    assert canary["health"] == "passed" and canary["engines"] == {"digits": "built"}, canary
    now = agent_status(fleet, CANARY)
    assert now["current"] == "v1.2.0" and now["service"]["ActiveState"] == "active", now
    active = json.loads(sh(fleet, CANARY, "cat /opt/edge-app/shared/engines/active.json").stdout)
    other = json.loads(sh(fleet, OTHER, "cat /opt/edge-app/shared/engines/active.json").stdout)
    assert active["engines"]["digits"]["fingerprint"] != other["engines"]["digits"]["fingerprint"]
    # the rest of the group was not touched: its release and its staged releases are as before
    now = agent_status(fleet, OTHER)
    assert now["current"] == before[OTHER]["current"] == "v1.1.0", now
    assert [r["tag"] for r in now["releases"]] == [r["tag"] for r in before[OTHER]["releases"]]
    # the run's page: every step, both accuracies, the canary's rollout with its own page and timeline
    page = work / "reports" / "pipeline" / "pipeline.html"
    assert work / report["html"] == page  # paths as the job gave them: below its working directory
    rollout_page = (work / deploy["report"]).with_name("report.html")
    assert rollout_page.is_file() and rollout_page.with_name("timeline.png").is_file()
    if CHROMIUM:
        dom = rendered(page)
        assert pictures(dom) == (3, 3), dom[:500]  # accuracy, time per step, the rollout's timeline
        assert "Rollout to %s" % CANARY in dom and "<td>deploy</td>" in dom
        assert pictures(rendered(rollout_page)) == (1, 1)
    timings = ", ".join("%s %.1f s" % (name, step["seconds"]) for name, step in steps.items())
    print("pipeline v1.2.0 (model commit to canary) in %.1f s: %s" % (report["seconds"], timings))


def test_the_root_key_never_signs_in_ci(ci, model_commit):
    """The job held the online keys only: the repository's root is still the offline one, and a
    keys folder with root.pem in it is refused before anything is signed."""
    _, repository, work, env = ci
    root = json.loads((Path(repository.repo) / "metadata" / "root.json").read_text())
    assert root["signed"]["version"] == 1
    keys = work / "keys"
    shutil.copytree(repository.keys, keys)
    retrained(DIGITS / "digits_fp32.onnx", work / "models" / "digits_fp32.onnx", 1.02)
    command = template_command(3).replace("--repo", "--keys keys --repo")
    proc = subprocess.run(
        ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 3, proc.stdout[-3000:]
    report = json.loads((work / "reports" / "pipeline" / "pipeline.json").read_text())
    assert report["status"] == "failed" and report["failed_step"] == "sign", report
    assert "the root key is within reach of this CI job (keys/root.pem)" in report["error"], report
    assert "v1.3.0" not in ReleaseRepository(str(repository.repo), str(keys)).releases()["edge-app"]
    shutil.rmtree(keys)
