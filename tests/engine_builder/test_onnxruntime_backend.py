"""The onnxruntime backend, for real: build, cache by fingerprint, atomic writes, bench, compare."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from edge_common.fsutil import sha256_file
from engine_builder import manifest
from engine_builder.backends import get_backend
from engine_builder.bench import apply_p99_gate, time_calls
from engine_builder.build import build
from engine_builder.compare import compare
from engine_builder.errors import BuildError, MissingDependency, UsageError
from engine_builder.options import BuildOptions


def test_build_writes_artifact_and_manifest(dynamic_cnn, plain_device, tmp_path):
    out = str(tmp_path / "cnn.ort.onnx")
    result = build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=plain_device)
    assert result["changed"] is True and os.path.getsize(out) > 0
    data = json.loads((tmp_path / "cnn.ort.onnx.manifest.json").read_text())
    assert data["fingerprint"] == result["fingerprint"] and len(data["fingerprint"]) == 64
    assert data["backend"]["name"] == "onnxruntime" and data["backend"]["version"]
    assert data["artifact"]["sha256"] == sha256_file(out)
    assert data["artifact"]["size"] == os.path.getsize(out)
    assert data["onnx"]["sha256"] == sha256_file(dynamic_cnn)
    assert data["device"] == plain_device and data["precision"] == "fp32"
    assert data["build_seconds"] >= 0 and data["built_at"].endswith("Z")
    assert data["backend_facts"]["inputs"][0]["shape"][0] == "N"


def test_same_fingerprint_is_a_cache_hit_and_a_change_rebuilds(
    dynamic_cnn, plain_device, orin_nano, tmp_path
):
    out = str(tmp_path / "a.onnx")
    first = build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=plain_device)
    again = build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=plain_device)
    assert again["changed"] is False and again["cache_hit"] is True
    assert again["fingerprint"] == first["fingerprint"]
    other = build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=orin_nano)
    assert other["changed"] is True and other["fingerprint"] != first["fingerprint"]
    forced = build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=orin_nano, force=True)
    assert forced["changed"] is True


def test_tampered_artifact_is_not_a_cache_hit(dynamic_cnn, plain_device, tmp_path):
    out = str(tmp_path / "a.onnx")
    first = build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=plain_device)
    with open(out, "ab") as fh:
        fh.write(b"x")
    assert manifest.cached(out, first["fingerprint"]) is None
    assert (
        build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=plain_device)["changed"] is True
    )


def test_failed_build_keeps_the_previous_good_artifact(dynamic_cnn, plain_device, tmp_path, monkeypatch):
    out = str(tmp_path / "a.onnx")
    build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=plain_device)
    good_sha = sha256_file(out)
    good_manifest = (tmp_path / "a.onnx.manifest.json").read_text()

    from engine_builder.backends import ort_backend

    def half_written_then_fail(self, onnx_path, artifact_path, options, progress):
        with open(artifact_path, "wb") as fh:
            fh.write(b"half an engine")
        raise BuildError("simulated failure in the middle of a build")

    monkeypatch.setattr(ort_backend.OnnxRuntimeBackend, "build", half_written_then_fail)
    with pytest.raises(BuildError):
        build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=plain_device, force=True)
    assert sha256_file(out) == good_sha
    assert (tmp_path / "a.onnx.manifest.json").read_text() == good_manifest
    assert sorted(os.listdir(tmp_path)) == ["a.onnx", "a.onnx.manifest.json", "cnn.onnx"]


def test_runner_matches_the_original_model(dynamic_cnn, plain_device, tmp_path):
    out = str(tmp_path / "a.onnx")
    build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=plain_device)
    result = compare(dynamic_cnn, out, "onnxruntime", count=32)
    assert result["passed"] and result["reference"] == "onnxruntime fp32" and result["samples"] == 32
    metrics = result["outputs"]["logits"]
    assert metrics["top1_agreement"] == 1.0 and metrics["max_abs_error"] < 1e-5
    assert metrics["cosine_min"] > 0.99999


def test_compare_uses_golden_expected_outputs_and_labels(dynamic_cnn, plain_device, tmp_path):
    out = str(tmp_path / "a.onnx")
    build(dynamic_cnn, "onnxruntime", BuildOptions(), output=out, device=plain_device)
    backend = get_backend("onnxruntime")
    x = np.random.default_rng(3).standard_normal((20, 1, 8, 8)).astype(np.float32)
    with backend.runner(dynamic_cnn) as runner:
        logits = runner.infer({"input": x})["logits"]
    wrong = logits.copy()
    wrong[:5] = -wrong[:5]  # flips the top-1 of 5 samples out of 20
    golden = tmp_path / "golden.npz"
    # labels that the candidate gets right and the reference gets wrong 5 times: no accuracy lost
    np.savez(golden, input=x, labels=logits.argmax(1), **{"expected.logits": wrong})
    result = compare(None, out, "onnxruntime", samples_path=str(golden))
    assert result["reference"] == "golden expected outputs" and result["labelled"]
    m = result["outputs"]["logits"]
    assert m["top1_disagreement"] == pytest.approx(0.25) and m["labelled_samples"] == 20
    assert m["candidate_accuracy"] == 1.0 and m["reference_accuracy"] == pytest.approx(0.75)
    assert m["accuracy_drop_points"] == pytest.approx(-25.0)
    # labelled: accuracy points decide, top-1 disagreement only when asked for
    assert result["passed"] and result["gate"]["max_top1_disagreement"] is None
    strict = compare(None, out, "onnxruntime", samples_path=str(golden), max_top1_disagreement=0.01)
    assert not strict["passed"] and strict["failures"] == ["logits: top-1 disagreement 0.2500 > 0.0100"]
    # labels the reference gets right: the candidate loses 25 points
    np.savez(golden, input=x, labels=wrong.argmax(1), **{"expected.logits": wrong})
    worse = compare(None, out, "onnxruntime", samples_path=str(golden))
    assert worse["failures"] == [
        "logits: accuracy 75.00 % vs 100.00 % for FP32, 25.00 points lost on 20 labelled samples "
        "(at most 1 allowed)"
    ]
    assert worse["accuracy"] == {
        "output": "logits",
        "samples": 20,
        "reference_accuracy": 1.0,
        "candidate_accuracy": 0.75,
        "drop_points": 25.0,
        "max_drop_points": 1.0,
        "passed": False,
    }
    assert compare(None, out, "onnxruntime", samples_path=str(golden), max_accuracy_drop_points=25)["passed"]
    # no labels: top-1 disagreement at 0.01 by default
    np.savez(golden, input=x, **{"expected.logits": wrong})
    unlabelled = compare(None, out, "onnxruntime", samples_path=str(golden))
    assert unlabelled["failures"] == ["logits: top-1 disagreement 0.2500 > 0.0100"]
    assert unlabelled["accuracy"] is None and unlabelled["gate"]["max_accuracy_drop_points"] is None


def test_bench_statistics_and_p99_gate(dynamic_cnn):
    with get_backend("onnxruntime").runner(dynamic_cnn) as runner:
        feed = {"input": np.zeros((2, 1, 8, 8), np.float32)}
        calls = []
        result = time_calls(lambda: calls.append(runner.infer(feed)), warmup=3, iterations=25)
    assert len(calls) == 28 and result["iterations"] == 25 and result["warmup"] == 3
    lat = result["latency_ms"]
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and result["throughput_qps"] > 0
    assert apply_p99_gate(dict(result), lat["p99"] + 1.0)["passed"] is True
    assert apply_p99_gate(dict(result), lat["p99"] / 2)["passed"] is False
    assert apply_p99_gate(dict(result), None)["passed"] is True


def test_int8_needs_a_qdq_model_and_fp16_is_refused(dynamic_cnn, plain_device, tmp_path):
    with pytest.raises(BuildError, match="Q/DQ"):
        build(
            dynamic_cnn,
            "onnxruntime",
            BuildOptions(precision="int8"),
            output=str(tmp_path / "x"),
            device=plain_device,
        )
    assert not (tmp_path / "x").exists()
    with pytest.raises(UsageError, match="fp16"):
        build(dynamic_cnn, "onnxruntime", BuildOptions(precision="fp16"), device=plain_device)
    with pytest.raises(UsageError, match="--dla-core"):
        build(dynamic_cnn, "onnxruntime", BuildOptions(dla_core=0), device=plain_device)


def test_unknown_backend_lists_the_known_ones(dynamic_cnn):
    with pytest.raises(
        UsageError, match="unknown backend 'tensorflow'; choose one of: onnxruntime, tensorrt, trtexec"
    ):
        build(dynamic_cnn, "tensorflow", BuildOptions())


def test_missing_backend_library_names_the_package(dynamic_cnn, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingDependency) as err:
        build(dynamic_cnn, "onnxruntime", BuildOptions())
    assert err.value.package == "onnxruntime" and "pip install" in err.value.hint
    assert "'onnxruntime'" in err.value.message
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependency) as err:
        build(dynamic_cnn, "tensorrt", BuildOptions())
    assert err.value.package == "tensorrt" and "JetPack" in err.value.hint


def test_the_digits_int8_engine_agrees_with_fp32_within_the_sample_apps_gate_on_this_cpu(
    plain_device, tmp_path
):
    """The committed INT8 model, built and run by the backend, against the FP32 model on the golden
    set: within the sample app's own thresholds (max abs error 2, top-1 disagreement 1 %), on a CPU
    whose fused INT8 kernels saturate (x86-64 without VNNI: 13 logits off unfused) as on any other."""
    digits = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "examples", "digits")
    built = build(os.path.join(digits, "digits_int8_qdq.onnx"), "onnxruntime", BuildOptions(precision="int8"),
                  output=str(tmp_path / "digits.onnx"), device=plain_device)  # fmt: skip
    checked = compare(os.path.join(digits, "digits_fp32.onnx"), built["artifact_path"], "onnxruntime",
                      samples_path=os.path.join(digits, "digits_golden.npz"), max_abs_error=2.0,
                      max_top1_disagreement=0.01)  # fmt: skip
    assert checked["passed"], checked["failures"]


def test_a_cpu_without_vnni_is_one_whose_int8_kernels_saturate(tmp_path, monkeypatch):
    from engine_builder.backends import ort_backend

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    epyc = tmp_path / "epyc"
    epyc.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n")
    vnni = tmp_path / "vnni"
    vnni.write_text("model name\t: Intel Xeon\nflags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni\n")
    assert ort_backend.int8_kernels_saturate(str(epyc)) is True
    assert ort_backend.int8_kernels_saturate(str(vnni)) is False
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert ort_backend.int8_kernels_saturate(str(epyc)) is False  # a Jetson's CPU
