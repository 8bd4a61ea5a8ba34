"""ONNX files: whether one is readable at all (every backend, robot side, standard library only),
and `engine-builder check` / `inspect` (load, validate and describe; controller side, needs onnx)."""

from __future__ import annotations

import collections
import os
from typing import Any, Dict, List, Optional

from edge_common.fsutil import sha256_file
from engine_builder._deps import require
from engine_builder.errors import ModelError

FIX = "re-export it or re-copy it; its sha256 must match the one in the release manifest"
# ModelProto's field 7: the graph, the bulk of a model (weights included unless stored outside)
_FIELDS = {1: "ir_version", 2: "producer name", 7: "graph", 8: "opset imports"}


def corrupt(
    path: str, why: str, details: Optional[Dict[str, Any]] = None, shown: Optional[str] = None
) -> ModelError:
    """The one error for an ONNX file that does not parse, whoever tried to read it (onnx,
    onnxruntime, TensorRT's parser): what a person can act on; a parser's own words go in details.
    `shown` names the file as the person knows it when `path` is a copy (the engine store's)."""
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    extra = dict(details or {}, path=shown or path)
    if shown and shown != path:
        extra["stored_as"] = path
    return ModelError(
        "corrupt or truncated ONNX file %s (%d bytes): %s" % (shown or path, size, why),
        hint=FIX,
        details=extra,
    )


class _Short(Exception):
    """The file ends inside a field's tag or number."""


def _varint(fh) -> int:
    value = shift = 0
    for _ in range(10):
        byte = fh.read(1)
        if not byte:
            raise _Short()
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
    raise ValueError("a number longer than protobuf allows")


def wire_problem(path: str) -> Optional[str]:
    """Why the file at `path` is not an ONNX model's protobuf from first byte to last, in words,
    or None.

    Walks ModelProto's top-level fields (a tag, then a number, or a length and that many bytes,
    skipped with a seek) without decoding them: a truncated file ends inside one (usually the
    graph), a file of something else has a byte that starts no field. Standard library only and a
    few reads whatever the model's size, so every backend on a robot (TensorRT's parser, trtexec,
    onnxruntime) gets the same answer before it parses anything."""
    size = os.path.getsize(path)
    if not size:
        return "it is empty"
    fields = set()
    with open(path, "rb") as fh:
        while fh.tell() < size:
            start, what = fh.tell(), "its data"
            try:
                tag = _varint(fh)
                field, wire = tag >> 3, tag & 7
                what = "its %s" % _FIELDS.get(field, "field %d" % field)
                if field == 0 or wire not in (0, 1, 2, 5) or (field in (7, 8) and wire != 2):
                    return "byte %d starts no ONNX field: it is not an ONNX model, or it was damaged" % start
                if wire == 0:
                    _varint(fh)
                    continue
                length = _varint(fh) if wire == 2 else (8 if wire == 1 else 4)
            except _Short:
                return "it ends inside %s (a partial copy or download)" % what
            except ValueError as exc:
                return "byte %d is not ONNX data (%s)" % (start, exc)
            if fh.tell() + length > size:
                return "it ends %d bytes before %s does (a partial copy or download)" % (
                    fh.tell() + length - size,
                    what,
                )
            fh.seek(length, os.SEEK_CUR)
            fields.add(field)
    if 7 not in fields:
        return "it holds no graph: it is not an ONNX model, or it was cut short"
    return None


def readable(path: str, shown: Optional[str] = None) -> None:
    """Raise a ModelError unless `path` holds an ONNX model's protobuf from first byte to last
    (`corrupt`, naming `shown` when given); the check every build runs before its backend parses."""
    if not os.path.isfile(path):
        raise ModelError("ONNX file %s does not exist" % (shown or path))
    problem = wire_problem(path)
    if problem:
        raise corrupt(path, problem, shown=shown)


def load(path: str):
    """onnx.ModelProto of `path`, or a ModelError saying what is wrong and how to fix it."""
    onnx = require("onnx", "checking ONNX models")
    readable(path)
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError and friends: their words go in details
        raise corrupt(
            path,
            "it does not parse as an ONNX model",
            {"parser": "%s: %s" % (type(exc).__name__, str(exc)[:500])},
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise corrupt(path, "it parses but holds an empty graph (it is probably cut short or not a model)")
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
