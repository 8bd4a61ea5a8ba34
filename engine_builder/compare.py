"""`engine-builder compare`: reference vs candidate on the same sample inputs, with a gate.

Reference: the `expected.*` arrays of a golden .npz when present (computed on the controller, so a
robot without onnxruntime can check parity), else onnxruntime FP32 on the original ONNX. Candidate:
the built artifact through its backend's runner.

What the gate measures depends on the samples. With labels (a golden .npz with `labels`), the
accuracy the candidate loses against the FP32 reference, in points (`max_accuracy_drop_points`,
default 1): what a release is for, and what an INT8 model may lose to its calibration. Without
labels (or random inputs) there is no accuracy to measure: top-1 disagreement with the reference
stands in for it (`max_top1_disagreement`, default 0.01). An explicit `max_top1_disagreement`
applies to labelled sets too.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from engine_builder._deps import require
from engine_builder.backends import get_backend
from engine_builder.backends.base import Runner
from engine_builder.errors import MissingDependency, UsageError
from engine_builder.tensors import TensorSpec, chunks, concrete_shape, load_samples, random_inputs

DEFAULT_MAX_TOP1_DISAGREEMENT = 0.01  # unlabelled samples, unless a limit is given
DEFAULT_MAX_ACCURACY_DROP_POINTS = 1.0  # labelled samples: accuracy points lost against FP32


def sample_inputs(specs: List[TensorSpec], count: int, seed: int = 0) -> Dict[str, Any]:
    """`count` seeded samples stacked along the batch axis (even for a static batch of 1)."""
    overrides = {}
    for spec in specs:
        shape = concrete_shape(spec, batch=count)
        shape[0] = count
        overrides[spec.name] = shape
    return random_inputs(specs, batch=count, seed=seed, overrides=overrides)


def run_all(runner: Runner, inputs: Dict[str, Any]) -> Dict[str, Any]:
    """Run every sample through `runner` in batches it accepts; outputs concatenated."""
    np = require("numpy", "compare")
    parts: Dict[str, List[Any]] = {}
    for feed in chunks(inputs, runner.input_specs()):
        for name, value in runner.infer(feed).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values, axis=0) for name, values in parts.items()}


def output_metrics(ref: Any, cand: Any, labels: Optional[Any] = None) -> Dict[str, Any]:
    np = require("numpy", "compare")
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    if ref.shape != cand.shape:
        raise UsageError(
            "output shapes differ: reference %s, candidate %s" % (list(ref.shape), list(cand.shape))
        )
    diff = np.abs(ref - cand)
    rows_r = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(1, -1)
    rows_c = cand.reshape(rows_r.shape)
    norms = np.linalg.norm(rows_r, axis=1) * np.linalg.norm(rows_c, axis=1)
    cos = np.where(norms > 0, np.sum(rows_r * rows_c, axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
    out: Dict[str, Any] = {
        "shape": list(ref.shape),
        "max_abs_error": float(diff.max()) if diff.size else 0.0,
        "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
        # relative to |reference|, floored at 1e-6 so exact zeros do not divide by zero
        "max_rel_error": float((diff / np.maximum(np.abs(ref), 1e-6)).max()) if diff.size else 0.0,
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
    }
    if ref.ndim >= 2 and ref.shape[-1] > 1:
        top_r, top_c = ref.argmax(axis=-1), cand.argmax(axis=-1)
        agreement = float((top_r == top_c).mean())
        out.update({"top1_agreement": agreement, "top1_disagreement": round(1.0 - agreement, 12)})
        if labels is not None and ref.ndim == 2 and len(labels) == ref.shape[0]:
            labels = np.asarray(labels).reshape(-1)
            reference, candidate = float((top_r == labels).mean()), float((top_c == labels).mean())
            out.update(
                {
                    "labelled_samples": int(labels.shape[0]),
                    "reference_accuracy": reference,
                    "candidate_accuracy": candidate,
                    # rounded: one sample of 450 is 0.2222 points, and 1.0000000001 must not fail 1.0
                    "accuracy_drop_points": round(100.0 * (reference - candidate), 6),
                }
            )
    return out


def _percent(value: float) -> str:
    return "%.2f %%" % (100.0 * value)


def gate(
    metrics: Dict[str, Dict[str, Any]],
    max_top1_disagreement: Optional[float] = None,
    min_cosine: Optional[float] = None,
    max_abs_error: Optional[float] = None,
    max_accuracy_drop_points: Optional[float] = DEFAULT_MAX_ACCURACY_DROP_POINTS,
) -> List[str]:
    """Reasons the candidate fails (empty list: it passes). See the module docstring for which
    measure applies: accuracy points with labels, top-1 disagreement without (or when given)."""
    failures = []
    for name, m in sorted(metrics.items()):
        labelled = "accuracy_drop_points" in m
        limit_points = max_accuracy_drop_points
        if labelled and limit_points is not None and m["accuracy_drop_points"] > limit_points:
            failures.append(
                "%s: accuracy %s vs %s for FP32, %.2f points lost on %d labelled samples "
                "(at most %g allowed)"
                % (
                    name,
                    _percent(m["candidate_accuracy"]),
                    _percent(m["reference_accuracy"]),
                    m["accuracy_drop_points"],
                    m["labelled_samples"],
                    limit_points,
                )
            )
        limit = max_top1_disagreement
        if limit is None and not labelled:
            limit = DEFAULT_MAX_TOP1_DISAGREEMENT
        if limit is not None and "top1_disagreement" in m and m["top1_disagreement"] > limit:
            failures.append("%s: top-1 disagreement %.4f > %.4f" % (name, m["top1_disagreement"], limit))
        if min_cosine is not None and m["cosine_min"] < min_cosine:
            failures.append("%s: cosine similarity %.6f < %.6f" % (name, m["cosine_min"], min_cosine))
        if max_abs_error is not None and m["max_abs_error"] > max_abs_error:
            failures.append("%s: max abs error %.6g > %.6g" % (name, m["max_abs_error"], max_abs_error))
    return failures


def reference_outputs(onnx_path: str, inputs: Dict[str, Any]) -> Dict[str, Any]:
    try:
        from engine_builder.backends.ort_backend import OnnxRuntimeRunner

        with OnnxRuntimeRunner(onnx_path) as ref:
            return run_all(ref, inputs)
    except MissingDependency as exc:
        exc.hint = (
            exc.hint or ""
        ) + "; or give --samples with expected.* reference arrays (made on the controller)"
        raise


def compare(
    onnx_path: Optional[str],
    artifact_path: str,
    backend_name: str,
    samples_path: Optional[str] = None,
    count: int = 64,
    seed: int = 0,
    max_top1_disagreement: Optional[float] = None,
    min_cosine: Optional[float] = None,
    max_abs_error: Optional[float] = None,
    backend_kwargs: Optional[Dict[str, Any]] = None,
    max_accuracy_drop_points: Optional[float] = DEFAULT_MAX_ACCURACY_DROP_POINTS,
) -> Dict[str, Any]:
    backend = get_backend(backend_name, **(backend_kwargs or {}))
    with backend.runner(artifact_path) as runner:
        specs = runner.input_specs()
        labels = None
        expected: Dict[str, Any] = {}
        if samples_path:
            samples = load_samples(samples_path, specs)
            inputs, labels, expected = samples["inputs"], samples["labels"], samples["expected"]
        else:
            inputs = sample_inputs(specs, count, seed)
        candidate = run_all(runner, inputs)
    if expected:
        reference, source = expected, "golden expected outputs"
    elif onnx_path:
        reference, source = reference_outputs(onnx_path, inputs), "onnxruntime fp32"
    else:
        raise UsageError(
            "nothing to compare against: give the ONNX model or --samples with expected.* arrays"
        )
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise UsageError("candidate has no output(s) %s (it has: %s)" % (missing, sorted(candidate)))
    metrics = {name: output_metrics(reference[name], candidate[name], labels) for name in sorted(reference)}
    failures = gate(metrics, max_top1_disagreement, min_cosine, max_abs_error, max_accuracy_drop_points)
    labelled = any("accuracy_drop_points" in m for m in metrics.values())
    return {
        "backend": backend.name,
        "artifact": artifact_path,
        "reference": source,
        "samples": int(next(iter(inputs.values())).shape[0]),
        "labelled": labelled,
        "outputs": metrics,
        "accuracy": accuracy_summary(metrics, max_accuracy_drop_points),
        "gate": {
            "max_top1_disagreement": max_top1_disagreement
            if max_top1_disagreement is not None or labelled
            else DEFAULT_MAX_TOP1_DISAGREEMENT,
            "max_accuracy_drop_points": max_accuracy_drop_points if labelled else None,
            "min_cosine": min_cosine,
            "max_abs_error": max_abs_error,
        },
        "failures": failures,
        "passed": not failures,
    }


def accuracy_summary(
    metrics: Dict[str, Dict[str, Any]], max_drop_points: Optional[float]
) -> Optional[Dict[str, Any]]:
    """Both accuracies of the labelled output that lost the most (None without labels): what the
    gate record, the engine report and the rollout report show."""
    labelled = [(m["accuracy_drop_points"], n) for n, m in metrics.items() if "accuracy_drop_points" in m]
    if not labelled:
        return None
    name = max(labelled)[1]
    m = metrics[name]
    return {
        "output": name,
        "samples": m["labelled_samples"],
        "reference_accuracy": m["reference_accuracy"],
        "candidate_accuracy": m["candidate_accuracy"],
        "drop_points": m["accuracy_drop_points"],
        "max_drop_points": max_drop_points,
        "passed": max_drop_points is None or m["accuracy_drop_points"] <= max_drop_points,
    }
