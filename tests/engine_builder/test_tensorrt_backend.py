"""The tensorrt backend against a recording TEST DOUBLE of the tensorrt module (fake_tensorrt.py),
for the three API branches in the field: 8.5.2 (JetPack 5.1), 8.6.2 (JetPack 6.0), 10.3.0 (6.1/6.2)."""

from __future__ import annotations

import os

import pytest
from fake_tensorrt import install

from engine_builder.backends.trt_backend import TensorRTBackend, api_branch
from engine_builder.build import build
from engine_builder.errors import BuildError, UsageError
from engine_builder.options import BuildOptions, ShapeRange
from engine_builder.progress import Progress

VERSIONS = ["8.5.2", "8.6.2", "10.3.0"]


class RecordingProgress(Progress):
    def __init__(self):
        self.events = []

    def phase_start(self, name, total=None):
        self.events.append(("start", name, total))

    def step(self, name, completed):
        self.events.append(("step", name, completed))

    def phase_finish(self, name):
        self.events.append(("finish", name))


def run_build(tmp_path, tiny_onnx, options, progress=None):
    artifact = tmp_path / "out.engine"
    extra = TensorRTBackend().build(tiny_onnx, str(artifact), options, progress or Progress())
    return artifact, extra


def flags_set(fake):
    return {c[1] for c in fake.find("config.set_flag")}


@pytest.mark.parametrize("version", VERSIONS)
def test_common_calls_every_version(monkeypatch, tmp_path, tiny_onnx, version):
    fake = install(monkeypatch, version)
    artifact, extra = run_build(tmp_path, tiny_onnx, BuildOptions(workspace_mib=256))
    assert artifact.read_bytes() == b"FAKE-ENGINE-" + version.encode()
    assert fake.find("config.set_memory_pool_limit") == [
        ("config.set_memory_pool_limit", "WORKSPACE", 256 << 20)
    ]
    assert fake.find("builder.build_serialized_network")
    assert "builder.build_engine" not in fake.names()
    assert "config.max_workspace_size" not in fake.names()
    assert fake.find("parser.parse_from_file")[0][1].endswith("tiny.onnx")
    assert flags_set(fake) == set()  # fp32: no precision flags
    assert extra["api_branch"] == api_branch(version)


def test_explicit_batch_on_8x_and_create_network_0_on_10(monkeypatch, tmp_path, tiny_onnx):
    for version, flags in (("8.5.2", 1 << 0), ("8.6.2", 1 << 0), ("10.3.0", 0)):
        fake = install(monkeypatch, version)
        run_build(tmp_path, tiny_onnx, BuildOptions(precision="fp16"))
        assert fake.find("builder.create_network") == [("builder.create_network", flags)], version
        assert flags_set(fake) == {"FP16"}, version


@pytest.mark.parametrize("version", ["8.5.2", "8.6.2"])
def test_qdq_int8_on_8x_sets_int8_and_fp16_flags(monkeypatch, tmp_path, tiny_onnx, version):
    fake = install(monkeypatch, version, qdq=True)
    run_build(tmp_path, tiny_onnx, BuildOptions(precision="int8"))
    assert fake.find("builder.create_network") == [("builder.create_network", 1)]
    assert flags_set(fake) == {"INT8", "FP16"}


