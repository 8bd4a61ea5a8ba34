"""The agent's side of the one engine path: staging a release ensures its models' engines in the
robot's engine store through engine_builder (a real onnxruntime build of the digits example), the
release records exactly the artifact the gate passed, and the store keeps what kept releases use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_agent import engines
from edge_agent.errors import Refused
from edge_common.fsutil import read_json
from engine_builder import store

DIGITS = str(Path(__file__).resolve().parents[2] / "examples" / "digits")
GOLDEN = {"samples": "models/digits_golden.npz", "max_abs_error": 2.0, "p99_ms": 5000}


def model(onnx="models/digits_int8_qdq.onnx", **golden):
    return {
        "name": "digits",
        "onnx": onnx,
        "precision": "int8",
        "backends": ["tensorrt", "onnxruntime"],
        "golden": dict(GOLDEN, **golden),
    }


def files(tag, *names):
    found = {"app.py": "print('%s')\n" % tag}
    for name in names or ("digits_int8_qdq.onnx", "digits_golden.npz"):
        with open(os.path.join(DIGITS, name), "rb") as fh:
            found["models/" + name] = fh.read()
    return found


def test_staging_builds_once_then_reuses_the_gated_engine(releases, make_agent, tmp_path):
    agent = make_agent()
    releases.publish("v1.0.0", files=files("v1.0.0"), models=[model()])
    releases.publish("v1.1.0", files=files("v1.1.0"), models=[model()])
    first = agent.stage(str(releases.repo_dir), "v1.0.0")["engines"]["digits"]
    assert first["built"] and first["gate"]["passed"] and first["gate"]["accuracy"] > 0.9
    root = str(tmp_path / "engines")
    assert first["artifact"] == os.path.join(
        store.engine_dir(root, "digits", first["fingerprint"]), os.path.basename(first["artifact"])
    )
    second = agent.stage(str(releases.repo_dir), "v1.1.0")["engines"]["digits"]
    assert not second["built"], "same model, same robot: a cache hit, no second build"
    assert (second["fingerprint"], second["artifact"], second["sha256"]) == (
        first["fingerprint"],
        first["artifact"],
        first["sha256"],
    )
    assert read_json(os.path.join(root, ".pins", "edge-app.json")) == [first["fingerprint"]]
    agent.activate("v1.1.0")
    active = read_json(agent.cfg.active_engines)
    assert active["release"] == "v1.1.0" and active["engines"]["digits"]["artifact"] == first["artifact"]
    assert engines.verify(active["engines"]) is None


def test_an_engine_changed_after_its_gate_fails_verification(releases, make_agent):
    agent = make_agent()
    releases.publish("v1.0.0", files=files("v1.0.0"), models=[model()])
    refs = agent.stage(str(releases.repo_dir), "v1.0.0")["engines"]
    with open(refs["digits"]["artifact"], "ab") as fh:
        fh.write(b"\0")
    assert "changed since its gate passed" in engines.verify(refs)
    os.unlink(refs["digits"]["artifact"])
    assert "is missing" in engines.verify(refs)


def test_a_release_whose_engine_fails_its_gate_is_refused_and_not_staged(releases, make_agent):
    agent = make_agent()
    releases.publish("v1.0.0", files=files("v1.0.0"), models=[model(max_abs_error=1e-9)])
    with pytest.raises(Refused, match=r"release v1.0.0: engine digits: .*failed its gate: accuracy"):
        agent.stage(str(releases.repo_dir), "v1.0.0")
    assert agent.kept() == []
    assert not os.listdir(agent.cfg.releases_dir)


def test_a_pull_skips_a_release_whose_int8_model_lost_accuracy_and_keeps_the_current_one(
    releases, make_agent
):
    """Pull mode: the agent's staging runs the same gate as push. An INT8 model calibrated on a
    blank frame (examples/digits, a real 18.9-point drop on the labelled golden set) is refused
    with both accuracies in the reason, nothing of it is staged, the robot stays where it was."""
    agent = make_agent()
    releases.publish("v1.0.0", files=files("v1.0.0"), models=[model()])
    agent.stage(str(releases.repo_dir), "v1.0.0")
    agent.activate("v1.0.0")
    degraded = files("v1.1.0", "digits_int8_miscalibrated.onnx", "digits_golden.npz")
    only_accuracy = {"max_abs_error": None}  # the accuracy points alone decide
    releases.publish(
        "v1.1.0", files=degraded, models=[model("models/digits_int8_miscalibrated.onnx", **only_accuracy)]
    )
    result = agent.pull(str(releases.repo_dir))
    reason = result["skipped"]["v1.1.0"]
    assert not result["changed"] and agent.current_tag() == "v1.0.0"
    assert agent.kept() == ["v1.0.0"]
    with pytest.raises(Refused) as err:
        agent.stage(str(releases.repo_dir), "v1.1.0")
    accuracy = err.value.details["engine_builder"]["error"]["gate"]["accuracy"]
    assert accuracy["reference_accuracy"] > 0.98 and accuracy["candidate_accuracy"] < 0.85
    assert not accuracy["passed"] and accuracy["drop_points"] > 15
    assert reason.startswith("release v1.1.0: engine digits: engine digits (INT8, "), reason
    said = "accuracy %.2f %% vs %.2f %% for FP32, %.2f points lost on 450 labelled samples" % (
        100 * accuracy["candidate_accuracy"],
        100 * accuracy["reference_accuracy"],
        accuracy["drop_points"],
    )
    assert said in reason, reason


def test_reference_keeps_what_the_report_needs():
    envelope = json.loads(
        json.dumps(
            {
                "artifact": "/s/digits/f/digits.int8.ort.onnx",
                "sha256": "a" * 64,
                "fingerprint": "f" * 64,
                "backend": "onnxruntime",
                "precision": "int8",
                "built": True,
                "gate": {
                    "passed": True,
                    "bench": {"latency_ms": {"p50": 0.05, "p99": 0.1}, "p99_target_ms": 50.0},
                    "compare": {"outputs": {"out": {"candidate_accuracy": 0.98}}},
                    "resources": {"passed": True, "power_peak_w": 12.5, "breaches": []},
                },
                "device": {"module_class": "orin_nx"},
            }
        )
    )
    ref = engines.reference(envelope, model())
    assert ref["gate"] == {
        "passed": True,
        "p99_ms": 0.1,
        "p99_target_ms": 50.0,
        "latency_ms": {"p50": 0.05, "p99": 0.1},  # the report's latency per module class
        "accuracy": 0.98,
        "resources": {"passed": True, "power_peak_w": 12.5, "breaches": []},  # and its resource table
    }
    assert ref["module_class"] == "orin_nx"
    assert ref["onnx"] == "models/digits_int8_qdq.onnx" and ref["built"] is True
