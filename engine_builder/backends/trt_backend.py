"""TensorRT through its Python API, with the branches for 8.5 (JetPack 5.1), 8.6 (JetPack 6.0) and
10.x (JetPack 6.1/6.2).

What differs by version (FACTS.md):
- network: 8.x needs `create_network(1 << EXPLICIT_BATCH)`; 10.x takes `create_network(0)`, or the
  STRONGLY_TYPED flag for a Q/DQ (int8) model.
- precision: fp16 sets the FP16 flag everywhere; int8 comes only from a Q/DQ model: on 8.x set the
  INT8 and FP16 flags, on 10.x use strong typing and no precision flags. No calibrators (deprecated
  from 10.1): quantization happens on the controller.
- `builder_optimization_level` exists from 8.6; `IProgressMonitor` only in 10.x.
- Common to all: `set_memory_pool_limit(WORKSPACE, ...)` (never `max_workspace_size`),
  `build_serialized_network` (never `build_engine`), a timing cache per device with
  `ignore_mismatch=False`, one optimization profile for dynamic inputs, DLA with GPU fallback.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from edge_common.fsutil import atomic_write
from engine_builder.backends.base import Backend, Runner
from engine_builder.backends.trt_util import api_branch, load_tensorrt, make_logger
from engine_builder.errors import BuildError, UsageError
from engine_builder.options import BuildOptions
from engine_builder.progress import Progress


def make_progress_monitor(trt, progress: Progress):
    """IProgressMonitor (10.x) forwarding builder phases to our progress; must be thread-safe,
    which Progress is."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            progress.phase_start(phase_name, num_steps)

        def step_complete(self, phase_name, step) -> bool:
            progress.step(phase_name, step + 1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name) -> None:
            progress.phase_finish(phase_name)

    return Monitor()


def network_flags(trt, branch: str, precision: str) -> int:
    kind = trt.NetworkDefinitionCreationFlag
    if branch == "10":
        return (1 << int(kind.STRONGLY_TYPED)) if precision == "int8" else 0
    return 1 << int(kind.EXPLICIT_BATCH)


def parser_errors(parser) -> List[Dict[str, Any]]:
    """Parser errors with the node they concern (by name where the version can say it)."""
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        entry: Dict[str, Any] = {"desc": str(err.desc()), "node_index": int(err.node())}
        node_name = getattr(err, "node_name", None)
        if callable(node_name):
            entry["node_name"] = str(node_name())
        node_op = getattr(err, "node_operator", None)
        if callable(node_op):
            entry["node_operator"] = str(node_op())
        errors.append(entry)
    return errors


def has_qdq_layers(trt, network) -> bool:
    kinds = (trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE)
    return any(network.get_layer(i).type in kinds for i in range(network.num_layers))


def _inputs(network) -> List[Tuple[str, List[int]]]:
    out = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        out.append((tensor.name, [int(d) for d in tensor.shape]))
    return out


def _add_profile(builder, network, config, options: BuildOptions) -> Optional[Dict[str, Any]]:
    inputs = dict(_inputs(network))
    unknown = sorted(set(options.shapes) - set(inputs))
    if unknown:
        raise UsageError(
            "shapes given for %s, but the network inputs are: %s"
            % (", ".join(unknown), ", ".join(sorted(inputs)))
        )
    missing = sorted(
        name for name, dims in inputs.items() if any(d < 0 for d in dims) and name not in options.shapes
    )
    if missing:
        raise UsageError(
            "input(s) %s have dynamic dimensions %s; give --min-shapes/--opt-shapes/--max-shapes for them"
            % (", ".join(missing), {n: inputs[n] for n in missing})
        )
    if not options.shapes:
        return None
    profile = builder.create_optimization_profile()
    for name, rng in sorted(options.shapes.items()):
        dims = inputs[name]
        if len(dims) != len(rng.opt) or any(d >= 0 and d != o for d, o in zip(dims, rng.opt)):
            raise UsageError("shapes for %r (%s) do not fit the network input %s" % (name, rng.opt, dims))
        profile.set_shape(name, rng.min, rng.opt, rng.max)
    config.add_optimization_profile(profile)
    return {name: rng.as_dict() for name, rng in options.shapes.items()}


