"""trt_engine's controller-side logic (the on-robot part is covered by tests/fleet/test_engines.py)."""

from __future__ import annotations

import importlib.util
import io
import zipfile

import pytest

from edge_deploy import paths

spec = importlib.util.spec_from_file_location(
    "trt_engine_action", paths.REPO / "plugins/action/trt_engine.py"
)
trt_engine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trt_engine)
DIGITS = paths.REPO / "examples" / "digits"

PROBE = {
    "backends": {
        "tensorrt": {"available": False, "reason": "Python package 'tensorrt' is not installed"},
        "trtexec": {"available": False, "reason": "no trtexec at /usr/src/tensorrt/bin/trtexec or on PATH"},
        "onnxruntime": {"available": True, "version": "1.32.0"},
    }
}


def test_last_json_line_wins_over_log_lines():
    text = 'progress 10%\n{"a": 1}\nnoise\n{"ok": true, "b": 2}\n'
    assert trt_engine._last_json(text) == {"ok": True, "b": 2}
    assert trt_engine._last_json("no json here") is None


def test_shipped_package_is_deterministic_and_complete():
    first, digest = trt_engine._package_zip()
    again, digest_again = trt_engine._package_zip()
    assert first == again and digest == digest_again
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert "engine_builder/__main__.py" in names and "engine_builder/store.py" in names
    assert not [name for name in names if name.endswith(".pyc") or "__pycache__" in name]


def test_auto_backend_takes_what_the_robot_has():
    assert trt_engine.ActionModule._choose_backend(None, "auto", PROBE) == "onnxruntime"
    with_trt = {"backends": dict(PROBE["backends"], tensorrt={"available": True, "version": "10.3.0"})}
    assert trt_engine.ActionModule._choose_backend(None, "auto", with_trt) == "tensorrt"


def test_unavailable_backend_says_why():
    with pytest.raises(trt_engine.AnsibleActionFail, match=r"tensorrt is not available.*not installed"):
        trt_engine.ActionModule._choose_backend(None, "tensorrt", PROBE)
    with pytest.raises(trt_engine.AnsibleActionFail, match="no engine backend"):
        trt_engine.ActionModule._choose_backend(None, "auto", {"backends": {}})


@pytest.mark.parametrize(
    "model,backend,precision",
    [
        ("digits_int8_qdq.onnx", "onnxruntime", "int8"),
        ("digits_int8_qdq.onnx", "tensorrt", "int8"),
        ("digits_fp32.onnx", "onnxruntime", "fp32"),
        ("digits_fp32.onnx", "tensorrt", "fp16"),
    ],
)
def test_best_precision(model, backend, precision):
    assert trt_engine.ActionModule._resolve_precision(None, "best", backend, str(DIGITS / model)) == precision
    assert trt_engine.ActionModule._resolve_precision(None, "fp32", backend, str(DIGITS / model)) == "fp32"
