"""The self-test model: a tiny CNN whose bytes are embedded here, so `selftest` needs no download,
no onnx package and no onnxruntime on the robot; its reference outputs come from plain numpy.

Weights and inputs are closed-form (sin/cos of indices), not random, so every numpy version gives
the same numbers. `build_model()` (controller, needs onnx) regenerates MODEL_B64:
    python -m engine_builder.tiny_model > new.b64
"""

from __future__ import annotations

import base64
from typing import Any, Dict

from engine_builder._deps import require

INPUT, OUTPUT = "input", "logits"
SHAPE = (1, 3, 8, 8)
CHANNELS, CLASSES = 4, 10
OPSET = 13  # parsed by TensorRT 8.5 and newer


def _weights() -> Dict[str, Any]:
    np = require("numpy", "the self-test model")

    def wave(shape, phase, scale):
        n = int(np.prod(shape))
        return (
            (np.sin(np.arange(n, dtype=np.float64) * 1.37 + phase) * scale).reshape(shape).astype(np.float32)
        )

    return {
        "conv_w": wave((CHANNELS, SHAPE[1], 3, 3), 0.1, 0.5),
        "conv_b": wave((CHANNELS,), 0.7, 0.1),
        "fc_w": wave((CLASSES, CHANNELS), 1.3, 2.0),
        "fc_b": wave((CLASSES,), 2.1, 0.05),
    }


def sample_inputs(count: int = 8) -> Any:
    np = require("numpy", "the self-test model")
    per_sample = int(np.prod(SHAPE[1:]))
    index = np.arange(per_sample, dtype=np.float64)
    rows = [np.cos(index * (0.05 + 0.09 * k) + 1.9 * k) * (1.0 + 0.3 * k) for k in range(count)]
    return np.stack(rows).reshape((count, *SHAPE[1:])).astype(np.float32)


def reference(x: Any) -> Any:
    """Conv3x3(pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm, in numpy."""
    np = require("numpy", "the self-test model")
    w = _weights()
    x = x.astype(np.float64)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2], x.shape[3]
    conv = np.zeros((x.shape[0], CHANNELS, h, wd))
    for dy in range(3):
        for dx in range(3):
            window = padded[:, :, dy : dy + h, dx : dx + wd]
            conv += np.einsum("nchw,oc->nohw", window, w["conv_w"][:, :, dy, dx].astype(np.float64))
    conv += w["conv_b"].astype(np.float64)[None, :, None, None]
    pooled = np.maximum(conv, 0.0).mean(axis=(2, 3))
    return (pooled @ w["fc_w"].T.astype(np.float64) + w["fc_b"]).astype(np.float32)


def build_model():
    """The ONNX model (controller side, needs the onnx package)."""
    onnx = require("onnx", "building the self-test model")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    w = _weights()
    inits = [numpy_helper.from_array(v, name) for name, v in sorted(w.items())]
    nodes = [
        helper.make_node("Conv", [INPUT, "conv_w", "conv_b"], ["conv"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], [OUTPUT], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "engine_builder_selftest",
        [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, [SHAPE[0], CLASSES])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="engine_builder"
    )
    model.ir_version = 7  # readable by the onnx parsers of TensorRT 8.5
    onnx.checker.check_model(model)
    return model


def model_bytes() -> bytes:
    return base64.b64decode(MODEL_B64)


MODEL_B64 = (
    "CAcSDmVuZ2luZV9idWlsZGVyOoUICjwKBWlucHV0CgZjb252X3cKBmNvbnZfYhIEY29udhoEY29udiIEQ29udioRCgRwYWRzQAFA"
    "AUABQAGgAQcKGAoEY29udhIEcmVsdRoEcmVsdSIEUmVsdQolCgRyZWx1EgRwb29sGgRwb29sIhFHbG9iYWxBdmVyYWdlUG9vbAor"
    "CgRwb29sEgRmbGF0GgdmbGF0dGVuIgdGbGF0dGVuKgsKBGF4aXMYAaABAgozCgRmbGF0CgRmY193CgRmY19iEgZsb2dpdHMaAmZj"
    "IgRHZW1tKg0KBnRyYW5zQhgBoAECEhdlbmdpbmVfYnVpbGRlcl9zZWxmdGVzdCoeCAQQAUIGY29udl9iShCP74M9ms6zPerX8Lw7"
    "08u9KsUDCAQIAwgDCAMQAUIGY29udl93SrADdnVMPV2z/j7OFRg+B17gvuaKpb4bVZ4+iLPkPg81Br4KeP++CjaLvQqW8T7cK4M+"
    "DUO9vvWqzr7+pFU+dkf5Pm5RbLyZOfy+d3Q6vl8J1z5lAbM+paGPvslM7L5ufMU9hf7/Pk360j1Z9Oq+uHeSvlSHsD6E4tg+2wY0"
    "vobK/L6OMq28HHn4PpnhWz4rnsy+BJC/viI0gD7zs/I+3B17vWY5/76j1gy+TyLjPtkFoT7w5qK+IQHivoZ/ET4jBv8+vNZnPcN2"
    "877oMXy+6SnBPn4myz4YQWC+ueD3viX70zyrKf0+sHkvPg0q2r5mw66+h3OUPvz66T5ud9y9Zvf/vvDzu70LOe0+xJ2NPnC7tL7S"
    "tdW+cPc+PmjM+z4JsB48AdL5vm85Ub4xF9A+kZ67PtM/hb7BxfC+PNKUPRid/z6GhAE+CcjlviNrnL7aYqc+UTDfPmm2HL7scf6+"
    "NCI5vbs29T4p6nE+x/bEvrOGx74Hv2o+o1j2PofYGL2u9/2+TmckvmEt3T7jbao+cTGZvrSJ577GVPM9183/PkrUpD3SXe++w7CI"
    "vjvXuD5gbNI+KjQIChABQgRmY19iSigIyTA9VxyEvH0iS71/mW+7RSlFPbU+uzy10B+9aV8dvSoUwjznFEQ9Kq8BCAoIBBABQgRm"
    "Y193SqABwKv2P8GaaD8rR8i/ajHEv40IdD+M3fQ/XbhCvhyT/r9Zaxq/mMbfP0R5pj+XXp2/kD/lv0/YAz9zi/8/gw6QPr8t8b9g"
    "OIS/pm+8PyVjzz89a1O/A475v9YwRT1JA/w/K7s8P9Ze1r+54LO/B56OP43E7D/crsC+qvv/v1LD175Vd+o/G3iTPwqkr788iNm/"
    "EbwxPzX7/D+av8A9Ay34v1ofCgVpbnB1dBIWChQIARIQCgIIAQoCCAMKAggICgIICGIYCgZsb2dpdHMSDgoMCAESCAoCCAEKAggK"
    "QgQKABAN"
)

if __name__ == "__main__":
    print(base64.b64encode(build_model().SerializeToString()).decode("ascii"))
