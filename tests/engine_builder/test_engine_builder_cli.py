"""The CLI contract the Ansible action plugin relies on: JSON on stdout, exit codes, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edge_common import exitcodes
from engine_builder.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ["numpy", "onnx", "onnxruntime", "tensorrt", "torch", "rich", "matplotlib"]
# Runs the CLI with the heavy libraries made unimportable, as on a bare robot.
BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in %r:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from engine_builder.cli import main
sys.exit(main(sys.argv[1:]))
""" % (HEAVY,)


def run_bare(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )


def run_json(capsys, *args: str):
    code = main([*args, "--json", "--quiet"])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # exactly one JSON object on stdout
    return code, json.loads(lines[0])


def test_help_and_probe_need_only_the_standard_library():
    helped = run_bare("--help")
    assert helped.returncode == 0 and "selftest" in helped.stdout
    for command in ("build", "bench", "compare", "probe", "selftest", "fingerprint"):
        assert run_bare(command, "--help").returncode == 0
    probed = run_bare("probe", "--json")
    assert probed.returncode == 0, probed.stderr
    report = json.loads(probed.stdout)
    assert report["ok"] is True and report["command"] == "probe"
    assert report["backends"]["onnxruntime"]["available"] is False
    assert "device" in report and "l4t" in report["device"]


def test_missing_backend_library_gives_its_own_exit_code_and_names_the_package(tiny_onnx):
    proc = run_bare("build", tiny_onnx, "--backend", "onnxruntime", "--json")
    assert proc.returncode == exitcodes.MISSING_DEPENDENCY == 6
    error = json.loads(proc.stdout)["error"]
    assert error["kind"] == "missing_dependency" and error["package"] == "onnxruntime"
    assert "onnxruntime" in proc.stderr


def test_unknown_backend_is_a_usage_error(capsys, tiny_onnx):
    code, out = run_json(capsys, "build", tiny_onnx, "--backend", "caffe")
    assert code == 2 and out["ok"] is False and out["error"]["kind"] == "usage"
    assert "onnxruntime, tensorrt, trtexec" in out["error"]["message"]


def test_build_bench_compare_fingerprint_round_trip(capsys, tiny_onnx, tmp_path, orin_nano):
    device = json.dumps(orin_nano)
    artifact = str(tmp_path / "tiny.engine")
    code, built = run_json(
        capsys, "build", tiny_onnx, "--backend", "onnxruntime", "--output", artifact, "--device-json", device
    )
    assert code == 0 and built["ok"] and built["changed"] is True
    assert built["artifact_path"] == artifact and built["device"] == orin_nano

    code, fp = run_json(capsys, "fingerprint", tiny_onnx, "--backend", "onnxruntime", "--device-json", device)
    assert code == 0 and fp["fingerprint"] == built["fingerprint"]

    code, again = run_json(
        capsys, "build", tiny_onnx, "--backend", "onnxruntime", "--output", artifact, "--device-json", device
    )
    assert again["changed"] is False

    code, bench = run_json(
        capsys, "bench", artifact, "--backend", "onnxruntime", "--iterations", "20", "--warmup", "2"
    )
    assert code == 0 and set(bench["latency_ms"]) >= {"min", "mean", "p50", "p90", "p95", "p99", "max"}
    assert bench["passed"] is True and bench["throughput_qps"] > 0

    code, slow = run_json(
        capsys, "bench", artifact, "--backend", "onnxruntime", "--iterations", "5", "--p99-ms", "1e-9"
    )
    assert code == exitcodes.REFUSED and slow["ok"] is False and slow["error"]["kind"] == "gate"
    assert slow["error"]["result"]["passed"] is False and "exceeds the target" in slow["error"]["message"]

    code, cmp_ = run_json(
        capsys, "compare", artifact, "--backend", "onnxruntime", "--onnx", tiny_onnx, "--count", "8"
    )
    assert code == 0 and cmp_["passed"] and cmp_["outputs"]["logits"]["top1_agreement"] == 1.0


def test_fingerprint_for_a_robot_computed_on_the_controller(capsys, orin_nano):
    args = ["fingerprint", "--onnx-sha256", "ab" * 32, "--backend", "trtexec", "--backend-version", "10.3.0"]
    code, out = run_json(
        capsys, *args, "--precision", "int8", "--device-json", json.dumps({"device": orin_nano})
    )
    assert code == 0 and out["inputs"]["device"]["module"] == "p3767-0005"
    assert out["inputs"]["backend"] == {"name": "trtexec", "version": "10.3.0"}


