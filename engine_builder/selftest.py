"""`engine-builder selftest`: what a user runs on a real Jetson to see that every backend present
builds, runs and agrees with a numpy reference on a tiny embedded model. Prints a verdict per
backend; fails when any present backend fails (or none is present)."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional

from engine_builder import tiny_model
from engine_builder.backends import get_backend, names
from engine_builder.bench import time_calls
from engine_builder.build import build
from engine_builder.compare import gate, output_metrics, run_all
from engine_builder.errors import EngineBuilderError, MissingDependency
from engine_builder.options import BuildOptions

# (precision, gate): fp16 cannot match a float64 reference to fp32 accuracy
PLANS = {
    "onnxruntime": [("fp32", {"max_top1_disagreement": 0.0, "max_abs_error": 1e-3})],
    "tensorrt": [
        ("fp32", {"max_top1_disagreement": 0.0, "max_abs_error": 1e-2}),
        ("fp16", {"max_top1_disagreement": 1.0, "min_cosine": 0.999, "max_abs_error": 0.1}),
    ],
    "trtexec": [("fp16", {"max_top1_disagreement": 1.0, "min_cosine": 0.999, "max_abs_error": 0.1})],
}


def _check(backend_name: str, precision: str, limits: Dict[str, Any], workdir: str, kwargs) -> Dict[str, Any]:
    model = os.path.join(workdir, "selftest.onnx")
    if not os.path.exists(model):
        with open(model, "wb") as fh:
            fh.write(tiny_model.model_bytes())
    row: Dict[str, Any] = {"backend": backend_name, "precision": precision}
    result = build(model, backend_name, BuildOptions(precision=precision), force=True, backend_kwargs=kwargs)
    row.update({"version": result["backend"]["version"], "build_seconds": result["build_seconds"]})
    inputs = {tiny_model.INPUT: tiny_model.sample_inputs()}
    expected = tiny_model.reference(inputs[tiny_model.INPUT])
    with get_backend(backend_name, **kwargs).runner(result["artifact_path"]) as runner:
        got = run_all(runner, inputs)[tiny_model.OUTPUT]
        feed = {tiny_model.INPUT: inputs[tiny_model.INPUT][:1]}
        timing = time_calls(lambda: runner.infer(feed), warmup=5, iterations=30)
    metrics = output_metrics(expected, got)
    failures = gate({tiny_model.OUTPUT: metrics}, **limits)
    row.update(
        {
            "max_abs_error": metrics["max_abs_error"],
            "cosine_min": metrics["cosine_min"],
            "p50_ms": timing["latency_ms"]["p50"],
            "failures": failures,
            "verdict": "FAIL" if failures else "PASS",
        }
    )
    return row


def selftest(
    backends: Optional[List[str]] = None, workdir: Optional[str] = None, trtexec: Optional[str] = None
) -> Dict[str, Any]:
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="engine-builder-selftest-") as tmp:
        work = workdir or tmp
        os.makedirs(work, exist_ok=True)
        for name in backends or names():
            kwargs = {"trtexec": trtexec} if name == "trtexec" and trtexec else {}
            try:
                get_backend(name, **kwargs).version()
            except MissingDependency as exc:
                rows.append({"backend": name, "verdict": "SKIP", "reason": exc.message})
                continue
            except EngineBuilderError as exc:
                rows.append({"backend": name, "verdict": "FAIL", "error": exc.to_dict()})
                continue
            for precision, limits in PLANS[name]:
                try:
                    rows.append(_check(name, precision, limits, work, kwargs))
                except EngineBuilderError as exc:
                    rows.append(
                        {"backend": name, "precision": precision, "verdict": "FAIL", "error": exc.to_dict()}
                    )
    ran = [r for r in rows if r["verdict"] != "SKIP"]
    passed = bool(ran) and all(r["verdict"] == "PASS" for r in ran)
    return {"rows": rows, "passed": passed, "verdict": "PASS" if passed else "FAIL"}