def configure(
    trt, branch: str, builder, network, config, options: BuildOptions, progress: Progress
) -> Dict[str, Any]:
    """Apply the options to the builder config; returns facts for the manifest."""
    facts: Dict[str, Any] = {"api_branch": branch}
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)

    qdq = has_qdq_layers(trt, network)
    facts["qdq"] = qdq
    if options.precision == "int8":
        if not qdq:
            raise BuildError(
                "precision int8 needs a Q/DQ model, but the network has no Quantize/Dequantize layers",
                hint="quantize on the controller: engine-builder quantize MODEL.onnx --calibration DIR",
            )
        if branch != "10":  # 8.x: explicit quantization still needs the precision flags
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)
    elif options.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)

    facts["profile"] = _add_profile(builder, network, config, options)

    if options.builder_optimization_level is not None:
        if branch == "8.5":
            raise UsageError("builder optimization level needs TensorRT 8.6 or newer (this is 8.5)")
        config.builder_optimization_level = options.builder_optimization_level

    if options.dla_core is not None:
        cores = int(builder.num_DLA_cores)
        if options.dla_core >= cores:
            raise BuildError(
                "DLA core %d requested, but this device has %d DLA core(s)" % (options.dla_core, cores),
                hint="AGX Orin and Orin NX have DLA cores; the Orin Nano has none: drop --dla-core",
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        if options.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        facts["dla_core"] = options.dla_core

    if branch == "10":
        config.progress_monitor = make_progress_monitor(trt, progress)
    return facts


def load_timing_cache(config, path: Optional[str]):
    """The device's timing cache (empty if new); a cache from another device/version is an error
    (ignore_mismatch=False), which is why one is kept per device."""
    if not path:
        return None
    data = b""
    if os.path.exists(path):
        with open(path, "rb") as fh:
            data = fh.read()
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        raise BuildError(
            "timing cache %s does not match this device or TensorRT version" % path,
            hint="timing caches are per device: delete it or point --timing-cache at this device's file",
        )
    return cache


class TensorRTBackend(Backend):
    name = "tensorrt"
    package = "tensorrt"
    artifact_suffix = ".engine"

    def version(self) -> str:
        return str(load_tensorrt().__version__)

    def build(
        self, onnx_path: str, artifact_path: str, options: BuildOptions, progress: Progress
    ) -> Dict[str, Any]:
        trt = load_tensorrt()
        branch = api_branch(trt.__version__)
        logger = make_logger(trt)
        builder = trt.Builder(logger)
        network = builder.create_network(network_flags(trt, branch, options.precision))
        parser = trt.OnnxParser(network, logger)
        progress.phase_start("parse ONNX")
        ok = parser.parse_from_file(os.path.abspath(onnx_path))
        progress.phase_finish("parse ONNX")
        if not ok:
            errors = parser_errors(parser)
            names = ", ".join(e.get("node_name") or "#%d" % e["node_index"] for e in errors) or "?"
            raise BuildError(
                "TensorRT %s could not parse %s (failing nodes: %s)" % (trt.__version__, onnx_path, names),
                hint="check the ops and opset against this TensorRT version's ONNX support",
                details={"parser_errors": errors, "log_tail": logger.tail()},
            )
        config = builder.create_builder_config()
        facts = configure(trt, branch, builder, network, config, options, progress)
        load_timing_cache(config, options.timing_cache)

        if branch != "10":
            progress.phase_start("build engine")
        serialized = builder.build_serialized_network(network, config)
        if branch != "10":
            progress.phase_finish("build engine")
        if serialized is None:
            raise BuildError(
                "TensorRT %s failed to build an engine from %s" % (trt.__version__, onnx_path),
                details={"log_tail": logger.tail()},
            )
        with open(artifact_path, "wb") as fh:
            fh.write(serialized)
        if options.timing_cache:
            atomic_write(options.timing_cache, bytes(config.get_timing_cache().serialize()))
        facts["warnings"] = [line for line in logger.tail(20) if "WARNING" in line]
        return facts

    def runner(self, artifact_path: str) -> Runner:
        from engine_builder.backends.trt_runtime import TensorRTRunner

        return TensorRTRunner(artifact_path)
