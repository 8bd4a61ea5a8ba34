"""trt_engine's controller side and the engine choices it shares with the agent (the on-robot part
runs in tests/fleet/test_engines.py and, without Ansible, in tests/engine_builder/test_store.py)."""

from __future__ import annotations

import importlib.util
import io
import zipfile

import pytest

from edge_common import pack
from engine_builder.ensure import choose_backend, resolve_precision
from engine_builder.errors import BuildError, UsageError
from tests.repo import REPO

spec = importlib.util.spec_from_file_location(
    "trt_engine_action", REPO / "plugins/action/trt_engine.py"
)
trt_engine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trt_engine)
DIGITS = REPO / "examples" / "digits"

BACKENDS = {
    "tensorrt": {"available": False, "reason": "Python package 'tensorrt' is not installed"},
    "trtexec": {"available": False, "reason": "no trtexec at /usr/src/tensorrt/bin/trtexec or on PATH"},
    "onnxruntime": {"available": True, "version": "1.32.0"},
}


def test_shipped_package_is_deterministic_and_complete():
    first = pack.zip_bytes(trt_engine.PACKAGES)
    assert first == pack.zip_bytes(trt_engine.PACKAGES)
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    for module in ("engine_builder/__main__.py", "engine_builder/ensure.py", "edge_common/fsutil.py"):
        assert module in names
    assert not [name for name in names if name.endswith(".pyc") or "__pycache__" in name]


def test_auto_backend_takes_the_first_of_the_preference_the_robot_has():
    assert choose_backend("auto", None, BACKENDS) == "onnxruntime"
    with_trt = dict(BACKENDS, tensorrt={"available": True, "version": "10.3.0"})
    assert choose_backend("auto", None, with_trt) == "tensorrt"
    assert choose_backend("auto", ["onnxruntime", "tensorrt"], with_trt) == "onnxruntime"


def test_unavailable_backend_says_why():
    with pytest.raises(UsageError, match=r"tensorrt is not available.*not installed"):
        choose_backend("tensorrt", None, BACKENDS)
    with pytest.raises(BuildError, match="no engine backend"):
        choose_backend("auto", ["tensorrt"], BACKENDS)


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
    assert resolve_precision("best", backend, str(DIGITS / model)) == precision
    assert resolve_precision("fp32", backend, str(DIGITS / model)) == "fp32"
    assert resolve_precision("best", backend, None) is None  # a dry run before the model arrived
