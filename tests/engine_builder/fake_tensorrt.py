"""TEST DOUBLE of the `tensorrt` Python module. It is not TensorRT and builds nothing real.

It records every call the tensorrt backend makes, so tests can assert the API used per TensorRT
version, and it exposes only the API that exists in that version (from FACTS.md): 10.x has no
`build_engine`, no `max_workspace_size`, no `BuilderFlag.STRICT_TYPES`, and adds
`NetworkDefinitionCreationFlag.STRONGLY_TYPED` and `IProgressMonitor`; `builder_optimization_level`
exists from 8.6. Touching a missing API raises AttributeError, as the real module would.
For parser errors, the 8.5 double offers only `node()` (no `node_name()`), so both paths of the
backend's error report are exercised. The real-device check is `engine-builder selftest`.
"""

from __future__ import annotations

import enum
import sys
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class Logger(ILogger):
    WARNING = Severity.WARNING

    def __init__(self, severity: Severity = Severity.WARNING) -> None:
        super().__init__()

    def log(self, severity: Severity, msg: str) -> None:
        pass


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1


class DeviceType(enum.IntEnum):
    GPU = 0
    DLA = 1


class LayerType(enum.IntEnum):
    CONVOLUTION = 0
    ACTIVATION = 1
    QUANTIZE = 2
    DEQUANTIZE = 3


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class FakeTensor:
    def __init__(self, name: str, shape: Sequence[int]):
        self.name = name
        self.shape = tuple(shape)


class FakeLayer:
    def __init__(self, kind: LayerType):
        self.type = kind


class FakeNetwork:
    def __init__(self, module: FakeModule, flags: int):
        self.flags = flags
        self._inputs = [FakeTensor(n, s) for n, s in module.scenario["inputs"]]
        kinds = [LayerType.CONVOLUTION, LayerType.ACTIVATION]
        if module.scenario["qdq"]:
            kinds = [LayerType.QUANTIZE, LayerType.DEQUANTIZE, *kinds]
        self._layers = [FakeLayer(k) for k in kinds]

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    def get_input(self, i: int) -> FakeTensor:
        return self._inputs[i]

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_layer(self, i: int) -> FakeLayer:
        return self._layers[i]


class FakeParserError:
    def __init__(self, desc: str, node: int, node_name: str):
        self._desc, self._node, self._node_name = desc, node, node_name

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node


class FakeParserErrorWithName(FakeParserError):
    def node_name(self) -> str:
        return self._node_name


class FakeTimingCache:
    def __init__(self, data: bytes):
        self.data = data

    def serialize(self) -> bytes:
        return b"timing-cache:" + self.data[:16]


class FakeProfile:
    def __init__(self, module: FakeModule):
        self._m = module

    def set_shape(self, name: str, min: Sequence[int], opt: Sequence[int], max: Sequence[int]) -> None:
        self._m.record("profile.set_shape", name, tuple(min), tuple(opt), tuple(max))


class FakeHostMemory(bytes):
    """IHostMemory stand-in: supports the buffer protocol like the real one."""


