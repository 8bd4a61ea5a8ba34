"""`engine-builder ensure`: the one engine path.

Given a model spec (an entry of a release's `models:`), make sure the robot's engine store holds
an engine for it that passed its gate, and say which: fingerprint, artifact path, sha256, gate.
The trt_engine action plugin runs it on the robot in push deploys (after sending what the store
lacks); the release agent runs it when it stages a release (pull mode, or a push whose engines the
plugin already built: then it is a cache hit). Same store, same fingerprint, same gate, so a build
by either is a hit for the other, and what the app loads is what the gate checked.

Model spec (paths relative to `base`, the release folder):

    name: digits
    onnx: models/digits_int8_qdq.onnx
    precision: int8              # fp32, fp16, int8 (Q/DQ model) or best
    backends: [tensorrt, onnxruntime]   # preference; the first the robot has is used
    build: {workspace_mib: 1024, dla_core: 0, gpu_fallback: true,
            shapes: {min: "input:1x3x640x640", opt: ..., max: ...}}
    golden: {samples: models/golden.npz,      # inputs, labels, expected.<output> (FP32)
             max_accuracy_drop_points: 1.0,    # with labels: points lost against FP32
             max_top1_disagreement: 0.01,      # without labels (applies to both when set)
             max_abs_error: 2.0,
             p99_ms: 50 | {orin_nano: 30, orin_nx: 15, agx_orin: 10, default: 50}}
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, List, Optional

from edge_common.fsutil import LockTimeout, read_json, sha256_file, write_json
from engine_builder import gate, onnx_tools, store
from engine_builder.errors import BuildError, EngineBuilderError, ModelError, UsageError
from engine_builder.progress import Progress

# ROOT/<name>/.refused.json: the gate records of engines refused for accuracy, by fingerprint and
# gate record key (the newest few). The verdict is a property of the model, the golden set and the
# robot: asked the same question again (the update timer's next pull of the same release), ensure
# answers from it instead of building again (minutes for TensorRT). A latency refusal is not kept
# (load on the robot may have caused it); --force builds and gates again.
REFUSED_RECORD = ".refused.json"
REFUSED_KEPT = 10
BACKEND_ORDER = ("tensorrt", "trtexec", "onnxruntime")
SPEC_KEYS = ("name", "onnx", "precision", "backend", "backends", "build", "golden")
BUILD_KEYS = ("workspace_mib", "dla_core", "gpu_fallback", "shapes", "builder_optimization_level")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_spec(spec: Dict[str, Any]) -> Dict[str, Any]:
    if not isinstance(spec, dict):
        raise UsageError("a model spec is a mapping (an entry of the release's models:), not %r" % (spec,))
    unknown = set(spec) - set(SPEC_KEYS)
    if unknown:
        raise UsageError(
            "model spec has unknown key(s) %s; known: %s" % (", ".join(sorted(unknown)), ", ".join(SPEC_KEYS))
        )
    if not NAME_RE.match(str(spec.get("name") or "")):
        raise UsageError("model name %r is not a plain name (letters, digits, . _ -)" % spec.get("name"))
    if not spec.get("onnx"):
        raise UsageError("model %s names no onnx file" % spec["name"])
    build_unknown = set(spec.get("build") or {}) - set(BUILD_KEYS)
    if build_unknown:
        raise UsageError(
            "model %s: unknown build option(s) %s" % (spec["name"], ", ".join(sorted(build_unknown)))
        )
    return spec


def choose_backend(wanted: Optional[str], preference: Optional[List[str]], backends: Dict[str, Any]) -> str:
    """An explicit backend must be there; `auto` takes the first of `preference` the robot has."""
    if wanted and wanted != "auto":
        info = backends.get(wanted) or {}
        if not info.get("available"):
            raise UsageError(
                "backend %s is not available on this robot: %s" % (wanted, info.get("reason", "not found"))
            )
        return wanted
    order = list(preference or BACKEND_ORDER)
    for name in order:
        if (backends.get(name) or {}).get("available"):
            return name
    raise BuildError(
        "no engine backend on this robot: wanted one of %s. Install TensorRT's Python bindings "
        "(python3-libnvinfer, part of JetPack) or onnxruntime" % ", ".join(order)
    )


def resolve_precision(precision: str, backend: str, onnx_path: Optional[str]) -> Optional[str]:
    """`best`: INT8 for a Q/DQ model, else FP16 on TensorRT and FP32 on onnxruntime (None: the model
    must be read to tell, and it is not here)."""
    if precision != "best":
        return precision
    if not onnx_path or not os.path.isfile(onnx_path):
        return None
    from engine_builder.backends.ort_backend import has_qdq_nodes

    if has_qdq_nodes(onnx_path):
        return "int8"
    return "fp32" if backend == "onnxruntime" else "fp16"


def _path(base: Optional[str], rel: Optional[str]) -> Optional[str]:
    if not rel:
        return None
    return rel if os.path.isabs(rel) or not base else os.path.join(base, rel)


def build_options(spec: Dict[str, Any], precision: str, timing_cache: Optional[str] = None):
    from engine_builder.options import BuildOptions, shape_ranges

    build = spec.get("build") or {}
    shapes = build.get("shapes") or {}
    return BuildOptions(
        precision=precision,
        workspace_mib=build.get("workspace_mib"),
        shapes=shape_ranges(shapes.get("min"), shapes.get("opt"), shapes.get("max")),
        dla_core=build.get("dla_core"),
        gpu_fallback=bool(build.get("gpu_fallback")) if build.get("dla_core") is not None else False,
        builder_optimization_level=build.get("builder_optimization_level"),
        timing_cache=timing_cache,
    )


def ensure(
    root: str,
    spec: Dict[str, Any],
    base: Optional[str] = None,
    onnx_sha256: Optional[str] = None,
    backend: Optional[str] = None,
    dry_run: bool = False,
    force: bool = False,
    keep: int = 3,
    lock_timeout: float = 3600.0,
    probe: Optional[Dict[str, Any]] = None,
    progress: Optional[Progress] = None,
    file_sha256: Optional[Dict[str, str]] = None,
    resources: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Build or reuse the engine of `spec` in the store at `root`; see the module docstring.
    `file_sha256` gives the golden set's and the reference's sha256 (keys `samples`, `reference`)
    for a dry run on a robot that does not hold those files yet. `resources` is the robot's
    resource budget (edge_common.resources), checked while the gate's benchmark runs."""
    from edge_common.resources import check_budget
    from engine_builder.device import probe as probe_device
    from engine_builder.fingerprint import fingerprint

    spec = check_spec(spec)
    progress = progress or Progress()
    name = spec["name"]
    probe = probe or probe_device()
    device = probe["device"]
    chosen = choose_backend(backend or spec.get("backend"), spec.get("backends"), probe["backends"])
    backend_version = probe["backends"][chosen].get("version")
    source = _path(base, spec["onnx"])
    have_source = bool(source) and os.path.isfile(source)
    if not onnx_sha256 and not have_source:
        raise ModelError(
            "model %s: ONNX file %s is not on this robot" % (name, source),
            hint="stage the release first, or give the model's sha256 for a dry run",
        )
    sha = onnx_sha256 or sha256_file(source)
    stored = store.onnx_path(root, sha)
    model_file = stored if os.path.isfile(stored) else (source if have_source else None)
    precision = resolve_precision(spec.get("precision") or "fp32", chosen, model_file)
    conf = gate.settings(spec.get("golden"), device.get("module_class"))
    try:
        conf["resources"] = check_budget(resources) or None
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for key in ("samples", "reference"):
        conf[key] = _path(base, conf[key])
    out: Dict[str, Any] = {
        "name": name,
        "backend": chosen,
        "backend_version": backend_version,
        "precision": precision,
        "onnx_sha256": sha,
        "device": device,
        "store": root,
    }
    if precision is None:  # dry run of `best` before the model reached the robot
        return dict(
            out, fingerprint=None, cache_hit=False, built=False, would_build=True, onnx_on_robot=False
        )
    options = build_options(spec, precision)
    key = fingerprint(
        onnx_sha256=sha,
        backend=chosen,
        backend_version=backend_version,
        precision=precision,
        options=options.engine_options(chosen),
        device=device,
    )
    out["fingerprint"] = key
    cached = None if force else store.verified(root, name, key)
    record_key = gate.record_key(conf, file_sha256) if gate.active(conf) else None
    known = store.gate_record(root, name, key, record_key) if cached and record_key else None
    if dry_run:
        return dict(
            out,
            current=store.current(root, name),
            cache_hit=cached is not None,
            built=False,
            would_build=cached is None,
            would_gate=gate.active(conf) and known is None,
            gate=known,
            onnx_on_robot=model_file is not None,
            artifact=cached["artifact_path"] if cached else None,
        )
    if model_file is None:
        raise ModelError("model %s: ONNX file %s is not on this robot" % (name, source))
    try:
        with store.lock(root, lock_timeout):
            return _ensure_locked(
                root, spec, out, conf, source, sha, options, force, keep, progress, file_sha256
            )
    except LockTimeout as exc:
        raise BuildError(
            "another engine build held the store %s for %.0f s" % (root, lock_timeout),
            hint="wait for it to finish, or raise the build timeout",
        ) from exc


