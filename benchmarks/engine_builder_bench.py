"""engine_builder benchmark, on this machine's CPU with onnxruntime (never a Jetson figure).

    .venv/bin/python benchmarks/engine_builder_bench.py [--quick] [--out reports/bench]

1. Overhead of the onnxruntime backend's runner against a bare onnxruntime session on the same
   model file (the built artifact); the goal is at most 3 % on p50 latency. A second, identical
   bare session gives the noise floor of the machine (A/A).
2. INT8 (Q/DQ) vs FP32 latency and accuracy on the digits example (committed models, golden
   test split); and the example detector (examples/detection: YOLOv5s-sized at 640x640, random
   weights): ONNX and INT8 sizes, quantization time, latency, INT8-FP32 output agreement (its
   accuracy means nothing), beside the mission's Jetson targets per module class.
Writes engine_builder_bench.json and engine_builder_bench.png under --out and prints a table.
Measurements alternate between the variants in rounds, so drift of the machine hits both.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from engine_builder.backends.ort_backend import (  # noqa: E402  after sys.path
    OnnxRuntimeRunner,
    int8_kernels_saturate,
)
from engine_builder.build import build  # noqa: E402  after sys.path
from engine_builder.options import BuildOptions  # noqa: E402  after sys.path
from engine_builder.quantize import quantize  # noqa: E402  after sys.path
from engine_builder.stats import percentile, summarize_ms  # noqa: E402  after sys.path

DIGITS = os.path.join(REPO, "examples", "digits")
_spec = importlib.util.spec_from_file_location(
    "detector", os.path.join(REPO, "examples", "detection", "detector.py")
)
detector = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(detector)
OVERHEAD_GOAL = 0.03


def cpu_label() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s, %d logical cores" % (name, os.cpu_count() or 0)


def _latencies(call: Callable[[], Any], iterations: int) -> List[float]:
    clock = time.perf_counter
    out = []
    for _ in range(iterations):
        t0 = clock()
        call()
        out.append((clock() - t0) * 1000.0)
    return out


def interleaved(variants: Dict[str, Callable[[], Any]], rounds: int, iterations: int) -> Dict[str, Dict]:
    """Latency statistics per variant, pooled over rounds whose order flips every round (ABBA...),
    so drift and order effects of a shared machine hit every variant alike."""
    names = list(variants)
    for call in variants.values():
        _latencies(call, max(20, iterations // 5))  # warm-up
    pooled: Dict[str, List[float]] = {name: [] for name in names}
    round_p50: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else list(reversed(names)):
            lat = _latencies(variants[name], iterations)
            pooled[name].extend(lat)
            round_p50[name].append(round(percentile(sorted(lat), 50), 6))
    out = {}
    for name in names:
        stats = summarize_ms(pooled[name])
        out[name] = {
            "p50_ms": stats["p50"],
            "p99_ms": stats["p99"],
            "mean_ms": stats["mean"],
            "samples": len(pooled[name]),
            "round_p50s_ms": round_p50[name],
        }
    return out


# --------------------------------------------------------------------------- sections
def overhead_section(work: str, quick: bool) -> List[Dict[str, Any]]:
    """Backend runner vs a bare onnxruntime session, both on the built artifact."""
    import onnxruntime as ort

    rows = []
    cases = [
        ("digits", os.path.join(DIGITS, "digits_fp32.onnx"), "input", (1, 1, 8, 8), 300 if quick else 3000),
        ("detector-640", os.path.join(work, "detector_fp32.onnx"), detector.INPUT, (1, 3, 640, 640),
         2 if quick else 8),
    ]  # fmt: skip
    for name, model, input_name, shape, iters in cases:
        built = build(model, "onnxruntime", BuildOptions(), output=os.path.join(work, name + ".ort.onnx"))
        feed = {input_name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        artifact = built["artifact_path"]
        bare = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
        # a second bare session: the gap between two identical sessions is the noise floor
        twin = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
        with OnnxRuntimeRunner(artifact) as runner:
            res = interleaved(
                {
                    "bare onnxruntime": lambda s=bare, f=feed: s.run(None, f),
                    "engine_builder runner": lambda r=runner, f=feed: r.infer(f),
                    "bare onnxruntime (twin)": lambda s=twin, f=feed: s.run(None, f),
                },
                rounds=4 if quick else 12,
                iterations=iters,
            )
        base, ours = res["bare onnxruntime"]["p50_ms"], res["engine_builder runner"]["p50_ms"]
        overhead = (ours - base) / base
        noise = (res["bare onnxruntime (twin)"]["p50_ms"] - base) / base
        rows.append(
            {
                "model": name,
                "bare_p50_ms": round(base, 6),
                "backend_p50_ms": round(ours, 6),
                "overhead": round(overhead, 4),
                "noise_floor": round(noise, 4),
                "goal": OVERHEAD_GOAL,
                "within_goal": overhead <= OVERHEAD_GOAL,
                "rounds": res,
            }
        )
    return rows


def _built_runners(work: str, tag: str, models: Dict[str, str]) -> Dict[str, OnnxRuntimeRunner]:
    runners = {}
    for precision, model in models.items():
        built = build(
            model, "onnxruntime", BuildOptions(precision=precision),
            output=os.path.join(work, "%s-%s.ort.onnx" % (tag, precision)),
        )  # fmt: skip
        runners[precision] = OnnxRuntimeRunner(built["artifact_path"]).__enter__()
    return runners


def digits_section(work: str, quick: bool) -> List[Dict[str, Any]]:
    golden = np.load(os.path.join(DIGITS, "digits_golden.npz"))
    x, labels = golden["input"], golden["labels"]
    models = {
        p: os.path.join(DIGITS, m)
        for p, m in (("fp32", "digits_fp32.onnx"), ("int8", "digits_int8_qdq.onnx"))
    }
    runners = _built_runners(work, "digits", models)
    one, batch = {"input": x[:1]}, {"input": x[:64]}
    b1 = interleaved({p: (lambda r=r: r.infer(one)) for p, r in runners.items()}, 6, 300 if quick else 2000)
    b64 = interleaved({p: (lambda r=r: r.infer(batch)) for p, r in runners.items()}, 6, 30 if quick else 200)
    rows = []
    for precision, runner in runners.items():
        logits = runner.infer({"input": x})["output"]
        rows.append(
            {
                "model": "digits",
                "precision": precision,
                "accuracy": float((logits.argmax(1) == labels).mean()),
                "test_samples": len(labels),
                "batch1": b1[precision],
                "batch64": b64[precision],
            }
        )
        runner.deactivate()
    return rows


def detection_section(work: str, quick: bool) -> List[Dict[str, Any]]:
    """The example detector (examples/detection: YOLOv5s-sized, 640x640, random weights): file
    sizes, quantization time, batch-1 latency on this CPU, INT8-FP32 output agreement (accuracy
    is not measurable on random weights). The mission's Jetson targets go beside, never compared."""
    fp32 = os.path.join(work, "detector_fp32.onnx")  # built by main()
    calib, _ = detector.write_calibration(os.path.join(work, "detector-calibration"), count=8)
    int8 = os.path.join(work, "detector_int8_qdq.onnx")
    t0 = time.monotonic()
    quantize(fp32, int8, calibration=calib)
    quantize_s = time.monotonic() - t0
    runners = _built_runners(work, "detector", {"fp32": fp32, "int8": int8})
    frames = detector.random_frames(2, 5)
    x = {detector.INPUT: frames[:1]}
    b1 = interleaved({p: (lambda r=r: r.infer(x)) for p, r in runners.items()}, 4, 2 if quick else 10)
    outputs = {p: np.concatenate([r.infer({detector.INPUT: f[None]})[detector.OUTPUT] for f in frames])
               for p, r in runners.items()}  # fmt: skip
    a, b = (outputs[p].reshape(len(frames), -1).astype(np.float64) for p in ("fp32", "int8"))
    cosine = float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())
    for runner in runners.values():
        runner.deactivate()
    rows = []
    for precision, path in (("fp32", fp32), ("int8", int8)):
        row = {
            "model": "detector 640x640",
            "precision": precision,
            "batch1": b1[precision],
            "onnx_bytes": os.path.getsize(path),
            "jetson_p99_targets_ms": detector.JETSON_TARGETS_MS,
        }
        if precision == "int8":
            row.update(quantize_seconds=round(quantize_s, 1), cosine_vs_fp32=cosine,
                       int8_kernels="unfused (this CPU's fused kernels saturate)"
                       if int8_kernels_saturate() else "fused")  # fmt: skip
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- output
def print_table(report: Dict[str, Any]) -> None:
    print("engine_builder benchmark: %s" % report["label"])
    print("\nBackend overhead vs bare onnxruntime (p50, alternating rounds; goal <= 3%)")
    print("%-16s %12s %12s %10s %12s %s" % ("model", "bare ms", "backend ms", "overhead", "A/A noise", ""))
    for r in report["overhead"]:
        print(
            "%-16s %12.5f %12.5f %9.2f%% %11.2f%% %s"
            % (
                r["model"],
                r["bare_p50_ms"],
                r["backend_p50_ms"],
                100 * r["overhead"],
                100 * r["noise_floor"],
                "ok" if r["within_goal"] else "over the 3% goal",
            )
        )
    print("(A/A noise: a second, identical bare session measured the same way)")
    print("\nINT8 (Q/DQ) vs FP32")
    print(
        "%-24s %-6s %10s %12s %12s %14s"
        % ("model", "prec", "accuracy", "b1 p50 ms", "b1 p99 ms", "b64 p50 ms")
    )
    for r in report["digits"] + report["detection"]:
        print(
            "%-24s %-6s %10s %12.4f %12.4f %14s"
            % (
                r["model"],
                r["precision"],
                "%.2f%%" % (100 * r["accuracy"]) if "accuracy" in r else "n/a",
                r["batch1"]["p50_ms"],
                r["batch1"]["p99_ms"],
                "%.4f" % r["batch64"]["p50_ms"] if "batch64" in r else "-",
            )
        )
    fp32, int8 = report["detection"]
    print(
        "\ndetector 640x640 (random weights): ONNX %d B FP32, %d B INT8 (%.1fx smaller), quantized in "
        "%.1f s on 8 frames; INT8-FP32 cosine %.6f (accuracy not measurable); INT8 kernels %s"
        % (fp32["onnx_bytes"], int8["onnx_bytes"], fp32["onnx_bytes"] / int8["onnx_bytes"],
           int8["quantize_seconds"], int8["cosine_vs_fp32"], int8["int8_kernels"])
    )  # fmt: skip
    print(
        "this CPU: p50 %.1f ms FP32, %.1f ms INT8; the mission's Jetson p99 targets (TensorRT, not "
        "comparable): %s" % (fp32["batch1"]["p50_ms"], int8["batch1"]["p50_ms"],
                             ", ".join("%s %s ms" % kv for kv in fp32["jetson_p99_targets_ms"].items()))
    )  # fmt: skip