class FakeModule(types.ModuleType):
    """The fake `tensorrt` module for one version."""

    def __init__(self, version: str, **scenario: Any):
        super().__init__("tensorrt")
        self.__version__ = version
        self.major = int(version.split(".")[0])
        self.minor = int(version.split(".")[1])
        self.calls: List[Tuple[Any, ...]] = []
        self.scenario: Dict[str, Any] = {
            "inputs": [("input", (1, 3, 8, 8))],
            "qdq": False,
            "parse_ok": True,
            "parse_errors": [],
            "build_ok": True,
            "num_dla_cores": 0,
        }
        self.scenario.update(scenario)
        module = self

        flag_names = (
            ["EXPLICIT_BATCH", "EXPLICIT_PRECISION"]
            if self.major < 10
            else ["EXPLICIT_BATCH", "STRONGLY_TYPED"]
        )
        self.NetworkDefinitionCreationFlag = enum.IntEnum(
            "NetworkDefinitionCreationFlag", flag_names, start=0
        )
        builder_flags = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT"]
        if self.major < 10:
            builder_flags.append("STRICT_TYPES")
        self.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags, start=0)
        self.ILogger, self.Logger = ILogger, Logger
        self.MemoryPoolType, self.DeviceType, self.LayerType = MemoryPoolType, DeviceType, LayerType
        self.TensorIOMode = TensorIOMode

        if self.major >= 10:

            class IProgressMonitor:
                def __init__(self) -> None:
                    module.record("IProgressMonitor.__init__")

            self.IProgressMonitor = IProgressMonitor

        config_attrs = {"default_device_type", "DLA_core"}
        if self.major < 10:
            config_attrs.add("max_workspace_size")
        if (self.major, self.minor) >= (8, 6):
            config_attrs.add("builder_optimization_level")
        if self.major >= 10:
            config_attrs.add("progress_monitor")

        class IBuilderConfig:
            def __init__(self) -> None:
                object.__setattr__(self, "flags", set())
                object.__setattr__(self, "values", {})

            def __setattr__(self, name: str, value: Any) -> None:
                if name not in config_attrs:
                    raise AttributeError("'tensorrt.IBuilderConfig' object has no attribute '%s'" % name)
                module.record("config." + name, value)
                self.values[name] = value

            def __getattr__(self, name: str) -> Any:
                if name in config_attrs:
                    return self.values.get(name)
                raise AttributeError("'tensorrt.IBuilderConfig' object has no attribute '%s'" % name)

            def set_flag(self, flag: Any) -> None:
                module.record("config.set_flag", flag.name)
                self.flags.add(flag.name)

            def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
                module.record("config.set_memory_pool_limit", pool.name, size)

            def add_optimization_profile(self, profile: FakeProfile) -> int:
                module.record("config.add_optimization_profile")
                return 0

            def create_timing_cache(self, data: bytes) -> FakeTimingCache:
                module.record("config.create_timing_cache", bytes(data))
                return FakeTimingCache(bytes(data))

            def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
                module.record("config.set_timing_cache", ignore_mismatch)
                self.values["_cache"] = cache
                return True

            def get_timing_cache(self) -> FakeTimingCache:
                return self.values["_cache"]

        class Builder:
            def __init__(self, logger: ILogger) -> None:
                module.record("Builder", type(logger).__name__)
                self.logger = logger
                self.num_DLA_cores = module.scenario["num_dla_cores"]
                self.platform_has_fast_fp16 = True

            def create_network(self, flags: int = 0) -> FakeNetwork:
                module.record("builder.create_network", flags)
                return FakeNetwork(module, flags)

            def create_builder_config(self) -> IBuilderConfig:
                module.record("builder.create_builder_config")
                return IBuilderConfig()

            def create_optimization_profile(self) -> FakeProfile:
                module.record("builder.create_optimization_profile")
                return FakeProfile(module)

            def build_serialized_network(
                self, network: FakeNetwork, config: IBuilderConfig
            ) -> Optional[bytes]:
                module.record("builder.build_serialized_network")
                monitor = config.values.get("progress_monitor")
                if monitor is not None:  # what the real builder does from its threads
                    monitor.phase_start("Building engine", None, 2)
                    monitor.step_complete("Building engine", 0)
                    monitor.step_complete("Building engine", 1)
                    monitor.phase_finish("Building engine")
                self.logger.log(Severity.WARNING, "fake builder warning")
                if not module.scenario["build_ok"]:
                    self.logger.log(Severity.ERROR, "fake: out of memory")
                    return None
                return FakeHostMemory(b"FAKE-ENGINE-" + module.__version__.encode())

        if self.major < 10:

            def build_engine(self, network, config):
                module.record("builder.build_engine")
                raise AssertionError("build_engine is deprecated: the backend must not call it")

            Builder.build_engine = build_engine

        error_cls = FakeParserErrorWithName if (self.major, self.minor) >= (8, 6) else FakeParserError

        class OnnxParser:
            def __init__(self, network: FakeNetwork, logger: ILogger) -> None:
                module.record("OnnxParser")
                self._errors = [error_cls(*e) for e in module.scenario["parse_errors"]]

            def parse_from_file(self, path: str) -> bool:
                module.record("parser.parse_from_file", path)
                return bool(module.scenario["parse_ok"])

            @property
            def num_errors(self) -> int:
                return len(self._errors)

            def get_error(self, i: int) -> FakeParserError:
                return self._errors[i]

        self.Builder, self.OnnxParser = Builder, OnnxParser

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))

    def names(self) -> List[str]:
        return [c[0] for c in self.calls]

    def find(self, name: str) -> List[Tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


def install(monkeypatch, version: str, **scenario: Any) -> FakeModule:
    """Put a fake `tensorrt` of `version` into sys.modules for the duration of a test."""
    fake = FakeModule(version, **scenario)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


# --------------------------------------------------------------------------- runtime side
class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


def _nptype(dtype: DataType):
    import numpy as np

    return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8}[dtype]


