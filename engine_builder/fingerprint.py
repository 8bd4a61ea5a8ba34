"""Engine cache key: one sha256 over everything that changes an engine.

Inputs: the ONNX file's sha256, the normalized build options, the precision, the backend name and
version, and the device identity (L4T, module, SoC, SM, CPU arch). The payload is canonical JSON
(sorted keys, no whitespace, None dropped), so the same inputs give the same key on any machine and
Python version, and changing any input gives a new key. Paths, hostnames and timing-cache locations
are deliberately not part of it: they do not change the engine.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Dict, Mapping

from engine_builder.device import identity_key
from engine_builder.errors import UsageError

SCHEMA = 1
PRECISIONS = ("fp32", "fp16", "int8")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def normalize(value: Any) -> Any:
    """Canonical form: dict keys as str, tuples as lists, None entries dropped, numbers as numbers."""
    if isinstance(value, Mapping):
        return {str(k): normalize(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return str(value)


def payload(
    *,
    onnx_sha256: str,
    backend: str,
    backend_version: str,
    precision: str,
    options: Mapping[str, Any],
    device: Mapping[str, Any],
) -> Dict[str, Any]:
    sha = onnx_sha256.lower()
    if not _SHA256_RE.match(sha):
        raise UsageError("onnx_sha256 must be 64 hex characters, got %r" % onnx_sha256)
    if precision.lower() not in PRECISIONS:
        raise UsageError("precision must be one of %s, got %r" % (", ".join(PRECISIONS), precision))
    return {
        "schema": SCHEMA,
        "onnx_sha256": sha,
        "backend": {"name": backend, "version": str(backend_version)},
        "precision": precision.lower(),
        "options": normalize(options),
        "device": normalize(identity_key(dict(device))),
    }


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint(**inputs: Any) -> str:
    """The engine's cache key (64 hex characters); takes the keyword arguments of `payload`."""
    return hashlib.sha256(canonical_json(payload(**inputs)).encode("ascii")).hexdigest()
