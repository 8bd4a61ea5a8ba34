"""`engine-builder build`: fingerprint, cache check, build through a backend, atomic write, manifest."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping, Optional

from edge_common.fsutil import atomic_path, sha256_file, write_json
from engine_builder import __version__, manifest
from engine_builder.backends import get_backend
from engine_builder.device import identity, identity_key
from engine_builder.errors import ModelError
from engine_builder.fingerprint import fingerprint, payload
from engine_builder.onnx_tools import readable
from engine_builder.options import BuildOptions
from engine_builder.progress import Progress


def default_artifact(onnx_path: str, backend_suffix: str, precision: str) -> str:
    stem = os.path.basename(onnx_path)
    if stem.endswith(".onnx"):
        stem = stem[: -len(".onnx")]
    return os.path.join(os.path.dirname(onnx_path) or ".", "%s.%s%s" % (stem, precision, backend_suffix))


def build(
    onnx_path: str,
    backend_name: str,
    options: BuildOptions,
    output: Optional[str] = None,
    device: Optional[Mapping[str, Any]] = None,
    force: bool = False,
    progress: Optional[Progress] = None,
    backend_kwargs: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Build (or reuse) the artifact for `onnx_path`; returns the manifest plus `changed`."""
    progress = progress or Progress()
    if not os.path.isfile(onnx_path):
        raise ModelError("ONNX file %s does not exist" % onnx_path)
    backend = get_backend(backend_name, **(backend_kwargs or {}))
    backend.check_options(options)
    version = backend.version()
    device = dict(device) if device is not None else identity()
    onnx_sha = sha256_file(onnx_path)
    engine_options = options.engine_options(backend.name)
    key_inputs = dict(
        onnx_sha256=onnx_sha,
        backend=backend.name,
        backend_version=version,
        precision=options.precision,
        options=engine_options,
        device=device,
    )
    key = fingerprint(**key_inputs)
    artifact = output or default_artifact(onnx_path, backend.artifact_suffix, options.precision)

    if not force:
        hit = manifest.cached(artifact, key)
        if hit is not None:
            hit = dict(hit)
            hit.update(
                {
                    "changed": False,
                    "cache_hit": True,
                    "artifact_path": artifact,
                    "manifest_path": manifest.manifest_path(artifact),
                }
            )
            return hit

    readable(onnx_path)  # a cut or foreign file: one clear message, whichever backend would parse it
    started = time.time()
    t0 = time.monotonic()
    with atomic_path(artifact) as tmp:
        extra = backend.build(onnx_path, str(tmp), options, progress)
        artifact_sha = sha256_file(str(tmp))
        artifact_size = os.path.getsize(str(tmp))
    build_s = time.monotonic() - t0

    data: Dict[str, Any] = {
        "schema": manifest.MANIFEST_SCHEMA,
        "tool": {"name": "engine_builder", "version": __version__},
        "fingerprint": key,
        "fingerprint_inputs": payload(**key_inputs),
        "backend": {"name": backend.name, "version": version},
        "precision": options.precision,
        "options": engine_options,
        "device": device,
        "device_key": identity_key(device),
        "onnx": {"path": os.path.basename(onnx_path), "sha256": onnx_sha, "size": os.path.getsize(onnx_path)},
        "artifact": {"path": os.path.basename(artifact), "sha256": artifact_sha, "size": artifact_size},
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "build_seconds": round(build_s, 3),
        "backend_facts": extra,
    }
    write_json(manifest.manifest_path(artifact), data)
    data.update(
        {
            "changed": True,
            "cache_hit": False,
            "artifact_path": artifact,
            "manifest_path": manifest.manifest_path(artifact),
        }
    )
    return data


def timing_cache_path(cache_dir: str, tensorrt_version: Optional[str], device: Mapping[str, Any]) -> str:
    """A TensorRT timing cache file in `cache_dir` named after the device and the TensorRT version
    (a cache from another device or version is refused by the builder, so never share one)."""
    import hashlib

    from engine_builder.fingerprint import canonical_json

    key = canonical_json({"device": identity_key(dict(device)), "tensorrt": tensorrt_version})
    tag = hashlib.sha256(key.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, "timing-trt%s-%s.cache" % (tensorrt_version, tag))
