"""Shared fixtures: small ONNX models built with onnx.helper (no download, no torch)."""

from __future__ import annotations

import os
import sys

# `tests/` is on sys.path (pytest's rootdir handling of tests/conftest.py), where this folder would
# be found as a namespace package called engine_builder: put the repository first so the real
# package wins, also when the package is not pip-installed.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if sys.path[:1] != [REPO]:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402  after the sys.path fix above
import pytest  # noqa: E402  after the sys.path fix above

from engine_builder import tiny_model  # noqa: E402  after the sys.path fix above

DATA = os.path.join(os.path.dirname(__file__), "data")


def make_dynamic_cnn(path: str, seed: int = 0) -> str:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm with a dynamic batch ('N', 1, 8, 8) -> 10."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((6, 1, 3, 3)).astype(np.float32) * 0.5, "conv_w"),
        numpy_helper.from_array(rng.standard_normal(6).astype(np.float32) * 0.1, "conv_b"),
        numpy_helper.from_array(rng.standard_normal((10, 6)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32) * 0.1, "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def dynamic_cnn(tmp_path) -> str:
    return make_dynamic_cnn(str(tmp_path / "cnn.onnx"))


@pytest.fixture
def tiny_onnx(tmp_path) -> str:
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_model.model_bytes())
    return str(path)


@pytest.fixture
def plain_device() -> dict:
    return {"l4t": None, "module": None, "soc": None, "sm": None, "arch": "x86_64"}


@pytest.fixture
def orin_nano() -> dict:
    return {"l4t": "36.4.3", "module": "p3767-0005", "soc": "tegra234", "sm": "8.7", "arch": "aarch64"}
