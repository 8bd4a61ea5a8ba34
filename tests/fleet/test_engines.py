"""playbooks/engines.yml (the engine role and trt_engine) on simulated robots over real SSH: a signed
release's engines built on each robot by engine_builder's one engine path, into the store the
release agent reads (onnxruntime backend: simulated robots, not Jetson figures). Then the accuracy
gate end to end on one robot: a release whose INT8 model lost accuracy is refused by deploy.yml
(push, the release role) and by the agent's pull, and the robot keeps its gated release."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from edge_deploy.sim import podman
from tests.repo import REPO

from .test_release_fleet import ROLE_VARS, Releases, agent, sh, status

DIGITS = REPO / "examples" / "digits"
ROBOTS = ("nano-01", "nx-01", "agx-01")
STORE = "/var/lib/edge-test-engines"
GOLDEN = {"samples": "models/digits_golden.npz", "max_abs_error": 2.0, "p99_ms": 5000, "iterations": 20}
DIGITS_INT8 = {"name": "digits", "onnx": "models/digits_int8_qdq.onnx", "precision": "int8", "golden": GOLDEN}
DIGITS_FP32 = dict(DIGITS_INT8, name="digits_fp32", onnx="models/digits_fp32.onnx", precision="fp32")
ASSETS = {"models/digits_fp32.onnx": str(DIGITS / "digits_fp32.onnx")}


@pytest.fixture(scope="module")
def engines(fleet, tmp_path_factory):
    work = tmp_path_factory.mktemp("engines")
    releases = Releases(work / "releases")
    releases.publish("v1.0.0", models=[DIGITS_INT8])
    sample = json.loads((releases.source("v1.1.0") / "release.json").read_text())
    releases.publish("v1.1.0", models=[DIGITS_INT8, DIGITS_FP32], assets=dict(sample["assets"], **ASSETS))

    def run(tag, *args):
        values = {
            "release": tag,
            "release_repository": str(releases.repo.repo),
            "engine_dest": STORE,
            "engine_report_dir": str(work / "reports"),
        }
        vars_file = work / "vars.json"
        vars_file.write_text(json.dumps(values))
        return fleet.playbook("playbooks/engines.yml", "-l", fleet.supported, "-e", "@%s" % vars_file, *args)

    run.work = work
    run.releases = releases
    return run


def report(engines, robot, name):
    return json.loads((engines.work / "reports" / robot / "engines" / ("%s.json" % name)).read_text())


def current(fleet, robot, name):
    return fleet.exec(robot, "readlink", "%s/%s/current" % (STORE, name)).stdout.strip()


def test_first_run_builds_everywhere_second_run_changes_nothing(fleet, engines):
    first = engines("v1.0.0")
    assert first.rc == 0, first.stdout[-4000:]
    assert all(first.recap[robot]["changed"] >= 1 for robot in ROBOTS), first.recap
    for robot in ROBOTS:
        built = report(engines, robot, "digits")
        assert built["built"] and built["precision"] == "int8" and built["gate_passed"], built
        assert built["accuracy"]["passed"] and built["latency_ms"]["p99"] > 0, built
        assert built["files_sent"] == ["onnx", "samples"], built  # nothing of the release was on the robot
        assert current(fleet, robot, "digits") == built["fingerprint"]
        assert built["artifact_path"].startswith("%s/digits/%s/" % (STORE, built["fingerprint"]))
        digest = fleet.exec(robot, "sha256sum", built["artifact_path"]).stdout.split()[0]
        assert digest == built["artifact_sha256"]

    second = engines("v1.0.0")
    assert second.rc == 0
    assert second.changed() == {robot: 0 for robot in ROBOTS}, second.stdout[-4000:]
    for robot in ROBOTS:
        again = report(engines, robot, "digits")
        assert again["cache_hit"] and not again["built"] and again["files_sent"] == [], again


def test_check_mode_builds_nothing_and_says_what_would(fleet, engines):
    run = engines("v1.1.0", "--check", "--diff")
    assert run.rc == 0, run.stdout[-4000:]
    assert all(run.recap[robot]["changed"] == 1 for robot in ROBOTS), run.recap
    assert "fingerprint: None" in run.stdout and "+fingerprint: " in run.stdout, run.stdout[-3000:]
    for robot in ROBOTS:
        assert fleet.exec(robot, "test", "-e", "%s/digits_fp32" % STORE).returncode != 0


def test_a_release_with_a_new_model_builds_only_that_engine(fleet, engines):
    before = {robot: current(fleet, robot, "digits") for robot in ROBOTS}
    run = engines("v1.1.0")
    assert run.rc == 0, run.stdout[-4000:]
    for robot in ROBOTS:
        digits, other = report(engines, robot, "digits"), report(engines, robot, "digits_fp32")
        assert digits["cache_hit"] and current(fleet, robot, "digits") == before[robot]
        assert other["built"] and other["precision"] == "fp32" and other["files_sent"] == ["onnx", "samples"]


def test_an_unsigned_tag_or_a_served_repository_is_refused_before_any_robot_is_touched(fleet, engines):
    before = {robot: current(fleet, robot, "digits") for robot in ROBOTS}
    unsigned = engines("v9.9.9")
    assert unsigned.rc != 0
    assert "No signed release edge-app v9.9.9 in %s" % engines.releases.repo.repo in unsigned.stdout, (
        unsigned.stdout[-2000:]
    )
    served = fleet.playbook(
        "playbooks/engines.yml",
        "-l",
        fleet.supported,
        "-e",
        "release=v1.0.0",
        "-e",
        "release_repository=https://127.0.0.1:9/repo",
        "-e",
        "engine_dest=%s" % STORE,
    )
    assert served.rc != 0
    assert "engines.yml builds from a repository folder on the controller" in served.stdout, served.stdout[
        -2000:
    ]
    for run in (unsigned, served):
        assert "Build the release's engines" not in run.stdout
    assert {robot: current(fleet, robot, "digits") for robot in ROBOTS} == before


def test_corrupt_onnx_fails_clearly_and_keeps_the_store(fleet, engines):
    releases = engines.releases
    cut = engines.work / "cut-copy.bin"  # a name that says nothing: the message must
    shutil.copy(DIGITS / "digits_fp32.onnx", cut)
    whole = cut.stat().st_size
    cut.write_bytes(cut.read_bytes()[: whole // 3])
    sample = json.loads((releases.source("v1.2.0") / "release.json").read_text())
    releases.publish(
        "v1.2.0",
        models=[DIGITS_FP32],
        assets=dict(sample["assets"], **{"models/digits_fp32.onnx": str(cut)}),
    )
    before = current(fleet, "nx-01", "digits_fp32")
    listing = fleet.exec("nx-01", "ls", "-a", "%s/digits_fp32" % STORE).stdout
    run = engines("v1.2.0", "-l", "nx-01")
    assert run.rc != 0
    failure = next((line for line in run.stdout.splitlines() if "corrupt or truncated ONNX file" in line), "")
    # what the robot found, where the file came from, and what to do, in words
    assert "engine build and gate failed on the robot for the release's models/digits_fp32.onnx" in failure
    assert "/targets/edge-app/v1.2.0/models/digits_fp32.onnx" in failure, failure  # the controller's copy
    cut_short = r"\(%d bytes\): it ends \d+ bytes before its graph does" % (whole // 3)
    assert re.search(cut_short, failure), failure
    assert "re-export it or re-copy it" in failure, failure
    for trace in ("Protobuf", "protobuf", "INVALID_PROTOBUF", "DecodeError", "Traceback"):
        assert trace not in run.stdout, (trace, run.stdout[-3000:])
    assert current(fleet, "nx-01", "digits_fp32") == before
    assert fleet.exec("nx-01", "ls", "-a", "%s/digits_fp32" % STORE).stdout == listing  # no staging left
    refused = report(engines, "nx-01", "digits_fp32")  # the report says it too
    assert refused["error"]["kind"] == "model" and not refused.get("artifact_path"), refused


# --------------------------------------------------------------------------- the accuracy gate
GATED = "nano-01"
SERVED = "/srv/edge-gated-releases"
# labelled golden set, no other parity limit: the accuracy points alone decide (default 1 point)
ACCURACY_ONLY = {"samples": "models/digits_golden.npz", "p99_ms": 5000, "iterations": 20}
HEALTHY = {"name": "digits", "onnx": "models/digits_int8_qdq.onnx", "precision": "int8",
           "backends": ["tensorrt", "onnxruntime"], "golden": ACCURACY_ONLY}  # fmt: skip
# the same model calibrated on one blank frame (examples/digits/train.py): a measured 18.9-point drop
DEGRADED = dict(HEALTHY, onnx="models/digits_int8_miscalibrated.onnx")
DEPLOY_VARS = dict(
    ROLE_VARS,
    release_health_soak_seconds=1,
    rollout_waves=[1],
    rollout_wave_soak_seconds=0,
    rollout_mission_lock_retries=1,
    rollout_mission_lock_delay_seconds=1,
)


@pytest.fixture(scope="module")
def gated(fleet, tmp_path_factory):
    """A repository of its own: v1.0.0 healthy INT8, v2.0.0 the miscalibrated INT8 model."""
    work = tmp_path_factory.mktemp("gated")
    releases = Releases(work / "releases")
    releases.publish("v1.0.0", models=[HEALTHY])
    sample = json.loads((releases.source("v2.0.0") / "release.json").read_text())
    degraded = {"models/digits_int8_miscalibrated.onnx": str(DIGITS / "digits_int8_miscalibrated.onnx")}
    releases.publish("v2.0.0", models=[DEGRADED], assets=dict(sample["assets"], **degraded))

    def deploy(tag, playbook="deploy.yml"):
        """A push on the one robot (deploy.yml, or the release role alone: playbooks/release.yml);
        (run, the robot's part of the run report, the run's report folder)."""
        reports = work / ("reports-%s" % tag)
        values = dict(DEPLOY_VARS, release=tag, release_tag=tag, release_repository=str(releases.repo.repo),
                      engine_report_dir=str(reports))  # fmt: skip
        vars_file = work / "deploy-vars.json"
        vars_file.write_text(json.dumps(values))
        saved = os.environ.get("EDGE_ROLLOUT_REPORT_DIR")
        os.environ["EDGE_ROLLOUT_REPORT_DIR"] = str(reports / "rollouts")
        try:
            run = fleet.playbook(playbook, "-l", GATED, "-e", "@%s" % vars_file)
        finally:
            if saved is None:
                os.environ.pop("EDGE_ROLLOUT_REPORT_DIR")
            else:
                os.environ["EDGE_ROLLOUT_REPORT_DIR"] = saved
        found = sorted((reports / "rollouts").glob("*/report.json"))
        assert len(found) == 1, "no run report:\n%s" % run.stdout[-3000:]
        return run, json.loads(found[0].read_text())["robots"][GATED], reports

    deploy.releases = releases
    return deploy


def test_a_degraded_int8_release_is_refused_in_push_with_both_accuracies_in_the_reports(fleet, gated):
    run, robot, _ = gated("v1.0.0", "playbooks/release.yml")
    assert run.rc == 0, run.stdout[-4000:]
    healthy = robot["engine_gates"]["digits"]
    assert healthy["passed"] and healthy["precision"] == "int8", healthy
    assert healthy["accuracy"]["drop_points"] <= 1.0 and healthy["accuracy"]["candidate_accuracy"] > 0.98
    assert status(fleet, GATED)["current"] == "v1.0.0"

    run, robot, reports = gated("v2.0.0")
    assert run.rc != 0
    refused = robot["engine_gates"]["digits"]
    accuracy = refused["accuracy"]
    assert refused["passed"] is False and refused["precision"] == "int8", refused
    assert accuracy["reference_accuracy"] == healthy["accuracy"]["reference_accuracy"] > 0.98, accuracy
    assert accuracy["candidate_accuracy"] < 0.85 and accuracy["drop_points"] > 10, accuracy
    assert accuracy["max_drop_points"] == 1.0 and not accuracy["passed"] and accuracy["samples"] == 450
    assert robot["status"] == "failed" and robot["release_before"] == "v1.0.0", robot
    said = "accuracy %.2f %% vs %.2f %% for FP32, %.2f points lost on 450 labelled samples" % (
        100 * accuracy["candidate_accuracy"],
        100 * accuracy["reference_accuracy"],
        accuracy["drop_points"],
    )
    assert "engine refused by its gate on the robot" in robot["error"], robot["error"]
    assert said in robot["error"], robot["error"]
    # the engine's report on the controller keeps the gate's record
    record = json.loads((reports / GATED / "engines" / "digits.json").read_text())
    assert record["gate"]["accuracy"] == accuracy and record["error"]["gate"]["accuracy"] == accuracy
    now = status(fleet, GATED)
    assert now["current"] == "v1.0.0" and now["service"]["ActiveState"] == "active", now
    assert [entry["tag"] for entry in now["releases"]] == ["v1.0.0"], now


def test_the_agents_pull_refuses_it_too_and_the_robot_keeps_its_gated_release(fleet, gated):
    container = fleet.robots[GATED].container
    sh(fleet, GATED, "rm -rf %s && mkdir -p %s" % (SERVED, SERVED))
    for part in ("metadata", "targets"):
        podman("cp", str(Path(gated.releases.repo.repo) / part), "%s:%s/" % (container, SERVED))
    pulled = agent(fleet, GATED, "pull", "--repo", SERVED)
    reason = pulled["skipped"]["v2.0.0"]
    assert pulled["changed"] is False and pulled["current"] == "v1.0.0", pulled
    assert reason.startswith("release v2.0.0: engine digits: engine digits (INT8, "), reason
    assert "failed its gate: accuracy: output: accuracy " in reason and "for FP32" in reason, reason
    now = status(fleet, GATED)
    assert now["current"] == "v1.0.0" and now["service"]["ActiveState"] == "active", now
    health = json.loads(sh(fleet, GATED, "curl -sf http://127.0.0.1:8080/healthz").stdout)
    assert health["ok"] and health["release"] == "v1.0.0", health
