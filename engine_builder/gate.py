"""The engine gate: golden-input parity (accuracy) and a latency benchmark, on the engine itself.

Accuracy, with a labelled golden set (`labels` in the .npz): the points of accuracy the engine
loses against the FP32 reference (the set's `expected.*` outputs, or `reference` run through
onnxruntime), at most `max_accuracy_drop_points` (default 1.0). An INT8 model that its calibration
broke is refused here, on the robot, by push and pull alike, with both accuracies in the verdict.
Without labels, top-1 disagreement with the reference stands in (`max_top1_disagreement`, 0.01
unless set; set, it applies to labelled sets too). compare.py's docstring has the details.

Resources: tegrastats is sampled while the benchmark runs (edge_common.resources) and, with the
robot's budget (`resources` in the settings, from the agent's config, never from the release),
a breach refuses the engine like a missed latency target: "resource budget broken: power peak
27.3 W > budget 25 W (over by 2.3 W)".

One gate for every path: `ensure` runs it on a fresh build before the build is moved into the
store, and on a cached engine whose gate record does not cover the spec it is asked for. Its
result is kept beside the engine (store.GATE_RECORD), keyed by everything that changes the
verdict (samples, reference, thresholds, iterations), so the same question is answered once.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Optional

from edge_common.fsutil import sha256_file
from engine_builder.errors import GateFailed, UsageError
from engine_builder.progress import Progress

DEFAULTS: Dict[str, Any] = {
    "samples": None,  # golden .npz: inputs, optional labels and expected.<output> arrays
    "reference": None,  # ONNX whose onnxruntime FP32 outputs are the reference (no expected.*)
    "count": 64,  # random samples for the parity check when there is no golden set
    "max_accuracy_drop_points": 1.0,  # labelled golden set: accuracy points lost against FP32
    "max_top1_disagreement": None,  # unset: 0.01 without labels, not checked with labels
    "max_abs_error": None,
    "min_cosine": None,
    "p99_ms": None,  # a number, or {module_class: ms, "default": ms}
    "benchmark": True,
    "iterations": 50,
    "warmup": 5,
}
# Set by the robot (ensure's `resources`), not by a release's golden section: the module class's
# budget (edge_common.resources.BUDGETS). Part of the gate record's key like every setting.
ROBOT_SETTINGS = {"resources": None}
RESOURCE_INTERVAL_MS = 250  # tegrastats during the benchmark: short runs still get a few samples


def settings(spec: Optional[Dict[str, Any]], module_class: Optional[str]) -> Dict[str, Any]:
    """The gate's settings from a model spec's `golden` section; p99 resolved for this module class."""
    out = dict(DEFAULTS, **ROBOT_SETTINGS)
    unknown = set(spec or {}) - set(DEFAULTS)
    if unknown:
        raise UsageError(
            "unknown gate setting(s) %s; known: %s"
            % (", ".join(sorted(unknown)), ", ".join(sorted(DEFAULTS)))
        )
    out.update({k: v for k, v in (spec or {}).items() if v is not None})
    drop = out["max_accuracy_drop_points"]
    if isinstance(drop, bool) or not isinstance(drop, (int, float)) or drop < 0:
        raise UsageError(
            "golden max_accuracy_drop_points must be a number of accuracy points >= 0 (got %r)" % (drop,)
        )
    target = out["p99_ms"]
    if isinstance(target, dict):
        target = target.get(module_class or "", target.get("default"))
    out["p99_ms"] = float(target) if target is not None else None
    return out


def active(conf: Dict[str, Any]) -> bool:
    """Whether the gate checks anything at all."""
    return bool(conf["samples"] or conf["reference"] or conf["benchmark"] or conf["p99_ms"] is not None)


def record_key(conf: Dict[str, Any], known: Optional[Dict[str, str]] = None) -> Optional[str]:
    """Everything that changes the verdict: files by content, thresholds and counts by value.
    A file not on this machine counts by the sha256 given in `known` (a dry run before the
    controller sent it); None when neither tells its content."""
    data = {k: v for k, v in conf.items() if k not in ("samples", "reference")}
    for key in ("samples", "reference"):
        if not conf[key]:
            data[key] = None
        elif os.path.isfile(conf[key]):
            data[key] = sha256_file(conf[key])
        elif (known or {}).get(key):
            data[key] = known[key]
        else:
            return None
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def run(
    artifact: str,
    backend: str,
    conf: Dict[str, Any],
    backend_kwargs: Optional[Dict[str, Any]] = None,
    progress: Optional[Progress] = None,
) -> Dict[str, Any]:
    """Parity and latency of `artifact`; {passed, reason, compare, bench} and, with a labelled
    golden set, `accuracy` (compare.accuracy_summary: both accuracies). Never raises on a miss."""
    from edge_common import resources
    from engine_builder.backends import get_backend
    from engine_builder.bench import apply_p99_gate, time_calls
    from engine_builder.compare import compare

    progress = progress or Progress()
    result: Dict[str, Any] = {"passed": True, "reason": None}
    reasons = []
    if conf["samples"] or conf["reference"]:
        for key in ("samples", "reference"):
            if conf[key] and not os.path.isfile(conf[key]):
                raise UsageError("gate %s file %s does not exist" % (key, conf[key]))
        checked = compare(
            conf["reference"],
            artifact,
            backend,
            samples_path=conf["samples"],
            count=int(conf["count"]),
            max_top1_disagreement=conf["max_top1_disagreement"],
            min_cosine=conf["min_cosine"],
            max_abs_error=conf["max_abs_error"],
            backend_kwargs=backend_kwargs,
            max_accuracy_drop_points=float(conf["max_accuracy_drop_points"]),
        )
        result["compare"] = {k: v for k, v in checked.items() if k != "artifact"}  # (a staging path)
        if checked.get("accuracy"):
            result["accuracy"] = checked["accuracy"]
        if not checked["passed"]:
            reasons.append("accuracy: " + "; ".join(checked["failures"]))
    if conf["benchmark"] or conf["p99_ms"] is not None:
        from engine_builder.tensors import load_samples, random_inputs

        with get_backend(backend, **(backend_kwargs or {})).runner(artifact) as runner:
            if conf["samples"]:
                feed = {
                    n: v[:1] for n, v in load_samples(conf["samples"], runner.input_specs())["inputs"].items()
                }
            else:
                feed = random_inputs(runner.input_specs(), batch=1)
            with resources.Recording(RESOURCE_INTERVAL_MS) as recording:
                timing = time_calls(
                    lambda: runner.infer(feed),
                    int(conf["warmup"]),
                    int(conf["iterations"]),
                    progress,
                    "gate benchmark",
                )
                # the same load, untimed, until tegrastats has seen it (a fast engine's benchmark
                # is over before the first sample)
                recording.keep_busy(lambda: runner.infer(feed))
        bench = apply_p99_gate(dict(timing, method="runner", backend=backend), conf["p99_ms"])
        result["bench"] = bench
        if not bench["passed"]:
            reasons.append(
                "latency: p99 %.4g ms exceeds the target %.4g ms"
                % (bench["latency_ms"]["p99"], conf["p99_ms"])
            )
        result["resources"] = recording.check(conf.get("resources"))
        if not result["resources"]["passed"]:
            reasons.append(resources.reason(result["resources"]))
    if reasons:
        result.update(passed=False, reason="; ".join(reasons))
    return result


def raise_if_failed(
    name: str, fingerprint: str, verdict: Dict[str, Any], precision: Optional[str] = None
) -> None:
    if not verdict["passed"]:
        what = "%s, %s" % (precision.upper(), fingerprint[:16]) if precision else fingerprint[:16]
        if (verdict.get("accuracy") or {}).get("passed") is False:
            hint = (
                "quantize the model again on representative calibration data (engine-builder "
                "quantize MODEL --calibration DIR --eval-samples GOLDEN shows both accuracies), or "
                "ship it at a higher precision; golden.max_accuracy_drop_points sets the limit"
            )
        elif (verdict.get("resources") or {}).get("passed") is False:
            hint = (
                "the engine's benchmark broke the robot's resource budget: ship a lighter model or "
                "precision, pick another power mode, or change the module class's "
                "release_resource_budget in group_vars"
            )
        else:
            hint = "fix the model or its golden set, or loosen the release's golden thresholds"
        if verdict.get("remembered"):
            hint += "; answered from the gate's record of %s (a forced build gates it again)" % verdict["at"]
        raise GateFailed(
            "engine %s (%s) failed its gate: %s" % (name, what, verdict["reason"]),
            hint=hint,
            details={"gate": verdict, "fingerprint": fingerprint},
        )