def plot(report: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    ov = report["overhead"]
    pos = np.arange(len(ov))
    axes[0].bar(pos - 0.2, [100 * r["overhead"] for r in ov], 0.4, color="tab:blue", label="backend vs bare")
    axes[0].bar(
        pos + 0.2, [100 * r["noise_floor"] for r in ov], 0.4, color="tab:gray", label="bare vs bare (noise)"
    )
    axes[0].set_xticks(pos, [r["model"] for r in ov])
    axes[0].axhline(100 * OVERHEAD_GOAL, color="tab:red", linestyle="--", label="goal 3%")
    axes[0].set_ylabel("p50 overhead vs bare onnxruntime (%)")
    axes[0].set_title("onnxruntime backend overhead")
    axes[0].legend()
    for ax, rows, title in (
        (axes[1], report["digits"], "digits (batch 1)"),
        (axes[2], report["detection"], "detector 640x640, random weights (batch 1)"),
    ):
        names = [r["precision"].upper() for r in rows]
        bars = ax.bar(names, [r["batch1"]["p50_ms"] for r in rows], color=["tab:gray", "tab:green"])
        for bar, r in zip(bars, rows):
            label = "%.3f ms" % r["batch1"]["p50_ms"]
            if "accuracy" in r:
                label += "\nacc %.2f%%" % (100 * r["accuracy"])
            ax.annotate(
                label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom"
            )
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(title)
    fig.suptitle(
        "engine_builder, measured on this CPU with onnxruntime %s (%s); not a Jetson figure"
        % (report["onnxruntime"], report["cpu"]),
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description="engine_builder benchmark (CPU, onnxruntime)")
    parser.add_argument("--out", default=os.path.join(REPO, "reports", "bench"))
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    import onnxruntime

    started = time.monotonic()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eb-bench-") as work:
        report: Dict[str, Any] = {
            "cpu": cpu_label(),
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        }
        report["label"] = "measured on this CPU (%s) with onnxruntime %s; not a Jetson figure" % (
            report["cpu"],
            report["onnxruntime"],
        )
        detector.build_model(os.path.join(work, "detector_fp32.onnx"))
        report["overhead"] = overhead_section(work, args.quick)
        report["digits"] = digits_section(work, args.quick)
        report["detection"] = detection_section(work, args.quick)
    report["seconds"] = round(time.monotonic() - started, 1)
    with open(os.path.join(args.out, "engine_builder_bench.json"), "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, sort_keys=True)
    plot(report, os.path.join(args.out, "engine_builder_bench.png"))
    print_table(report)
    print(
        "\nwrote %s/engine_builder_bench.{json,png} in %.0f s"
        % (os.path.relpath(args.out), report["seconds"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