def _refused_path(root: str, name: str) -> str:
    return os.path.join(store.model_dir(root, name), REFUSED_RECORD)


def refused_record(root: str, name: str, fingerprint: str, key: Optional[str]) -> Optional[Dict[str, Any]]:
    """The record of an accuracy refusal of this engine for this gate question, if one was kept."""
    if not key:
        return None
    return ((read_json(_refused_path(root, name), {}) or {}).get(fingerprint) or {}).get(key)


def _keep_refusal(
    root: str, name: str, fingerprint: str, key: Optional[str], verdict: Dict[str, Any]
) -> None:
    if not key or (verdict.get("accuracy") or {}).get("passed") is not False:
        return
    path = _refused_path(root, name)
    records = read_json(path, {}) or {}
    records.setdefault(fingerprint, {})[key] = verdict
    newest = sorted(records, key=lambda fp: max(r.get("at") or "" for r in records[fp].values()))
    for old in newest[:-REFUSED_KEPT]:
        del records[old]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(path, records)


def _ensure_locked(root, spec, out, conf, source, sha, options, force, keep, progress, file_sha256):
    from engine_builder.build import build, timing_cache_path

    name, key = spec["name"], out["fingerprint"]
    if not store.store_onnx(root, source, sha):
        raise ModelError("model %s: no file with sha256 %s on this robot (%s)" % (name, sha, source))
    cached = None if force else store.verified(root, name, key)  # again, under the lock
    built = None
    folder = store.engine_dir(root, name, key)
    if cached is None and not force and gate.active(conf):
        known = refused_record(root, name, key, gate.record_key(conf, file_sha256))
        if known:  # the same engine, the same question: the same answer, without a build
            gate.raise_if_failed(name, key, dict(known, remembered=True), out["precision"])
    if cached is None:
        model = store.onnx_path(root, sha)
        # a cut or foreign file, named as the release (or the plugin) gave it, before a backend parses it
        onnx_tools.readable(model, shown=source if source and os.path.isfile(source) else None)
        staging = store.prepare(root, name, key)
        if out["backend"] != "onnxruntime":
            options.timing_cache = timing_cache_path(
                store.timing_dir(root), out["backend_version"], out["device"]
            )
        from engine_builder.backends import get_backend

        suffix = get_backend(out["backend"]).artifact_suffix
        artifact = os.path.join(staging, "%s.%s%s" % (name, out["precision"], suffix))
        try:
            built = build(
                model,
                out["backend"],
                options,
                output=artifact,
                device=out["device"],
                force=True,
                progress=progress,
            )
            if built["fingerprint"] != key:
                raise BuildError(
                    "engine_builder computed two fingerprints for %s: %s, %s"
                    % (name, key, built["fingerprint"])
                )
            folder = staging
        except BaseException:
            store.discard(root, name, key)
            raise
        cached = dict(built, artifact_path=artifact)
    verdict = None
    if gate.active(conf):
        # a cached engine whose gate answered for these files needs none of them here
        record_key = gate.record_key(conf, file_sha256)
        verdict = None if built or record_key is None else store.gate_record(root, name, key, record_key)
        if verdict is None:
            started = time.monotonic()
            try:
                verdict = gate.run(cached["artifact_path"], out["backend"], conf, progress=progress)
            except EngineBuilderError:
                if built:
                    store.discard(root, name, key)
                raise
            verdict = dict(
                verdict,
                key=record_key,
                at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                seconds=round(time.monotonic() - started, 3),
            )
            store.save_gate_record(folder, record_key, verdict)
        if not verdict["passed"]:
            if built:
                store.discard(root, name, key)
                _keep_refusal(root, name, key, record_key, verdict)
            gate.raise_if_failed(name, key, verdict, out["precision"])
    if built:
        folder = store.commit(root, name, key)
    previous = store.make_current(root, name, key)
    artifact = os.path.join(folder, os.path.basename(cached["artifact_path"]))
    removed = store.prune(root, name, keep)
    return dict(
        out,
        artifact=artifact,
        sha256=(cached.get("artifact") or {}).get("sha256"),
        size=(cached.get("artifact") or {}).get("size"),
        built=built is not None,
        cache_hit=built is None,
        build_seconds=cached.get("build_seconds") if built else None,
        gate=verdict,
        previous_fingerprint=previous,
        removed_fingerprints=removed,
    )
