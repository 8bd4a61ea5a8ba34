"""A detection-sized example model: YOLOv5s-class at 640x640, built in code with onnx.helper.

No download and no training: the weights are random (seeded), so this model detects nothing. It
exists for what size and speed decide: ONNX and INT8 file sizes, quantization and engine build
times, latency, and the bytes an update moves, at the scale of the detectors robots run. Its
accuracy means nothing, and an accuracy delta cannot be measured on it: the gate checks that the
INT8 outputs agree with FP32 (cosine), not that boxes are right.

Shape of the network (a YOLOv5s-like layout, ~7 M parameters, ~19 GFLOPs at 640x640):
- backbone: a 6x6 stride-2 stem, then four stride-2 stages (64, 128, 256, 512 channels), each a
  3x3 downsampling conv and a residual bottleneck (1x1, 3x3, 1x1), SiLU activations; a 3x3 512
  block at the end (where YOLOv5 has SPPF);
- neck: top-down, P5 -> P4 -> P3, nearest upsampling and concatenation;
- heads at strides 8, 16 and 32 (80x80, 40x40, 20x20): 3 anchors x (4 box + 1 objectness + 80
  classes) each, sigmoid, flattened into one `detections` output of shape (1, 25200, 85), as
  YOLOv5's ONNX export has it.

    python examples/detection/detector.py models/            # detector_fp32.onnx
    python examples/detection/detector.py models/ --calibration models/calibration --golden models/golden.npz

The calibration and golden sets it writes are random images too (uniform in [0, 1), like the
normalized frames such a model takes): enough to exercise INT8 calibration at this size, not to
calibrate a real detector. Replace them with frames from the robots' cameras for a real model.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Tuple

import numpy as np

SIZE = 640
CLASSES = 80
ANCHORS = 3
OUTPUTS = 5 + CLASSES  # box (4), objectness, classes
INPUT, OUTPUT = "images", "detections"
OPSET = 13
# The mission's p99 latency targets for a YOLOv5-class model at 640 on TensorRT, per module class:
# the figures a release of a real detector sets as golden.p99_ms. A CPU's latency is never compared.
JETSON_TARGETS_MS = {"orin_nano": 30, "orin_nx": 15, "agx_orin": 10}


class _Graph:
    """Nodes and initializers of the graph being built, with unique names."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: List = []
        self.inits: List = []
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return "%s_%d" % (kind, self.count)

    def const(self, values: np.ndarray, kind: str) -> str:
        from onnx import numpy_helper

        name = self.name(kind)
        self.inits.append(numpy_helper.from_array(values, name))
        return name

    def node(self, op: str, inputs: List[str], **attrs) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, act: bool = True) -> str:
        """Conv (He-initialised weights, BatchNorm folded into the bias) and SiLU (x * sigmoid(x))."""
        w = (self.rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k))).astype(np.float32)
        b = (self.rng.standard_normal(c_out) * 0.01).astype(np.float32)
        pad = (k - 1) // 2 if k % 2 else k // 2 - 1
        y = self.node(
            "Conv",
            [x, self.const(w, "w"), self.const(b, "b")],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad, pad, pad, pad],
        )
        if not act:
            return y
        return self.node("Mul", [y, self.node("Sigmoid", [y])])

    def bottleneck(self, x: str, c: int) -> str:
        y = self.conv(x, c, c // 2, 1)
        y = self.conv(y, c // 2, c // 2, 3)
        y = self.conv(y, c // 2, c, 1)
        return self.node("Add", [x, y])

    def upsample(self, x: str) -> str:
        """Nearest-neighbour upsampling by 2 (Resize with scales)."""
        scales = self.const(np.array([1, 1, 2, 2], np.float32), "scales")
        return self.node("Resize", [x, "", scales], mode="nearest")

    def head(self, x: str, c_in: int, grid: int) -> str:
        """(1, c_in, grid, grid) -> (1, 3*grid*grid, 85), sigmoid, as YOLOv5's export lays it out."""
        y = self.conv(x, c_in, ANCHORS * OUTPUTS, 1, act=False)
        y = self.node(
            "Reshape", [y, self.const(np.array([1, ANCHORS, OUTPUTS, grid, grid], np.int64), "shape")]
        )
        y = self.node("Transpose", [y], perm=[0, 1, 3, 4, 2])
        y = self.node(
            "Reshape", [y, self.const(np.array([1, ANCHORS * grid * grid, OUTPUTS], np.int64), "shape")]
        )
        return self.node("Sigmoid", [y])


def build_model(path: str, seed: int = 0) -> str:
    """Write the detector's FP32 ONNX to `path`; return the path."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph(seed)
    x = g.conv(INPUT, 3, 32, 6, 2)  # 320x320
    features = []
    c_in = 32
    for c in (64, 128, 256, 512):  # 160, 80, 40, 20
        x = g.conv(x, c_in, c, 3, 2)
        x = g.bottleneck(x, c)
        features.append(x)
        c_in = c
    p5 = g.conv(features[3], 512, 512, 3)
    # top-down neck
    p4 = g.conv(g.node("Concat", [g.upsample(g.conv(p5, 512, 256, 1)), features[2]], axis=1), 512, 256, 3)
    p3 = g.conv(g.node("Concat", [g.upsample(g.conv(p4, 256, 128, 1)), features[1]], axis=1), 256, 128, 3)
    heads = [g.head(p3, 128, SIZE // 8), g.head(p4, 256, SIZE // 16), g.head(p5, 512, SIZE // 32)]
    g.nodes.append(helper.make_node("Concat", heads, [OUTPUT], name="concat_heads", axis=1))
    boxes = ANCHORS * sum((SIZE // s) ** 2 for s in (8, 16, 32))
    graph = helper.make_graph(
        g.nodes,
        "detector_640",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, boxes, OUTPUTS])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.doc_string = "Edge Deploy example detector at 640x640, random weights: size and speed only"
    onnx.checker.check_model(model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def random_frames(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 3, SIZE, SIZE), dtype=np.float32)


def write_calibration(folder: str, count: int = 8, seed: int = 1) -> Tuple[str, int]:
    """`count` random frames, one .npy each (engine_builder quantize's calibration folder)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(random_frames(count, seed)):
        np.save(out / ("frame_%03d.npy" % index), frame[None])
    return str(out), count


def write_golden(path: str, count: int = 4, seed: int = 2) -> str:
    """A golden set of `count` random frames without labels: the gate compares INT8 with FP32."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{INPUT: random_frames(count, seed)})
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder for detector_fp32.onnx")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration", help="also write a calibration folder of random frames here")
    parser.add_argument("--golden", help="also write a golden set (.npz, random frames, no labels) here")
    args = parser.parse_args(argv)
    model = build_model(str(Path(args.out) / "detector_fp32.onnx"), args.seed)
    print("%s: %d bytes" % (model, Path(model).stat().st_size))
    if args.calibration:
        print("%s: %d frames" % write_calibration(args.calibration))
    if args.golden:
        print(write_golden(args.golden))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