class FakeCuda:
    """TEST DOUBLE of the CUDA runtime wrapper: device memory is numpy byte arrays keyed by address."""

    def __init__(self) -> None:
        self.memory: Dict[int, Any] = {}
        self.freed: List[int] = []
        self.streams: List[int] = []
        self._next = 0x1000

    def malloc(self, nbytes: int) -> int:
        import numpy as np

        self._next += 0x1000
        self.memory[self._next] = np.zeros(nbytes, dtype=np.uint8)
        return self._next

    def free(self, ptr: int) -> None:
        self.freed.append(ptr)
        del self.memory[ptr]

    def htod(self, dst: int, array: Any) -> None:
        raw = array.reshape(-1).view("uint8")
        self.memory[dst][: raw.size] = raw

    def dtoh(self, array: Any, src: int) -> None:
        raw = array.reshape(-1).view("uint8")
        raw[:] = self.memory[src][: raw.size]

    def stream_create(self) -> int:
        self.streams.append(77)
        return 77

    def stream_synchronize(self, stream: int) -> None:
        assert stream == 77

    def stream_destroy(self, stream: int) -> None:
        self.streams.remove(stream)


def add_runtime(fake: FakeModule, cuda: FakeCuda) -> None:
    """Engine loading and execution: the fake engine's output is logits[b, j] = sum(input[b]) * (j + 1)."""
    import numpy as np

    fake.DataType = DataType
    fake.nptype = _nptype
    shapes = {"input": (-1, 3, 8, 8), "logits": (-1, 10)}
    modes = {"input": TensorIOMode.INPUT, "logits": TensorIOMode.OUTPUT}

    class Context:
        def __init__(self) -> None:
            self.shapes: Dict[str, Tuple[int, ...]] = {}
            self.addresses: Dict[str, int] = {}

        def set_input_shape(self, name: str, shape: Tuple[int, ...]) -> bool:
            fake.record("context.set_input_shape", name, tuple(shape))
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            return (self.shapes["input"][0], 10) if name == "logits" else self.shapes[name]

        def set_tensor_address(self, name: str, ptr: int) -> bool:
            fake.record("context.set_tensor_address", name)
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream: int) -> bool:
            fake.record("context.execute_async_v3", stream)
            n = int(np.prod(self.shapes["input"]))
            x = cuda.memory[self.addresses["input"]][: n * 4].view(np.float32).reshape(self.shapes["input"])
            out = x.reshape(x.shape[0], -1).sum(axis=1)[:, None] * np.arange(1, 11, dtype=np.float32)
            cuda.memory[self.addresses["logits"]][: out.nbytes] = (
                out.astype(np.float32).reshape(-1).view(np.uint8)
            )
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["input", "logits"][i]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return modes[name]

        def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
            return shapes[name]

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType.FLOAT

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            fake.record("Runtime")

        def deserialize_cuda_engine(self, data: bytes) -> Optional[Engine]:
            fake.record("runtime.deserialize_cuda_engine", len(data))
            return Engine() if bytes(data).startswith(b"FAKE-ENGINE-") else None

    fake.Runtime = Runtime