def test_qdq_int8_on_10x_is_strongly_typed_without_precision_flags(monkeypatch, tmp_path, tiny_onnx):
    fake = install(monkeypatch, "10.3.0", qdq=True)
    strongly_typed = 1 << int(fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    run_build(tmp_path, tiny_onnx, BuildOptions(precision="int8"))
    assert fake.find("builder.create_network") == [("builder.create_network", strongly_typed)]
    assert flags_set(fake) == set()


@pytest.mark.parametrize("version", VERSIONS)
def test_int8_without_qdq_nodes_is_refused(monkeypatch, tmp_path, tiny_onnx, version):
    fake = install(monkeypatch, version, qdq=False)
    with pytest.raises(BuildError, match="Q/DQ") as err:
        run_build(tmp_path, tiny_onnx, BuildOptions(precision="int8"))
    assert "quantize" in err.value.hint
    assert "builder.build_serialized_network" not in fake.names()


def test_progress_monitor_only_on_10x(monkeypatch, tmp_path, tiny_onnx):
    fake = install(monkeypatch, "10.3.0")
    progress = RecordingProgress()
    run_build(tmp_path, tiny_onnx, BuildOptions(), progress)
    assert fake.find("config.progress_monitor") and fake.find("IProgressMonitor.__init__")
    assert ("start", "Building engine", 2) in progress.events
    assert ("step", "Building engine", 2) in progress.events
    assert ("finish", "Building engine") in progress.events
    for version in ("8.5.2", "8.6.2"):
        fake = install(monkeypatch, version)
        assert not hasattr(fake, "IProgressMonitor")
        progress = RecordingProgress()
        run_build(tmp_path, tiny_onnx, BuildOptions(), progress)
        assert "config.progress_monitor" not in fake.names()
        assert ("start", "build engine", None) in progress.events  # coarse phases instead


def test_timing_cache_per_device_with_ignore_mismatch_false(monkeypatch, tmp_path, tiny_onnx):
    cache = tmp_path / "timing-orin.cache"
    cache.write_bytes(b"previous-cache")
    fake = install(monkeypatch, "10.3.0")
    run_build(tmp_path, tiny_onnx, BuildOptions(timing_cache=str(cache)))
    assert fake.find("config.create_timing_cache") == [("config.create_timing_cache", b"previous-cache")]
    assert fake.find("config.set_timing_cache") == [("config.set_timing_cache", False)]
    assert cache.read_bytes() == b"timing-cache:previous-cache"  # updated after the build
    fresh = tmp_path / "new.cache"
    fake = install(monkeypatch, "8.5.2")
    run_build(tmp_path, tiny_onnx, BuildOptions(timing_cache=str(fresh)))
    assert fake.find("config.create_timing_cache") == [("config.create_timing_cache", b"")]
    assert fresh.exists()


@pytest.mark.parametrize("version", VERSIONS)
def test_dynamic_inputs_get_an_optimization_profile(monkeypatch, tmp_path, tiny_onnx, version):
    install(monkeypatch, version, inputs=[("input", (-1, 3, 8, 8))])
    with pytest.raises(UsageError, match="dynamic dimensions"):
        run_build(tmp_path, tiny_onnx, BuildOptions())
    fake = install(monkeypatch, version, inputs=[("input", (-1, 3, 8, 8))])
    shapes = {"input": ShapeRange([1, 3, 8, 8], [4, 3, 8, 8], [16, 3, 8, 8])}
    _, extra = run_build(tmp_path, tiny_onnx, BuildOptions(shapes=shapes))
    assert fake.find("profile.set_shape") == [
        ("profile.set_shape", "input", (1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    ]
    assert fake.find("config.add_optimization_profile")
    assert extra["profile"]["input"]["max"] == [16, 3, 8, 8]
    with pytest.raises(UsageError, match="network inputs are: input"):
        run_build(tmp_path, tiny_onnx, BuildOptions(shapes={"images": shapes["input"]}))


def test_dla_core_with_gpu_fallback_checked_against_the_device(monkeypatch, tmp_path, tiny_onnx):
    fake = install(monkeypatch, "10.3.0", num_dla_cores=2)
    _, extra = run_build(tmp_path, tiny_onnx, BuildOptions(precision="fp16", dla_core=1, gpu_fallback=True))
    assert ("config.default_device_type", fake.DeviceType.DLA) in fake.calls
    assert ("config.DLA_core", 1) in fake.calls
    assert flags_set(fake) == {"FP16", "GPU_FALLBACK"} and extra["dla_core"] == 1
    fake = install(monkeypatch, "8.5.2", num_dla_cores=0)  # an Orin Nano has no DLA
    with pytest.raises(BuildError, match="has 0 DLA core") as err:
        run_build(tmp_path, tiny_onnx, BuildOptions(precision="fp16", dla_core=0))
    assert "Orin Nano" in err.value.hint
    assert "config.DLA_core" not in fake.names()


def test_builder_optimization_level_from_86(monkeypatch, tmp_path, tiny_onnx):
    install(monkeypatch, "8.5.2")
    with pytest.raises(UsageError, match=r"8\.6 or newer"):
        run_build(tmp_path, tiny_onnx, BuildOptions(builder_optimization_level=5))
    for version in ("8.6.2", "10.3.0"):
        fake = install(monkeypatch, version)
        run_build(tmp_path, tiny_onnx, BuildOptions(builder_optimization_level=5))
        assert ("config.builder_optimization_level", 5) in fake.calls


def test_parser_errors_are_reported_by_node_name(monkeypatch, tmp_path, tiny_onnx):
    errors = [("Invalid Node - /Tile", 146, "/Tile"), ("Unsupported op", 150, "/OneHot")]
    install(monkeypatch, "10.3.0", parse_ok=False, parse_errors=errors)
    with pytest.raises(BuildError) as err:
        run_build(tmp_path, tiny_onnx, BuildOptions())
    assert "failing nodes: /Tile, /OneHot" in err.value.message
    assert err.value.details["parser_errors"][0] == {
        "desc": "Invalid Node - /Tile",
        "node_index": 146,
        "node_name": "/Tile",
    }
    install(monkeypatch, "8.5.2", parse_ok=False, parse_errors=errors)  # no node_name() in this double
    with pytest.raises(BuildError) as err:
        run_build(tmp_path, tiny_onnx, BuildOptions())
    assert "failing nodes: #146, #150" in err.value.message


def test_failed_build_reports_the_log_tail_and_writes_nothing(monkeypatch, tmp_path, tiny_onnx, orin_nano):
    install(monkeypatch, "10.3.0", build_ok=False)
    artifact = tmp_path / "model.engine"
    with pytest.raises(BuildError) as err:
        build(tiny_onnx, "tensorrt", BuildOptions(), output=str(artifact), device=orin_nano)
    assert any("out of memory" in line for line in err.value.details["log_tail"])
    assert not artifact.exists() and not (tmp_path / "model.engine.manifest.json").exists()


def test_full_build_writes_manifest_with_tensorrt_version(monkeypatch, tmp_path, tiny_onnx, orin_nano):
    install(monkeypatch, "10.3.0")
    result = build(tiny_onnx, "tensorrt", BuildOptions(precision="fp16"), device=orin_nano)
    assert result["backend"] == {"name": "tensorrt", "version": "10.3.0"}
    assert result["artifact_path"].endswith("tiny.fp16.engine")
    install(monkeypatch, "8.6.2")
    other = build(tiny_onnx, "tensorrt", BuildOptions(precision="fp16"), device=orin_nano)
    assert other["changed"] and other["fingerprint"] != result["fingerprint"]


@pytest.mark.parametrize("version", ["7.1.3", "8.4.1", "9.1.0"])
def test_other_versions_are_refused_not_guessed(monkeypatch, tmp_path, tiny_onnx, version):
    install(monkeypatch, version)
    with pytest.raises(BuildError, match="not supported"):
        run_build(tmp_path, tiny_onnx, BuildOptions())


def test_runner_runs_an_engine_through_the_name_based_tensor_api(monkeypatch, tmp_path, tiny_onnx):
    import numpy as np
    from fake_tensorrt import FakeCuda, add_runtime

    from engine_builder.backends.trt_runtime import TensorRTRunner

    fake = install(monkeypatch, "10.3.0")
    artifact, _ = run_build(tmp_path, tiny_onnx, BuildOptions())
    cuda = FakeCuda()
    add_runtime(fake, cuda)
    x = np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8) / 100
    with TensorRTRunner(str(artifact), cuda=cuda) as runner:
        assert [s.as_dict() for s in runner.input_specs()] == [
            {"name": "input", "shape": [-1, 3, 8, 8], "dtype": "float32"}
        ]
        out = runner.infer({"input": x})["logits"]
        out_again = runner.infer({"input": x[:1]})["logits"]  # smaller batch reuses the buffers
    expected = x.reshape(2, -1).sum(axis=1)[:, None] * np.arange(1, 11)
    assert out.shape == (2, 10) and np.allclose(out, expected, rtol=1e-5)
    assert np.allclose(out_again, expected[:1], rtol=1e-5)
    assert ("context.set_input_shape", "input", (2, 3, 8, 8)) in fake.calls
    assert len(fake.find("context.execute_async_v3")) == 2
    assert not cuda.memory and len(cuda.freed) == 2 and not cuda.streams  # everything released


def test_runner_refuses_an_engine_from_elsewhere(monkeypatch, tmp_path):
    from fake_tensorrt import FakeCuda, add_runtime

    from engine_builder.backends.trt_runtime import TensorRTRunner

    fake = install(monkeypatch, "8.5.2")
    add_runtime(fake, FakeCuda())
    engine = tmp_path / "other.engine"
    engine.write_bytes(b"built by another TensorRT")
    with pytest.raises(BuildError) as err:
        TensorRTRunner(str(engine), cuda=FakeCuda()).__enter__()
    assert "rebuild on this device" in err.value.hint


def test_cache_dir_keeps_one_timing_cache_per_device_and_version(
    monkeypatch, tmp_path, tiny_onnx, orin_nano, capsys
):
    import json

    from engine_builder.cli import main

    cache_dir = tmp_path / "cache"
    device = json.dumps(orin_nano)
    for version in ("8.6.2", "10.3.0"):
        install(monkeypatch, version)
        args = [
            "build",
            tiny_onnx,
            "--backend",
            "tensorrt",
            "--cache-dir",
            str(cache_dir),
            "--device-json",
            device,
        ]
        assert main([*args, "--output", str(tmp_path / ("m%s.engine" % version)), "--json", "--quiet"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["manifest_path"].endswith(".engine.manifest.json")
    names = sorted(os.listdir(cache_dir))
    assert (
        len(names) == 2
        and names[0].startswith("timing-trt10.3.0-")
        and names[1].startswith("timing-trt8.6.2-")
    )
