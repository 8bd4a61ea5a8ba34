"""The few CUDA runtime calls a TensorRT runner needs, through ctypes.

On a Jetson libcudart comes with JetPack; using it directly keeps the robot side free of pycuda or
cuda-python, which are not part of JetPack.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any, List

from engine_builder.errors import MissingDependency

H2D, D2H = 1, 2  # cudaMemcpyKind
_CANDIDATES = ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0", "/usr/local/cuda/lib64/libcudart.so")


class CudaError(RuntimeError):
    pass


class CudaRuntime:
    def __init__(self, lib: Any):
        self.lib = lib
        lib.cudaGetErrorString.restype = ctypes.c_char_p

    def _check(self, code: int, what: str) -> None:
        if code != 0:
            text = self.lib.cudaGetErrorString(code)
            raise CudaError("%s failed: CUDA error %d (%s)" % (what, code, text.decode() if text else "?"))

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
        return int(ptr.value)

    def free(self, ptr: int) -> None:
        self._check(self.lib.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def htod(self, dst: int, array: Any) -> None:
        src = ctypes.c_void_p(array.ctypes.data)
        self._check(
            self.lib.cudaMemcpy(ctypes.c_void_p(dst), src, ctypes.c_size_t(array.nbytes), H2D), "cudaMemcpy"
        )

    def dtoh(self, array: Any, src: int) -> None:
        dst = ctypes.c_void_p(array.ctypes.data)
        self._check(
            self.lib.cudaMemcpy(dst, ctypes.c_void_p(src), ctypes.c_size_t(array.nbytes), D2H), "cudaMemcpy"
        )

    def stream_create(self) -> int:
        stream = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return int(stream.value or 0)

    def stream_synchronize(self, stream: int) -> None:
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def stream_destroy(self, stream: int) -> None:
        self._check(self.lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")


def load() -> CudaRuntime:
    errors: List[str] = []
    names = list(_CANDIDATES)
    found = ctypes.util.find_library("cudart")
    if found:
        names.insert(0, found)
    for name in names:
        try:
            return CudaRuntime(ctypes.CDLL(name))
        except OSError as exc:
            errors.append(str(exc))
    raise MissingDependency(
        "libcudart",
        "running a TensorRT engine",
        "the CUDA runtime ships with JetPack (package cuda-cudart-*); "
        "is /usr/local/cuda/lib64 on the loader path?",
        cause="; ".join(errors[:2]),
        what="the library",
    )
