"""trt_engine and the engine role on simulated robots (onnxruntime backend), over real SSH."""

from __future__ import annotations

import json
import shutil

import pytest

from edge_deploy import paths

DIGITS = paths.REPO / "examples" / "digits"
ROBOTS = ("nano-01", "nx-01", "agx-01")
STORE = "/var/lib/edge-test-engines"


@pytest.fixture(scope="module")
def engines(fleet, tmp_path_factory):
    work = tmp_path_factory.mktemp("engines")
    reports = work / "reports"

    def run(models, *args):
        extra = {
            "engine_models": models,
            "engine_dest": STORE,
            "engine_report_dir": str(reports),
            "engine_benchmark_iterations": 30,
        }
        return fleet.playbook("playbooks/engines.yml", "-l", fleet.supported, "-e", json.dumps(extra), *args)

    run.work = work
    run.reports = reports
    return run


def model(name, src, **extra):
    entry = {
        "name": name,
        "onnx": str(DIGITS / "digits_fp32.onnx"),
        "golden": str(DIGITS / "digits_golden.npz"),
    }
    entry.update(extra)
    if src == "qdq":
        entry["qdq_onnx"] = str(DIGITS / "digits_int8_qdq.onnx")
    else:
        entry["onnx"] = src
    return entry


def current(fleet, robot, name):
    return fleet.exec(robot, "readlink", "%s/%s/current" % (STORE, name)).stdout.strip()


def test_first_run_builds_everywhere_second_run_changes_nothing(fleet, engines):
    models = [
        model("digits", "qdq"),
        model("digits_fp32", str(DIGITS / "digits_fp32.onnx"), precision="fp32"),
    ]
    first = engines(models)
    assert first.rc == 0, first.stdout[-4000:]
    assert all(first.recap[robot]["changed"] >= 2 for robot in ROBOTS), first.recap
    for robot in ROBOTS:
        report = json.loads((engines.reports / robot / "engines" / "digits.json").read_text())
        assert report["built"] and report["onnx_transferred"]
        assert report["precision"] == "int8"
        assert report["compare"]["passed"], report["compare"]
        assert report["bench"]["latency_ms"]["p99"] > 0
        facts = json.loads(fleet.exec(robot, "cat", "/etc/ansible/facts.d/engines.fact").stdout)
        assert facts["digits"]["fingerprint"] == current(fleet, robot, "digits") == report["fingerprint"]

    second = engines(models)
    assert second.rc == 0
    assert second.changed() == {robot: 0 for robot in ROBOTS}, second.stdout[-4000:]
    for robot in ROBOTS:
        report = json.loads((engines.reports / robot / "engines" / "digits.json").read_text())
        assert report["cache_hit"] and not report["built"] and not report["onnx_transferred"]


def test_changing_one_model_rebuilds_only_that_engine(fleet, engines):
    before = {robot: current(fleet, robot, "digits") for robot in ROBOTS}
    # digits_fp32 now builds from the Q/DQ model: a new ONNX and a new precision.
    models = [model("digits", "qdq"), model("digits_fp32", "qdq", precision="int8")]
    run = engines(models)
    assert run.rc == 0, run.stdout[-4000:]
    for robot in ROBOTS:
        digits = json.loads((engines.reports / robot / "engines" / "digits.json").read_text())
        other = json.loads((engines.reports / robot / "engines" / "digits_fp32.json").read_text())
        assert digits["cache_hit"] and current(fleet, robot, "digits") == before[robot]
        assert other["built"] and other["precision"] == "int8"
        # The Q/DQ ONNX is on the robot already (the digits engine was built from it): not sent again.
        assert not other["onnx_transferred"]


def test_check_mode_builds_nothing(fleet, engines):
    before = {robot: fleet.exec(robot, "ls", "%s/digits_fp32" % STORE).stdout for robot in ROBOTS}
    models = [
        model("digits", "qdq"),
        model("digits_fp32", str(DIGITS / "digits_fp32.onnx"), precision="fp32"),
    ]
    run = engines(models, "--check", "--diff")
    assert run.rc == 0, run.stdout[-4000:]
    assert all(run.recap[robot]["changed"] == 1 for robot in ROBOTS), run.recap
    assert "fingerprint:" in run.stdout
    for robot in ROBOTS:
        assert fleet.exec(robot, "ls", "%s/digits_fp32" % STORE).stdout == before[robot]


def test_corrupt_onnx_fails_clearly_and_keeps_the_engine_in_use(fleet, engines):
    corrupt = engines.work / "corrupt.onnx"
    shutil.copy(DIGITS / "digits_fp32.onnx", corrupt)
    data = corrupt.read_bytes()
    corrupt.write_bytes(data[: len(data) // 3])
    before = current(fleet, "nx-01", "digits_fp32")
    engine = fleet.exec("nx-01", "sha256sum", "%s/digits_fp32/current/model.int8.ort.onnx" % STORE).stdout
    run = engines([model("digits_fp32", str(corrupt), precision="fp32")], "-l", "nx-01")
    assert run.rc != 0
    assert "engine build failed on the robot" in run.stdout
    assert (
        "the engine in use is unchanged" in run.stdout
        or "corrupt" in run.stdout.lower()
        or "truncated" in run.stdout.lower()
    )
    assert current(fleet, "nx-01", "digits_fp32") == before
    assert (
        fleet.exec("nx-01", "sha256sum", "%s/digits_fp32/current/model.int8.ort.onnx" % STORE).stdout
        == engine
    )
    staging = fleet.exec("nx-01", "sh", "-c", "ls -a %s/digits_fp32 | grep -c staging || true" % STORE).stdout
    assert staging.strip() == "0"
