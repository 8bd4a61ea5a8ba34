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
import re
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
from tests.detection import detector
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
    # tegrastats through the engine gate's benchmark and the health soak, within the group's budget
    rollout = json.loads((work / deploy["report"]).read_text())["robots"][CANARY]
    engine = rollout["stage"]["engines"]["digits"]
    assert engine["module_class"] == "orin_nx" and engine["gate"]["latency_ms"]["p99"] > 0, engine
    budget = yaml.safe_load((REPO / "edge_deploy/simdata/group_vars/orin_nx_robots.yml").read_text())
    for window in (engine["gate"]["resources"], rollout["resources"]):
        assert window["passed"] and window["samples"] >= 1 and window["breaches"] == [], window
        assert window["budget"] == {k: float(v) for k, v in budget["release_resource_budget"].items()}
        assert window["power_peak_w"] > 0 and window["tj_temp_peak_c"] > 0 and window["trace"], window
        assert window["unchecked"] == ["throttle_events_max"]  # no soctherm counters in a simulator
    for picture in ("latency.png", "resources.png"):
        assert rollout_page.with_name(picture).is_file(), picture
    if CHROMIUM:
        dom = rendered(page)
        assert pictures(dom) == (5, 5), dom[:500]  # accuracy, time per step, the rollout's three
        assert "Rollout to %s" % CANARY in dom and "<td>deploy</td>" in dom
        rollout_dom = rendered(rollout_page)
        assert pictures(rollout_dom) == (3, 3)  # timeline, latency per module class, resource traces
        assert "<td>health soak</td>" in rollout_dom and "<td>within budget</td>" in rollout_dom
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


def test_a_release_that_breaks_the_canarys_resource_budget_is_refused_and_says_by_how_much(ci, model_commit):
    """A 5 W budget (below what a simulated Orin NX draws in 25W mode at rest): the canary's engine
    gate refuses the model commit's release at staging, the report names the budget and the
    distance, and the canary keeps running the release it had."""
    fleet, _, work, env = ci
    # a host variable: it overrides the module class's group_vars, as a site's own setting would
    tight = fleet.fleet.inventory_dir / "tight-budget.yml"
    tight.write_text(
        yaml.safe_dump({"all": {"hosts": {CANARY: {"release_resource_budget": {"power_max_w": 5}}}}})
    )
    try:
        retrained(DIGITS / "digits_fp32.onnx", work / "models" / "digits_fp32.onnx", 1.03)
        proc = subprocess.run(["bash", "-c", template_command(4)], cwd=work, env=env, capture_output=True,
                              text=True, timeout=1200)  # fmt: skip
    finally:
        tight.unlink()
    assert proc.returncode == 3, proc.stdout[-3000:]
    report = json.loads((work / "reports" / "pipeline" / "pipeline.json").read_text())
    assert report["status"] == "failed" and report["failed_step"] == "deploy", report
    deploy = next(step for step in report["steps"] if step["step"] == "deploy")
    rollout = json.loads((work / deploy["report"]).read_text())["robots"][CANARY]
    assert rollout["status"] == "failed", rollout
    said = re.search(r"resource budget broken: power peak ([0-9.]+) W > budget 5 W \(over by ([0-9.]+) W\)",
                     rollout["error"])  # fmt: skip
    assert said, rollout["error"]
    assert float(said.group(1)) - 5 == pytest.approx(float(said.group(2)), abs=0.01)
    assert "release_resource_budget" in rollout["error"], rollout["error"]
    now = agent_status(fleet, CANARY)
    assert now["current"] == "v1.2.0" and now["service"]["ActiveState"] == "active", now


def test_a_detection_sized_model_reaches_the_canary_with_its_figures(ci, model_commit):
    """The example detector (YOLOv5s-sized, 640x640, random weights: size and speed only) as a
    second model of the fleet's release: quantized, gated on INT8-FP32 agreement (its accuracy is
    not measurable), signed and deployed to the canary, whose engine gate benchmarks it. Its
    latency here is this machine's CPU shared by two simulated robots, never a Jetson's."""
    _, repository, work, env = ci
    models = work / "models"
    detector.build_model(str(models / "detector_fp32.onnx"))
    detector.write_calibration(str(models / "detector-calibration"), count=8)
    detector.write_golden(str(models / "detector-golden.npz"), count=2)
    manifest = bundle.load_source_manifest(work / "app")
    manifest["models"].append(
        {
            "name": "detector",
            "onnx": "models/detector_int8_qdq.onnx",
            "precision": "int8",
            "backends": ["tensorrt", "onnxruntime"],
            # random weights: top-1 means nothing, the outputs must agree; the robots share this
            # machine's cores, so the mission's Jetson targets (p99 30/15/10 ms) are not asked here
            "golden": {"min_cosine": 0.99, "max_top1_disagreement": 1.0, "iterations": 10, "warmup": 2,
                       "p99_ms": 60000},
        }
    )  # fmt: skip
    (work / "app" / "release.json").write_text(json.dumps(manifest, indent=2))
    argv = ["pipeline", "--model", "models/detector_fp32.onnx",
            "--calibration", "models/detector-calibration", "--golden", "models/detector-golden.npz",
            "--release-source", "app", "--model-name", "detector", "--tag", "v1.5.0",
            "--repo", str(repository.repo), "-i", "inventory", "-l", "orin_nx_robots",
            "--out", "reports/detector"]  # fmt: skip
    proc = subprocess.run([str(Path(sys.executable).parent / "edge-deploy"), *argv], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    report = json.loads((work / "reports" / "detector" / "pipeline.json").read_text())
    steps = {step["step"]: step for step in report["steps"]}
    accuracy = steps["accuracy"]
    assert accuracy["accuracy"] == "not measurable: the golden set has no labels", accuracy
    assert accuracy["cosine_min"] >= 0.99 and accuracy["samples"] == 2, accuracy
    fp32_bytes, int8_bytes = steps["export"]["bytes"], steps["quantize"]["bytes"]
    assert 24e6 < fp32_bytes < 36e6 and int8_bytes < fp32_bytes / 3, (fp32_bytes, int8_bytes)
    rollout = json.loads((work / steps["deploy"]["report"]).read_text())["robots"][CANARY]
    assert rollout["status"] == "ok" and rollout["release_after"] == "v1.5.0", rollout
    assert rollout["engines"] == {"detector": "built", "digits": "hit"}, rollout["engines"]
    gate = rollout["stage"]["engines"]["detector"]["gate"]
    assert gate["passed"] and gate["latency_ms"]["p50"] > 0 and gate["resources"]["passed"], gate
    golden_bytes = (
        (Path(repository.repo) / "targets/edge-app/v1.5.0/models/detector_golden.npz").stat().st_size
    )
    staged = rollout["bytes_staged"]
    assert int8_bytes + golden_bytes <= staged < int8_bytes + golden_bytes + 200_000, staged
    print(
        "detector 640x640 (simulated robot, this CPU): ONNX FP32 %d B, INT8 %d B; INT8 vs FP32 cosine %.6f "
        "(accuracy not measurable); quantize %.1f s; robot gate latency p50 %.1f ms p99 %.1f ms; "
        "staged %d B (model %d B, golden set %d B); pipeline %.1f s"
        % (fp32_bytes, int8_bytes, accuracy["cosine_min"], steps["quantize"]["seconds"],
           gate["latency_ms"]["p50"], gate["latency_ms"]["p99"], staged, int8_bytes, golden_bytes,
           report["seconds"])
    )  # fmt: skip
