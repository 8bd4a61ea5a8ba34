"""The engine store on a robot: the one place engines live, whoever builds them.

    ROOT/.onnx/<sha256>.onnx          ONNX models by checksum (sent or linked in once)
    ROOT/.lock                        one build at a time on a robot (builds take all its memory)
    ROOT/.pins/<owner>.json           fingerprints an owner still needs (the release agent: its
                                      kept releases' engines); never pruned
    ROOT/.timing/                     TensorRT timing caches, one per device and TensorRT version
    ROOT/<name>/<fingerprint>/        an engine, its manifest (<artifact>.manifest.json) and its
                                      gate records (gate.json)
    ROOT/<name>/current -> <fp>       the engine last ensured for that model
    ROOT/<name>/.staging-<fp>/        a build in progress; never in use

A build happens in a staging folder and is renamed into place only after it passed its gate, so an
engine in use is never touched by a failed or interrupted build. The trt_engine action plugin (push)
and the release agent (pull) both reach this store through `engine_builder ensure` (ensure.py).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any, Dict, Iterable, List, Optional, Set

from edge_common.fsutil import locked, place_verified, read_json, sha256_file, write_json
from engine_builder import manifest

DEFAULT_ROOT = "/var/lib/edge-deploy/engines"
CURRENT = "current"
STAGING_PREFIX = ".staging-"
GATE_RECORD = "gate.json"


def model_dir(root: str, name: str) -> str:
    return os.path.join(root, name)


def engine_dir(root: str, name: str, fingerprint: str) -> str:
    return os.path.join(root, name, fingerprint)


def staging_dir(root: str, name: str, fingerprint: str) -> str:
    return os.path.join(model_dir(root, name), STAGING_PREFIX + fingerprint)


def onnx_path(root: str, sha256: str) -> str:
    return os.path.join(root, ".onnx", "%s.onnx" % sha256)


def timing_dir(root: str) -> str:
    return os.path.join(root, ".timing")


def lock(root: str, timeout: float):
    """One build (or gate run) at a time on this robot: `LockTimeout` after `timeout` seconds."""
    return locked(os.path.join(root, ".lock"), timeout)


def current(root: str, name: str) -> Optional[str]:
    link = os.path.join(model_dir(root, name), CURRENT)
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


def artifact_in(folder: str) -> Optional[str]:
    """The artifact of an engine folder: the one file with a manifest beside it."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    for entry in names:
        if entry.endswith(".manifest.json"):
            return os.path.join(folder, entry[: -len(".manifest.json")])
    return None


def verified(root: str, name: str, fingerprint: str) -> Optional[Dict[str, Any]]:
    """The manifest of the engine built for `fingerprint`, if it is there and its checksum verifies."""
    artifact = artifact_in(engine_dir(root, name, fingerprint))
    if artifact is None:
        return None
    data = manifest.cached(artifact, fingerprint)
    if data is not None:
        data = dict(data, artifact_path=artifact)
    return data


def store_onnx(root: str, source: Optional[str], sha256: str) -> bool:
    """Make sure the store holds the ONNX with `sha256` (linked in from `source` when that file has
    it); False when neither the store nor `source` has it."""
    stored = onnx_path(root, sha256)
    if os.path.isfile(stored) and sha256_file(stored) == sha256:
        return True
    return bool(source) and place_verified(source, stored, sha256)


def gate_record(root: str, name: str, fingerprint: str, key: str) -> Optional[Dict[str, Any]]:
    records = read_json(os.path.join(engine_dir(root, name, fingerprint), GATE_RECORD), {}) or {}
    return records.get(key)


def save_gate_record(folder: str, key: str, record: Dict[str, Any]) -> None:
    path = os.path.join(folder, GATE_RECORD)
    records = read_json(path, {}) or {}
    records[key] = record
    write_json(path, records)


def fingerprints(root: str, name: str) -> List[str]:
    """The engines kept for `name`, newest first."""
    folder = model_dir(root, name)
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    found = [
        e
        for e in entries
        if e != CURRENT and not e.startswith(".") and os.path.isdir(os.path.join(folder, e))
    ]
    return sorted(found, key=lambda e: os.path.getmtime(os.path.join(folder, e)), reverse=True)


# ----------------------------------------------------------------------------- pins and retention
def pin(root: str, owner: str, fingerprints_in_use: Iterable[str]) -> None:
    """Record the fingerprints `owner` still needs (replacing what it pinned before)."""
    write_json(os.path.join(root, ".pins", "%s.json" % owner), sorted(set(fingerprints_in_use)))


def pinned(root: str) -> Set[str]:
    found: Set[str] = set()
    folder = os.path.join(root, ".pins")
    for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if entry.endswith(".json"):
            found.update(read_json(os.path.join(folder, entry), []) or [])
    return found


def prune(root: str, name: str, keep: int) -> List[str]:
    """Remove `name`'s engines beyond the `keep` newest; never the current one nor a pinned one."""
    protected = pinned(root) | {current(root, name)}
    removed = []
    for fingerprint in fingerprints(root, name)[max(keep, 1) :]:
        if fingerprint in protected:
            continue
        shutil.rmtree(engine_dir(root, name, fingerprint), ignore_errors=True)
        removed.append(fingerprint)
    _prune_onnx(root)
    return removed


def _prune_onnx(root: str, grace_s: float = 3600) -> None:
    """Drop ONNX models no kept engine or build in progress uses (recent ones are kept too)."""
    wanted = set()
    for name in os.listdir(root):
        folder = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        for fingerprint in fingerprints(root, name):
            artifact = artifact_in(os.path.join(folder, fingerprint))
            data = manifest.read(artifact) if artifact else None
            if data:
                wanted.add((data.get("onnx") or {}).get("sha256"))
    onnx_dir = os.path.join(root, ".onnx")
    now = time.time()
    for entry in os.listdir(onnx_dir) if os.path.isdir(onnx_dir) else []:
        path = os.path.join(onnx_dir, entry)
        if entry.endswith(".onnx") and entry[:-5] not in wanted and now - os.path.getmtime(path) > grace_s:
            os.unlink(path)


# ----------------------------------------------------------------------------- staging and activation
def prepare(root: str, name: str, fingerprint: str) -> str:
    """A fresh, empty staging folder for a build of `fingerprint`."""
    path = staging_dir(root, name, fingerprint)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def discard(root: str, name: str, fingerprint: str) -> None:
    shutil.rmtree(staging_dir(root, name, fingerprint), ignore_errors=True)


def commit(root: str, name: str, fingerprint: str) -> str:
    """Move a passed build from staging into place (replacing a forced rebuild's old copy only once
    the new one is in); returns the engine folder."""
    folder = model_dir(root, name)
    target = engine_dir(root, name, fingerprint)
    staging = staging_dir(root, name, fingerprint)
    if os.path.isdir(target):
        old = os.path.join(folder, ".old-%s-%d" % (fingerprint, os.getpid()))
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
    return target


def make_current(root: str, name: str, fingerprint: str) -> Optional[str]:
    """Point `name`'s current link at `fingerprint` (one rename); returns the previous one."""
    previous = current(root, name)
    folder = model_dir(root, name)
    os.utime(engine_dir(root, name, fingerprint), None)
    tmp = os.path.join(folder, ".current.%d" % os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(fingerprint, tmp)
    os.replace(tmp, os.path.join(folder, CURRENT))
    return previous
