"""`engine-builder quantize`: FP32 ONNX + calibration data -> Q/DQ INT8 ONNX (controller side).

TensorRT needs symmetric INT8 activations and weights and per-channel weights; every argument of
`quantize_static` is passed explicitly because its defaults changed between onnxruntime versions.
Biases stay float (QuantizeBias False), as NVIDIA's ModelOpt does for TensorRT.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional

from engine_builder._deps import load_callable, require
from engine_builder.errors import CalibrationError, UsageError
from engine_builder.tensors import TensorSpec

MAX_CALIBRATION_SAMPLES = 100000


def quantize_settings() -> Dict[str, Any]:
    """The fixed, TensorRT-compatible settings (also written into the result JSON)."""
    q = require("onnxruntime.quantization", "quantize")
    return {
        "quant_format": q.QuantFormat.QDQ,
        "op_types_to_quantize": None,
        "per_channel": True,
        "reduce_range": False,
        "activation_type": q.QuantType.QInt8,
        "weight_type": q.QuantType.QInt8,
        "nodes_to_quantize": None,
        "nodes_to_exclude": None,
        "use_external_data_format": False,
        "calibrate_method": q.CalibrationMethod.MinMax,
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": False,
            "DedicatedQDQPair": False,
            "EnableSubgraph": False,
            "ForceQuantizeNoInputCheck": False,
            "CalibMovingAverage": False,
        },
    }


def model_inputs(onnx_path: str) -> List[TensorSpec]:
    from engine_builder.backends.ort_backend import OnnxRuntimeRunner

    with OnnxRuntimeRunner(onnx_path) as runner:
        return runner.input_specs()


def _check_sample(spec: TensorSpec, array: Any, source: str) -> Any:
    """Accept a batch (rank of the input) or a single sample (rank - 1, batch axis added)."""
    np = require("numpy", "quantize")
    array = np.asarray(array)
    if array.ndim == len(spec.shape) - 1:
        array = array[None, ...]
    if array.ndim != len(spec.shape):
        raise CalibrationError(
            "calibration data %s: array of shape %s does not fit input %r of shape %s"
            % (source, list(array.shape), spec.name, spec.shape),
            hint="save arrays shaped like the input (a batch) or like one sample",
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape)):
        if isinstance(want, int) and want > 0 and axis > 0 and want != got:
            raise CalibrationError(
                "calibration data %s: dimension %d is %d but input %r needs %d "
                "(input shape %s, array shape %s)"
                % (source, axis, got, spec.name, want, spec.shape, list(array.shape))
            )
    return array.astype(np.dtype(spec.dtype), copy=False)


def folder_samples(folder: str, specs: List[TensorSpec]) -> List[Dict[str, Any]]:
    """Feeds from a folder of .npy (single-input models) or .npz (keyed by input name) files."""
    np = require("numpy", "quantize")
    if not os.path.isdir(folder):
        raise CalibrationError("calibration folder %s does not exist" % folder)
    files = sorted(f for f in os.listdir(folder) if f.endswith((".npy", ".npz")))
    if not files:
        raise CalibrationError(
            "empty calibration set: no .npy or .npz files in %s" % folder,
            hint="save a few hundred representative inputs there (numpy.save / numpy.savez)",
        )
    feeds: List[Dict[str, Any]] = []
    for name in files:
        path = os.path.join(folder, name)
        if name.endswith(".npy"):
            if len(specs) != 1:
                raise CalibrationError(
                    "%s: .npy files only work for single-input models; this one has inputs %s: "
                    "use .npz keyed by input name" % (path, [s.name for s in specs])
                )
            arrays = {specs[0].name: np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        missing = [s.name for s in specs if s.name not in arrays]
        if missing:
            raise CalibrationError("%s has no array for input(s) %s" % (path, missing))
        feed = {s.name: _check_sample(s, arrays[s.name], path) for s in specs}
        feeds.extend(_split(feed, specs))
    return feeds


def _split(feed: Dict[str, Any], specs: List[TensorSpec]) -> List[Dict[str, Any]]:
    """One feed per sample when the model's batch is static 1; else the whole batch at once."""
    first = specs[0].shape[0] if specs[0].shape else None
    n = int(next(iter(feed.values())).shape[0])
    if isinstance(first, int) and first > 0:
        if n % first:
            raise CalibrationError(
                "batch of %d samples does not split into the model's batch %d" % (n, first)
            )
        return [{k: v[i : i + first] for k, v in feed.items()} for i in range(0, n, first)]
    return [feed]


