"""Lazy imports of heavy or optional libraries, with an install hint when one is missing."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from engine_builder.errors import MissingDependency, UsageError

INSTALL_HINTS = {
    "numpy": "pip install numpy (on a Jetson: sudo apt-get install python3-numpy)",
    "onnx": "pip install 'edge-deploy[onnx]' (or: pip install onnx)",
    "onnxruntime": "pip install 'edge-deploy[onnx]' (or: pip install onnxruntime)",
    "tensorrt": (
        "TensorRT ships with JetPack: sudo apt-get install python3-libnvinfer "
        "(or nvidia-tensorrt); it cannot be installed from PyPI on a Jetson"
    ),
    "torch": "pip install 'edge-deploy[torch]' (or: pip install torch)",
    "matplotlib": "pip install matplotlib",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` or raise MissingDependency naming the package and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        hint = INSTALL_HINTS.get(package, "pip install %s" % package)
        raise MissingDependency(package, purpose, hint, cause=str(exc)) from exc


def optional(module: str):
    """Import `module` if it is installed, else return None."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def load_callable(spec: str, what: str):
    """`package.module:name` -> the object (modules are looked up from the current directory too)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError("%s must be given as module:callable, got %r" % (what, spec))
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError("cannot load %s %s: %s" % (what, spec, exc)) from exc
