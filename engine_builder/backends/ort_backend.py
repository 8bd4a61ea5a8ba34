"""onnxruntime on the CPU: the artifact is the optimized ONNX model onnxruntime writes.

Runs everywhere, so the simulated fleet exercises every path around the engine for real.
"""

from __future__ import annotations

from typing import Any, Dict, List

from engine_builder._deps import require
from engine_builder.backends.base import Backend, Runner
from engine_builder.errors import BuildError, UsageError
from engine_builder.options import BuildOptions
from engine_builder.progress import Progress
from engine_builder.tensors import TensorSpec

# onnxruntime type strings -> numpy dtype names
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _ort():
    return require("onnxruntime", "the onnxruntime backend")


def int8_kernels_saturate(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether onnxruntime's fused INT8 kernels saturate on this CPU: an x86-64 CPU without VNNI,
    where its U8S8 path (VPMADDUBSW) sums pairs in int16 and clips (onnxruntime's quantization
    docs). The digits example's INT8 model then differs from FP32 by 13 logits instead of 1.1."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return not ({"avx512_vnni", "avx_vnni"} & set(flags))
    except OSError:
        pass
    return False


def session_options(level: str = "all", threads: int = 0):
    ort = _ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    # Artifacts are ONNX whatever their name: without this a path ending in .ort is read as ORT format.
    opts.add_session_config_entry("session.load_model_format", "ONNX")
    if _SATURATING_CPU[0] is None:
        _SATURATING_CPU[0] = int8_kernels_saturate()
    if _SATURATING_CPU[0]:
        # Q/DQ nodes stay unfused (dequantize, float op, quantize): the INT8 model's numbers are
        # right on this CPU, at float speed. TensorRT on a Jetson never takes this path.
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return opts


_SATURATING_CPU: List[Any] = [None]  # int8_kernels_saturate(), asked once per process


def _specs(args) -> List[TensorSpec]:
    return [TensorSpec(a.name, list(a.shape), _ORT_TYPES.get(a.type, a.type)) for a in args]


class OnnxRuntimeRunner(Runner):
    def __init__(self, model_path: str, threads: int = 0):
        self.model_path = model_path
        self.threads = threads
        self.session = None
        self._outputs: List[str] = []

    def activate(self) -> None:
        ort = _ort()
        self.session = ort.InferenceSession(
            self.model_path,
            sess_options=session_options("all", self.threads),
            providers=["CPUExecutionProvider"],
        )
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._run = self.session.run  # bound once: infer() sits in every timed loop

    def deactivate(self) -> None:
        self.session = None

    def input_specs(self) -> List[TensorSpec]:
        return _specs(self.session.get_inputs())

    def output_specs(self) -> List[TensorSpec]:
        return _specs(self.session.get_outputs())

    def infer(self, feed: Dict[str, Any]) -> Dict[str, Any]:
        return dict(zip(self._outputs, self._run(self._outputs, feed)))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    package = "onnxruntime"
    artifact_suffix = ".ort.onnx"

    def __init__(self, threads: int = 0):
        self.threads = threads

    def version(self) -> str:
        return str(_ort().__version__)

    def check_options(self, options: BuildOptions) -> None:
        if options.precision == "fp16":
            raise UsageError(
                "the onnxruntime CPU backend has no fp16 build",
                hint="use --precision fp32, or int8 with a Q/DQ model made by `engine-builder quantize`",
            )
        unsupported = options.non_default_tensorrt_options()
        if unsupported:
            raise UsageError(
                "the onnxruntime backend does not take: %s" % ", ".join("--" + n for n in unsupported)
            )

    def build(
        self, onnx_path: str, artifact_path: str, options: BuildOptions, progress: Progress
    ) -> Dict[str, Any]:
        ort = _ort()
        opts = session_options(options.ort_optimization, self.threads)
        opts.optimized_model_filepath = artifact_path
        progress.phase_start("onnxruntime optimize")
        try:
            session = ort.InferenceSession(onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types, not importable lazily
            if "INVALID_PROTOBUF" in str(exc) or "Protobuf parsing failed" in str(exc):
                from engine_builder.onnx_tools import corrupt

                raise corrupt(
                    onnx_path, "it does not parse as an ONNX model", {"log_tail": [str(exc)]}
                ) from exc
            raise BuildError(
                "onnxruntime could not load %s: %s" % (onnx_path, exc),
                hint="run `engine-builder check` on the model first",
                details={"log_tail": [str(exc)]},
            ) from exc
        finally:
            progress.phase_finish("onnxruntime optimize")
        if options.precision == "int8" and not has_qdq_nodes(onnx_path):
            raise BuildError(
                "precision int8 needs a Q/DQ model, but %s has no QuantizeLinear/DequantizeLinear nodes"
                % onnx_path,
                hint="quantize it on the controller: engine-builder quantize MODEL.onnx --calibration DIR",
            )
        return {
            "providers": session.get_providers(),
            "optimization": options.ort_optimization,
            "inputs": [s.as_dict() for s in _specs(session.get_inputs())],
            "outputs": [s.as_dict() for s in _specs(session.get_outputs())],
        }

    def runner(self, artifact_path: str) -> Runner:
        return OnnxRuntimeRunner(artifact_path, self.threads)


def has_qdq_nodes(model_path: str) -> bool:
    """Whether a model carries Q/DQ nodes, without the onnx package (robot side): op types are
    stored as plain strings in the protobuf, so a byte search is enough for this yes/no question."""
    with open(model_path, "rb") as fh:
        data = fh.read()
    return b"QuantizeLinear" in data and b"DequantizeLinear" in data