def reader_samples(spec: str, specs: List[TensorSpec]) -> List[Dict[str, Any]]:
    """Feeds from a user data reader `module:callable` (the callable returns an iterable of dicts,
    or an onnxruntime CalibrationDataReader)."""
    source = load_callable(spec, "data reader")()
    feeds = []
    for item in _iterate(source):
        if len(feeds) >= MAX_CALIBRATION_SAMPLES:
            break
        missing = [s.name for s in specs if s.name not in item]
        if missing:
            raise CalibrationError("data reader %s gave a sample without input(s) %s" % (spec, missing))
        feeds.extend(_split({s.name: _check_sample(s, item[s.name], spec) for s in specs}, specs))
    if not feeds:
        raise CalibrationError("empty calibration set: data reader %s gave no samples" % spec)
    return feeds


def _iterate(source: Any) -> Iterator[Dict[str, Any]]:
    if hasattr(source, "get_next"):
        while True:
            item = source.get_next()
            if item is None:
                return
            yield item
    else:
        yield from source


def make_reader(feeds: List[Dict[str, Any]]):
    q = require("onnxruntime.quantization", "quantize")

    class ListReader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(feeds)

    return ListReader()


def quantize(
    onnx_path: str,
    output: str,
    calibration: Optional[str] = None,
    data_reader: Optional[str] = None,
    eval_samples: Optional[str] = None,
) -> Dict[str, Any]:
    """Write the Q/DQ model to `output`; with `eval_samples` (npz with labels), report accuracies."""
    from edge_common.fsutil import atomic_path, sha256_file
    from engine_builder.onnx_tools import check

    q = require("onnxruntime.quantization", "quantize")
    check(onnx_path)
    specs = model_inputs(onnx_path)
    if bool(calibration) == bool(data_reader):
        raise UsageError("give exactly one of --calibration DIR or --data-reader module:callable")
    feeds = folder_samples(calibration, specs) if calibration else reader_samples(data_reader, specs)
    settings = quantize_settings()
    with atomic_path(output, suffix=".onnx") as tmp:
        q.quantize_static(
            model_input=onnx_path,
            model_output=str(tmp),
            calibration_data_reader=make_reader(feeds),
            **settings,
        )
    result: Dict[str, Any] = {
        "input": onnx_path,
        "output": output,
        "sha256": sha256_file(output),
        "calibration_batches": len(feeds),
        "settings": {
            k: (v if isinstance(v, (dict, bool, type(None))) else str(v).split(".")[-1])
            for k, v in settings.items()
        },
    }
    if eval_samples:
        result["accuracy"] = evaluate(onnx_path, output, eval_samples)
    return result


def evaluate(fp32_path: str, int8_path: str, samples_path: str) -> Dict[str, Any]:
    """FP32 vs INT8 on held-out samples: accuracy against labels and top-1 agreement."""
    from engine_builder.backends.ort_backend import OnnxRuntimeRunner
    from engine_builder.compare import output_metrics, run_all
    from engine_builder.tensors import load_samples

    with OnnxRuntimeRunner(fp32_path) as fp32, OnnxRuntimeRunner(int8_path) as int8:
        samples = load_samples(samples_path, fp32.input_specs())
        ref = run_all(fp32, samples["inputs"])
        cand = run_all(int8, samples["inputs"])
    name = sorted(ref)[0]
    m = output_metrics(ref[name], cand[name], samples["labels"])
    out = {"output": name, "samples": int(ref[name].shape[0]), "top1_agreement": m.get("top1_agreement")}
    if "reference_accuracy" in m:
        out.update(
            {
                "fp32_accuracy": m["reference_accuracy"],
                "int8_accuracy": m["candidate_accuracy"],
                "accuracy_drop_points": round(100.0 * (m["reference_accuracy"] - m["candidate_accuracy"]), 4),
            }
        )
    return out
