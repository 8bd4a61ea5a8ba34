"""What this machine is (Jetson module, L4T, SoC, GPU SM) and which backends it can use.

The identity and its tables are edge_common.identity's, the same parser the jetson_facts role's
module runs, so an engine's fingerprint and the robot's saved facts agree on what the robot is.
This module adds what only engine builds need: the fingerprint's view of the identity and the
trtexec / Python backend probes. `root` lets tests point at a fake filesystem.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional

from edge_common.identity import IDENTITY_KEYS, identity
from edge_common.identity import fingerprint_identity as identity_key  # what enters a fingerprint
from engine_builder._deps import optional

__all__ = [
    "IDENTITY_KEYS", "find_trtexec", "identity", "identity_key", "probe", "probe_backends",
    "trtexec_version", "trtexec_version_from_code",
]  # fmt: skip

TRTEXEC_DEFAULT = "/usr/src/tensorrt/bin/trtexec"
_BANNER_RE = re.compile(r"TensorRT\.trtexec \[TensorRT v(\d+)\]")


def trtexec_version_from_code(code: str) -> str:
    """Decode trtexec's banner number: `8502` -> 8.5.2, `100300` -> 10.3.0, `8400` -> 8.4.0."""
    number = int(code)
    if number >= 10000:
        return "%d.%d.%d" % (number // 10000, (number // 100) % 100, number % 100)
    return "%d.%d.%d" % (number // 1000, (number // 100) % 10, number % 100)


def find_trtexec(explicit: Optional[str] = None, root: str = "/") -> Optional[str]:
    """The Jetson location first (it is not on PATH there), then PATH."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    default = os.path.join(root, TRTEXEC_DEFAULT.lstrip("/"))
    if os.access(default, os.X_OK):
        return default
    return shutil.which("trtexec")


def trtexec_version(path: str, timeout: float = 60.0) -> Optional[str]:
    """Every trtexec run prints `&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # ...` first."""
    try:
        proc = subprocess.run(
            [path, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _BANNER_RE.search(proc.stdout.decode("utf-8", "replace"))
    return trtexec_version_from_code(match.group(1)) if match else None


def _module_version(name: str) -> Dict[str, Any]:
    try:
        module = optional(name)
    except Exception as exc:  # a broken install (missing .so) must not break the probe
        return {"available": False, "reason": "import failed: %s" % exc}
    if module is None:
        return {"available": False, "reason": "Python package '%s' is not installed" % name}
    return {"available": True, "version": str(getattr(module, "__version__", "unknown"))}


def probe_backends(root: str = "/", trtexec: Optional[str] = None) -> Dict[str, Dict[str, Any]]:
    backends = {"tensorrt": _module_version("tensorrt"), "onnxruntime": _module_version("onnxruntime")}
    ort = optional("onnxruntime") if backends["onnxruntime"]["available"] else None
    if ort is not None:
        backends["onnxruntime"]["providers"] = list(ort.get_available_providers())
    path = find_trtexec(trtexec, root)
    if path is None:
        backends["trtexec"] = {"available": False, "reason": "no trtexec at %s or on PATH" % TRTEXEC_DEFAULT}
    else:
        version = trtexec_version(path)
        backends["trtexec"] = {"available": version is not None, "path": path, "version": version}
        if version is None:
            backends["trtexec"]["reason"] = "could not read the version banner of %s" % path
    return backends


def probe(root: str = "/", trtexec: Optional[str] = None) -> Dict[str, Any]:
    """Everything `engine-builder probe` prints: device identity, backends, Python."""
    available: List[str] = []
    backends = probe_backends(root, trtexec)
    for name, info in sorted(backends.items()):
        if info.get("available"):
            available.append(name)
    return {
        "device": identity(root),
        "backends": backends,
        "available_backends": available,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "hostname": platform.node(),
    }
