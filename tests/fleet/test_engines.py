"""playbooks/engines.yml (the engine role and trt_engine) on simulated robots over real SSH: a signed
release's engines built on each robot by engine_builder's one engine path, into the store the
release agent reads (onnxruntime backend: simulated robots, not Jetson figures)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.repo import REPO

from .test_release_fleet import Releases

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


def test_corrupt_onnx_fails_clearly_and_keeps_the_store(fleet, engines):
    releases = engines.releases
    corrupt = engines.work / "corrupt.onnx"
    shutil.copy(DIGITS / "digits_fp32.onnx", corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 3])
    sample = json.loads((releases.source("v1.2.0") / "release.json").read_text())
    releases.publish(
        "v1.2.0",
        models=[DIGITS_FP32],
        assets=dict(sample["assets"], **{"models/digits_fp32.onnx": str(corrupt)}),
    )
    before = current(fleet, "nx-01", "digits_fp32")
    listing = fleet.exec("nx-01", "ls", "-a", "%s/digits_fp32" % STORE).stdout
    run = engines("v1.2.0", "-l", "nx-01")
    assert run.rc != 0
    assert "engine build and gate failed on the robot" in run.stdout, run.stdout[-3000:]
    assert "corrupt or truncated ONNX file" in run.stdout, run.stdout[-3000:]
    assert current(fleet, "nx-01", "digits_fp32") == before
    assert fleet.exec("nx-01", "ls", "-a", "%s/digits_fp32" % STORE).stdout == listing  # no staging left
