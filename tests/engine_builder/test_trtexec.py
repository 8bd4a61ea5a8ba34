"""trtexec: command line per TensorRT version, and parsing of real recorded outputs (data/SOURCES.md)."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest
from conftest import DATA

from edge_common import exitcodes
from engine_builder import tiny_model
from engine_builder.backends import trtexec_output
from engine_builder.backends.trtexec_backend import TrtexecBackend, bench_command, build_command
from engine_builder.build import build
from engine_builder.cli import main
from engine_builder.errors import BuildError, MissingDependency
from engine_builder.options import BuildOptions, ShapeRange


def read(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8") as fh:
        return fh.read()


def test_parse_85_orin_nano_summary():
    out = trtexec_output.parse(read("trtexec_8502_orin_nano_fp16.log"))
    assert out["tensorrt_version"] == "8.5.2" and out["passed"] is True
    assert out["command"] == "trtexec --onnx=./yolox_s_leaky.onnx --saveEngine=./fp16.trt --fp16"
    assert out["throughput_qps"] == 97.8649
    assert out["latency_ms"] == {
        "min": 10.642,
        "max": 10.9861,
        "mean": 10.7971,
        "p50": 10.7972,
        "p90": 10.9329,
        "p95": 10.949,
        "p99": 10.9744,
    }
    assert out["sections_ms"]["gpu_compute_time"]["p99"] == 10.356
    assert out["sections_ms"]["h2d_latency"]["min"] == 0.299072
    assert out["total_host_walltime_s"] == 3.0348
    assert out["total_gpu_compute_time_s"] == 3.02418  # not confused with "GPU Compute Time"
    assert set(out["sections_ms"]) == {
        "latency",
        "enqueue_time",
        "h2d_latency",
        "gpu_compute_time",
        "d2h_latency",
    }


def test_parse_103_summary():
    out = trtexec_output.parse(read("trtexec_100300_resnet50_fp16.log"))
    assert out["tensorrt_version"] == "10.3.0" and out["passed"]
    assert out["throughput_qps"] == 318.007
    assert out["latency_ms"]["p99"] == 3.15039 and out["latency_ms"]["p50"] == 3.14062
    assert out["sections_ms"]["d2h_latency"] == {
        "min": 0.0,
        "max": 0.0,
        "mean": 0.0,
        "p50": 0.0,
        "p90": 0.0,
        "p95": 0.0,
        "p99": 0.0,
    }


def test_parse_facts_lines_without_banner():
    out = trtexec_output.parse(read("trtexec_agx_orin_facts.log"))
    assert out["tensorrt_version"] is None and out["status"] is None
    assert out["throughput_qps"] == 12.9581
    assert out["latency_ms"]["mean"] == 76.3344 and out["latency_ms"]["p95"] == 76.446
    assert out["sections_ms"]["enqueue_time"]["max"] == 76.2788


def test_parse_single_percentile_format_of_older_versions():
    out = trtexec_output.parse(read("trtexec_8400_xavier_single_percentile.log"))
    assert out["tensorrt_version"] == "8.4.0"
    assert out["latency_ms"] == {
        "min": 0.387207,
        "max": 0.447357,
        "mean": 0.402238,
        "p50": 0.401947,
        "p99": 0.420288,
    }


def test_parse_failures_with_node_names():
    out = trtexec_output.parse(read("trtexec_100300_parse_failed.log"))
    assert out["status"] == "FAILED" and out["passed"] is False and out["tensorrt_version"] == "10.3.0"
    assert out["parser_errors"] == [
        {"node_index": 146, "node_operator": "Tile", "output": "/Tile_output_0", "node_name": "/Tile"}
    ]
    assert "Parsing model failed" in out["errors"]
    failed = trtexec_output.parse(read("trtexec_8502_build_failed.log"))
    assert failed["status"] == "FAILED" and failed["tensorrt_version"] == "8.5.2"
    assert failed["errors"] == ["Engine set up failed"]
    assert failed["latency_ms"] is None


OPTS = BuildOptions(
    precision="int8",
    workspace_mib=1024,
    shapes={"input": ShapeRange([1, 3, 8, 8], [4, 3, 8, 8], [8, 3, 8, 8])},
    dla_core=0,
    gpu_fallback=True,
    timing_cache="/var/cache/edge/timing.cache",
)


def test_command_line_per_version():
    t = "/usr/src/tensorrt/bin/trtexec"
    head = [t, "--onnx=m.onnx", "--saveEngine=m.engine"]
    shapes = ["--minShapes=input:1x3x8x8", "--optShapes=input:4x3x8x8", "--maxShapes=input:8x3x8x8"]
    tail = ["--useDLACore=0", "--allowGPUFallback", "--timingCacheFile=/var/cache/edge/timing.cache"]
    assert build_command(t, "8.5.2", "m.onnx", "m.engine", OPTS) == [
        *head, "--buildOnly", "--workspace=1024", "--int8", "--fp16", *shapes, *tail
    ]  # fmt: skip
    assert build_command(t, "8.6.2", "m.onnx", "m.engine", OPTS) == [
        *head, "--skipInference", "--memPoolSize=workspace:1024", "--int8", "--fp16", *shapes, *tail
    ]  # fmt: skip
    assert build_command(t, "10.3.0", "m.onnx", "m.engine", OPTS) == [
        *head, "--skipInference", "--memPoolSize=workspace:1024", "--stronglyTyped", *shapes, *tail
    ]  # fmt: skip
    fp16 = build_command(t, "10.3.0", "m.onnx", "m.engine", BuildOptions(precision="fp16"))
    assert fp16 == [*head, "--skipInference", "--fp16"]
    with pytest.raises(BuildError, match=r"8\.6 or newer"):
        build_command(t, "8.5.2", "m.onnx", "m.engine", BuildOptions(builder_optimization_level=3))
    assert "--builderOptimizationLevel=3" in build_command(
        t, "8.6.2", "m.onnx", "m.engine", BuildOptions(builder_optimization_level=3)
    )
    assert bench_command(t, "m.engine", 200, 50, {"input": [4, 3, 8, 8]}) == [
        t, "--loadEngine=m.engine", "--warmUp=200", "--iterations=50", "--duration=0",
        "--shapes=input:4x3x8x8",
    ]  # fmt: skip


FAKE_TRTEXEC = '''#!{python}
"""Test double of trtexec: prints the banner of TensorRT {code}, writes --saveEngine, and for
--loadEngine prints a recorded performance summary."""
import sys
args = sys.argv[1:]
print("&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec " + " ".join(args))
opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
if "--help" in args:
    sys.exit(0)
if "fail" in opts.get("onnx", ""):
    sys.stdout.write(open({failed!r}).read())
    sys.exit(1)
if "saveEngine" in opts:
    open(opts["saveEngine"], "wb").write(b"ENGINE " + " ".join(args).encode())
if "loadEngine" in opts:
    sys.stdout.write(open({summary!r}).read())
else:
    print("&&&& PASSED TensorRT.trtexec [TensorRT v{code}] # trtexec " + " ".join(args))
'''


def fake_trtexec(tmp_path, code="8502") -> str:
    path = tmp_path / "trtexec"
    path.write_text(
        FAKE_TRTEXEC.format(
            python=sys.executable,
            code=code,
            failed=os.path.join(DATA, "trtexec_100300_parse_failed.log"),
            summary=os.path.join(DATA, "trtexec_8502_orin_nano_fp16.log"),
        )
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_backend_builds_through_the_program(tmp_path, tiny_onnx, orin_nano):
    exe = fake_trtexec(tmp_path, "8502")
    backend_kwargs = {"trtexec": exe}
    result = build(
        tiny_onnx, "trtexec", BuildOptions(precision="fp16", workspace_mib=64), device=orin_nano,
        backend_kwargs=backend_kwargs,
    )  # fmt: skip
    assert result["backend"] == {"name": "trtexec", "version": "8.5.2"}
    with open(result["artifact_path"], "rb") as fh:
        engine = fh.read()
    assert b"--buildOnly" in engine and b"--workspace=64" in engine and b"--fp16" in engine
    assert result["backend_facts"]["trtexec"]["passed"] is True


def test_backend_reports_parser_errors_by_node(tmp_path, orin_nano):
    exe = fake_trtexec(tmp_path, "100300")
    model = tmp_path / "fail.onnx"
    model.write_bytes(tiny_model.model_bytes())  # whole (the wire check passes); the double fails it
    with pytest.raises(BuildError) as err:
        build(str(model), "trtexec", BuildOptions(), device=orin_nano, backend_kwargs={"trtexec": exe})
    assert "failing nodes /Tile" in err.value.message
    assert err.value.details["parser_errors"][0]["node_name"] == "/Tile"
    assert err.value.details["log_tail"][-1].startswith("&&&& FAILED")
    assert not (tmp_path / "fail.fp32.engine").exists()


def test_native_bench_json(tmp_path, capsys):
    exe = fake_trtexec(tmp_path, "8502")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    code = main(
        ["bench", str(engine), "--backend", "trtexec", "--trtexec", exe, "--native", "--json", "--quiet"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["method"] == "trtexec"
    assert out["latency_ms"]["p99"] == 10.9744 and out["throughput_qps"] == 97.8649
    code = main(
        [
            "bench",
            str(engine),
            "--backend",
            "trtexec",
            "--trtexec",
            exe,
            "--native",
            "--p99-ms",
            "10",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == exitcodes.REFUSED and out["error"]["kind"] == "gate"


def test_missing_trtexec_names_the_program(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("engine_builder.device.TRTEXEC_DEFAULT", str(tmp_path / "nowhere/trtexec"))
    with pytest.raises(MissingDependency) as err:
        TrtexecBackend().version()
    assert "the program 'trtexec'" in err.value.message and "/usr/src/tensorrt/bin/trtexec" in err.value.hint
