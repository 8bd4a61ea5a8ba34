"""`engine-builder check` and `inspect`: load, validate and describe an ONNX model (controller side)."""

from __future__ import annotations

import collections
import os
from typing import Any, Dict, List

from edge_common.fsutil import sha256_file
from engine_builder._deps import require
from engine_builder.errors import ModelError

_FIX = "re-export the model, or copy it again and compare its sha256 with the release manifest"


def load(path: str):
    """onnx.ModelProto of `path`, or a ModelError saying what is wrong and how to fix it."""
    onnx = require("onnx", "checking ONNX models")
    if not os.path.exists(path):
        raise ModelError("ONNX file %s does not exist" % path)
    size = os.path.getsize(path)
    if size == 0:
        raise ModelError("ONNX file %s is empty (0 bytes)" % path, hint=_FIX)
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(
            "%s is not a readable ONNX file (%d bytes): %s: %s" % (path, size, type(exc).__name__, exc),
            hint="the file is corrupt or truncated; " + _FIX,
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise ModelError(
            "%s parsed but holds no graph (%d bytes): it is probably truncated or not an ONNX model"
            % (path, size),
            hint=_FIX,
        )
    return model


def check(path: str) -> Dict[str, Any]:
    """onnx.checker (full check, strict shape inference) plus a summary."""
    onnx = require("onnx", "checking ONNX models")
    model = load(path)
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as exc:
        raise ModelError(
            "%s failed the ONNX checker: %s" % (path, str(exc).strip().splitlines()[0] if str(exc) else exc),
            hint="fix the exporter settings (opset, dynamic axes) and export again",
            details={"checker": str(exc)[:2000]},
        ) from exc
    info = describe(model, path)
    info["valid"] = True
    return info


def _dims(value_info) -> List[Any]:
    shape = value_info.type.tensor_type.shape
    dims: List[Any] = []
    for dim in shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or None)
    return dims


def _tensor(onnx, value_info) -> Dict[str, Any]:
    elem = value_info.type.tensor_type.elem_type
    dims = _dims(value_info)
    return {
        "name": value_info.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else None,
        "shape": dims,
        "dynamic_dims": [i for i, d in enumerate(dims) if not isinstance(d, int)],
    }


def describe(model, path: str) -> Dict[str, Any]:
    onnx = require("onnx", "inspecting ONNX models")
    inferred = onnx.shape_inference.infer_shapes(model)
    initializers = {i.name for i in model.graph.initializer}
    ops = collections.Counter(n.op_type for n in model.graph.node)
    return {
        "path": path,
        "sha256": sha256_file(path),
        "size": os.path.getsize(path),
        "ir_version": int(model.ir_version),
        "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import},
        "producer": ("%s %s" % (model.producer_name, model.producer_version)).strip(),
        "inputs": [_tensor(onnx, v) for v in inferred.graph.input if v.name not in initializers],
        "outputs": [_tensor(onnx, v) for v in inferred.graph.output],
        "nodes": len(model.graph.node),
        "op_types": dict(sorted(ops.items())),
        "qdq": bool(ops.get("QuantizeLinear") and ops.get("DequantizeLinear")),
        "parameters": int(sum(_numel(t) for t in model.graph.initializer)),
    }


def _numel(tensor) -> int:
    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n


def inspect(path: str) -> Dict[str, Any]:
    return describe(load(path), path)
