"""Run a serialized TensorRT engine (8.5+ name-based tensor API: set_tensor_address, execute_async_v3)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from engine_builder._deps import require
from engine_builder.backends import cudart
from engine_builder.backends.base import Runner
from engine_builder.backends.trt_util import load_tensorrt, make_logger
from engine_builder.errors import BuildError
from engine_builder.tensors import TensorSpec


class TensorRTRunner(Runner):
    def __init__(self, engine_path: str, cuda: Optional[cudart.CudaRuntime] = None):
        self.engine_path = engine_path
        self._cuda = cuda
        self.engine = None
        self.context = None
        self.stream = 0
        self._buffers: Dict[str, List[int]] = {}  # name -> [pointer, nbytes]

    def activate(self) -> None:
        trt = load_tensorrt()
        np = require("numpy", "the tensorrt runner")
        self._np = np
        self._trt = trt
        self.cuda = self._cuda or cudart.load()
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        with open(self.engine_path, "rb") as fh:
            self.engine = self._runtime.deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise BuildError(
                "TensorRT %s could not load the engine %s" % (trt.__version__, self.engine_path),
                hint="engines are tied to the TensorRT version and GPU they were built on: "
                "rebuild on this device",
                details={"log_tail": self._logger.tail()},
            )
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream_create()
        self._names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]

    def deactivate(self) -> None:
        for ptr, _ in self._buffers.values():
            self.cuda.free(ptr)
        self._buffers.clear()
        if self.stream:
            self.cuda.stream_destroy(self.stream)
            self.stream = 0
        self.context = None
        self.engine = None

    def _specs(self, mode) -> List[TensorSpec]:
        out = []
        for name in self._names:
            if self.engine.get_tensor_mode(name) == mode:
                dtype = self._np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name))).name
                out.append(TensorSpec(name, [int(d) for d in self.engine.get_tensor_shape(name)], dtype))
        return out

    def input_specs(self) -> List[TensorSpec]:
        return self._specs(self._trt.TensorIOMode.INPUT)

    def output_specs(self) -> List[TensorSpec]:
        return self._specs(self._trt.TensorIOMode.OUTPUT)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        current = self._buffers.get(name)
        if current is None or current[1] < nbytes:
            if current is not None:
                self.cuda.free(current[0])
            current = [self.cuda.malloc(nbytes), nbytes]
            self._buffers[name] = current
        return current[0]

    def infer(self, feed: Dict[str, Any]) -> Dict[str, Any]:
        np = self._np
        for spec in self.input_specs():
            array = np.ascontiguousarray(feed[spec.name], dtype=spec.dtype)
            self.context.set_input_shape(spec.name, tuple(array.shape))
            ptr = self._device_buffer(spec.name, array.nbytes)
            self.cuda.htod(ptr, array)
            self.context.set_tensor_address(spec.name, ptr)
        outputs = {}
        for spec in self.output_specs():
            shape = tuple(int(d) for d in self.context.get_tensor_shape(spec.name))
            host = np.empty(shape, dtype=spec.dtype)
            ptr = self._device_buffer(spec.name, host.nbytes)
            self.context.set_tensor_address(spec.name, ptr)
            outputs[spec.name] = (host, ptr)
        if not self.context.execute_async_v3(self.stream):
            raise BuildError("TensorRT execution failed", details={"log_tail": self._logger.tail()})
        self.cuda.stream_synchronize(self.stream)
        result = {}
        for name, (host, ptr) in outputs.items():
            self.cuda.dtoh(host, ptr)
            result[name] = host
        return result
