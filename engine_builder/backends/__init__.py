"""Build backends behind one interface (see base.Backend). Each is imported only when chosen."""

from __future__ import annotations

import importlib
from typing import List

from engine_builder.backends.base import Backend
from engine_builder.errors import UsageError

_BACKENDS = {
    "onnxruntime": ("engine_builder.backends.ort_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("engine_builder.backends.trt_backend", "TensorRTBackend"),
    "trtexec": ("engine_builder.backends.trtexec_backend", "TrtexecBackend"),
}


def names() -> List[str]:
    return sorted(_BACKENDS)


def get_backend(name: str, **kwargs) -> Backend:
    """The backend called `name`; an unknown name is a usage error listing the known ones."""
    if name not in _BACKENDS:
        raise UsageError("unknown backend %r; choose one of: %s" % (name, ", ".join(names())))
    module_name, class_name = _BACKENDS[name]
    return getattr(importlib.import_module(module_name), class_name)(**kwargs)
