"""The digits example, end to end, with no download.

Trains a small CNN on scikit-learn's bundled 8x8 digits (seeded, seconds on a CPU), exports it to
ONNX, quantizes it to a Q/DQ INT8 model calibrated on training images, reports FP32 vs INT8
accuracy on the test split (INT8 may lose at most 1 point), then builds both with the onnxruntime
backend, benchmarks them and compares them against the FP32 golden outputs.

It also quantizes the same FP32 model the wrong way: calibrated on one blank frame (a camera with
its lens cap on while the calibration set was recorded). Every activation range is then what a
black image gives, real digits saturate them, and the INT8 model loses far more than 1 point: the
engine gate must refuse it on the robot (the fleet tests ship it in a release to prove that).

    .venv/bin/python examples/digits/train.py            # rewrite the committed models
    .venv/bin/python examples/digits/train.py --check    # retrain elsewhere, compare only

Writes beside this file: digits_fp32.onnx, digits_int8_qdq.onnx, digits_int8_miscalibrated.onnx,
digits_golden.npz (test inputs, labels and expected FP32 logits) and SHA256SUMS. Needs torch and
scikit-learn (controller only); what it writes needs neither.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Dict, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository, for engine_builder

from edge_common.fsutil import sha256_file  # noqa: E402  after sys.path
from engine_builder.backends.ort_backend import OnnxRuntimeRunner  # noqa: E402  after sys.path
from engine_builder.bench import time_calls  # noqa: E402  after sys.path
from engine_builder.build import build  # noqa: E402  after sys.path
from engine_builder.compare import compare  # noqa: E402  after sys.path
from engine_builder.export import export  # noqa: E402  after sys.path
from engine_builder.options import BuildOptions  # noqa: E402  after sys.path
from engine_builder.quantize import quantize  # noqa: E402  after sys.path

SEED = 0
FP32, INT8, GOLDEN = "digits_fp32.onnx", "digits_int8_qdq.onnx", "digits_golden.npz"
MISCALIBRATED = "digits_int8_miscalibrated.onnx"
MAX_INT8_DROP_POINTS = 1.0


def load_split() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as (N, 1, 8, 8) float32 in [0, 1]; a fixed, stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)


def make_model():
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def train(x: np.ndarray, y: np.ndarray, epochs: int = 30):
    import torch

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(onnx_path: str, x: np.ndarray, y: np.ndarray) -> float:
    with OnnxRuntimeRunner(onnx_path) as runner:
        logits = runner.infer({"input": x})["output"]
    return float((logits.argmax(1) == y).mean())


def write_calibration(folder: str, x_train: np.ndarray, count: int = 512, batch: int = 64) -> None:
    rng = np.random.default_rng(SEED)
    picks = rng.choice(len(x_train), size=min(count, len(x_train)), replace=False)
    for i in range(0, len(picks), batch):
        np.save(os.path.join(folder, "calib_%03d.npy" % (i // batch)), x_train[picks[i : i + batch]])


def miscalibrate(fp32: str, out: str, work: str, golden: str) -> Dict[str, Any]:
    """`fp32` quantized on one blank frame (what a capped lens records): a really degraded INT8
    model, measured against the labelled golden set."""
    calib = os.path.join(work, "calibration-blank")
    os.makedirs(calib, exist_ok=True)
    np.save(os.path.join(calib, "blank.npy"), np.zeros((1, 1, 8, 8), np.float32))
    return quantize(fp32, out, calibration=calib, eval_samples=golden)["accuracy"]


def run(out_dir: str, work: str, epochs: int) -> Dict[str, Any]:
    x_train, x_test, y_train, y_test = load_split()
    model = train(x_train, y_train, epochs)
    fp32 = os.path.join(out_dir, FP32)
    exported = export(model, [1, 1, 8, 8], fp32, dynamic_batch=True, opset=17)

    with OnnxRuntimeRunner(fp32) as runner:
        expected = runner.infer({"input": x_test})["output"]
    golden = os.path.join(out_dir, GOLDEN)
    np.savez_compressed(golden, input=x_test, labels=y_test, **{"expected.output": expected})

    calib = os.path.join(work, "calibration")
    os.makedirs(calib, exist_ok=True)
    write_calibration(calib, x_train)
    int8 = os.path.join(out_dir, INT8)
    quantized = quantize(fp32, int8, calibration=calib, eval_samples=golden)

    acc = quantized["accuracy"]
    bad = miscalibrate(fp32, os.path.join(out_dir, MISCALIBRATED), work, golden)
    report: Dict[str, Any] = {
        "train_samples": len(x_train),
        "test_samples": len(x_test),
        "export": {"max_abs_error_vs_torch": exported["max_abs_error_vs_torch"]},
        "fp32_accuracy": acc["fp32_accuracy"],
        "int8_accuracy": acc["int8_accuracy"],
        "int8_drop_points": acc["accuracy_drop_points"],
        "int8_top1_agreement": acc["top1_agreement"],
        "miscalibrated_int8_accuracy": bad["int8_accuracy"],
        "miscalibrated_int8_drop_points": bad["accuracy_drop_points"],
    }
    for name, path, precision in (("fp32", fp32, "fp32"), ("int8", int8, "int8")):
        built = build(
            path, "onnxruntime", BuildOptions(precision=precision), output=os.path.join(work, name + ".ort")
        )
        with OnnxRuntimeRunner(built["artifact_path"]) as runner:
            feed = {"input": x_test[:1]}
            timing = time_calls(
                lambda runner=runner, feed=feed: runner.infer(feed), warmup=50, iterations=500
            )
        parity = compare(fp32, built["artifact_path"], "onnxruntime", samples_path=golden)
        report[name] = {
            "fingerprint": built["fingerprint"],
            "latency_ms_p50": timing["latency_ms"]["p50"],
            "latency_ms_p99": timing["latency_ms"]["p99"],
            "top1_agreement_vs_fp32": parity["outputs"]["output"]["top1_agreement"],
            "gate_passed": parity["passed"],
        }
    return report


def write_sums(out_dir: str) -> None:
    with open(os.path.join(out_dir, "SHA256SUMS"), "w", encoding="utf-8") as fh:
        for name in (FP32, INT8, MISCALIBRATED, GOLDEN):
            fh.write("%s  %s\n" % (sha256_file(os.path.join(out_dir, name)), name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write to a temporary folder, keep the committed files"
    )
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digits-") as work:
        out_dir = work if args.check else HERE
        report = run(out_dir, work, args.epochs)
        if not args.check:
            write_sums(out_dir)
    print(json.dumps(report, indent=2, sort_keys=True))
    print(
        "FP32 accuracy %.2f%%, INT8 accuracy %.2f%% (drop %.2f points; limit %.1f) on %d test digits"
        % (
            100 * report["fp32_accuracy"],
            100 * report["int8_accuracy"],
            report["int8_drop_points"],
            MAX_INT8_DROP_POINTS,
            report["test_samples"],
        )
    )
    print(
        "miscalibrated INT8 (one blank calibration frame) accuracy %.2f%% (drop %.2f points)"
        % (100 * report["miscalibrated_int8_accuracy"], report["miscalibrated_int8_drop_points"])
    )
    if report["int8_drop_points"] > MAX_INT8_DROP_POINTS:
        print("INT8 loses more than %.1f point(s): not acceptable" % MAX_INT8_DROP_POINTS, file=sys.stderr)
        return 1
    if report["miscalibrated_int8_drop_points"] <= MAX_INT8_DROP_POINTS:
        print("the miscalibrated INT8 model is not degraded: it demonstrates nothing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