def test_selftest_runs_the_present_backends(capsys):
    code, out = run_json(capsys, "selftest", "--backends", "onnxruntime,tensorrt")
    assert code == 0 and out["verdict"] == "PASS"
    rows = {(r["backend"], r.get("precision")): r for r in out["rows"]}
    assert rows[("onnxruntime", "fp32")]["verdict"] == "PASS"
    assert rows[("onnxruntime", "fp32")]["max_abs_error"] < 1e-3
    assert rows[("tensorrt", None)]["verdict"] == "SKIP"


def test_bad_shape_string_is_a_usage_error(capsys, tiny_onnx):
    code, out = run_json(capsys, "build", tiny_onnx, "--backend", "tensorrt", "--min-shapes", "input:1xAx8")
    assert code == 2 and "1x3x224x224" in out["error"]["message"]


def test_robot_side_modules_parse_as_python_38():
    import ast

    robot = [
        "__init__.py", "__main__.py", "_deps.py", "bench.py", "build.py", "cli.py", "compare.py", "device.py",
        "contract.py", "ensure.py", "errors.py", "fingerprint.py", "gate.py", "manifest.py", "options.py",
        "progress.py", "selftest.py",
        "stats.py", "tensors.py", "tiny_model.py", "backends/__init__.py", "backends/base.py",
        "backends/cudart.py", "backends/ort_backend.py", "backends/trt_backend.py", "backends/trt_runtime.py",
        "backends/trtexec_backend.py", "backends/trtexec_output.py", "backends/trt_util.py",
        "store.py",
    ]  # fmt: skip
    robot = [os.path.join("engine_builder", rel) for rel in robot] + [
        os.path.join("edge_common", rel) for rel in sorted(os.listdir(os.path.join(REPO, "edge_common")))
        if rel.endswith(".py")
    ]
    for rel in robot:
        with open(os.path.join(REPO, rel), encoding="utf-8") as fh:
            source = fh.read()
        ast.parse(source, filename=rel, feature_version=(3, 8))  # rejects match statements and newer syntax
        assert "from __future__ import annotations" in source, rel
        for newer in (
            ".removeprefix(",
            ".removesuffix(",
            "zoneinfo",
            "functools.cache(",
            "BooleanOptionalAction",
        ):
            assert newer not in source, (rel, newer)


@pytest.mark.parametrize("command", ["check", "inspect"])
def test_check_reports_a_truncated_file_clearly(capsys, tiny_onnx, tmp_path, command):
    broken = tmp_path / "broken.onnx"
    with open(tiny_onnx, "rb") as fh:
        broken.write_bytes(fh.read()[:200])
    code, out = run_json(capsys, command, str(broken))
    assert code == 1 and out["error"]["kind"] == "model"
    assert out["error"]["message"].startswith("corrupt or truncated ONNX file %s (200 bytes): " % broken)
    assert "re-export it or re-copy it" in out["error"]["hint"]


def test_selftest_fails_loudly_when_a_backend_disagrees(capsys, monkeypatch):
    from engine_builder import selftest

    monkeypatch.setitem(selftest.PLANS, "onnxruntime", [("fp32", {"max_abs_error": -1.0})])
    code = main(["selftest", "--backends", "onnxruntime", "--json", "--quiet"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == exitcodes.REFUSED and out["ok"] is False and out["error"]["kind"] == "gate"
    row = out["error"]["result"]["rows"][0]
    assert row["verdict"] == "FAIL" and "max abs error" in row["failures"][0]
    assert "verdict: FAIL" in captured.err  # the verdict table goes to stderr too


def test_plain_progress_lines_for_the_robot():
    import io

    from engine_builder.progress import PlainProgress, make_progress

    stream = io.StringIO()
    progress = PlainProgress(stream, interval=0.0)
    progress.phase_start("Building engine", 3)
    progress.step("Building engine", 2)
    progress.phase_finish("Building engine")
    assert stream.getvalue().splitlines() == [
        "engine-builder: Building engine ...",
        "engine-builder: Building engine 2/3",
        "engine-builder: Building engine done",
    ]
    assert isinstance(make_progress(stream=io.StringIO()), PlainProgress)  # not a TTY: no rich
