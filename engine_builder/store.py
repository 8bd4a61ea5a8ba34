"""The engine store on a robot: one folder per model, one sub-folder per fingerprint.

    ROOT/.onnx/<sha256>.onnx          ONNX models by checksum (transferred once)
    ROOT/<name>/<fingerprint>/        an engine, its manifest and its reports
    ROOT/<name>/current -> <fp>       the engine in use (swapped atomically)
    ROOT/<name>/.staging-<fp>/        a build in progress; never in use

A build happens in a staging folder and is renamed into place only after it passed its gates, so the
engine in use is never touched by a failed or interrupted build. Run on the robot by the trt_engine
action plugin as `python3 -m engine_builder.store COMMAND ... ` (JSON on stdout); Python 3.8+, stdlib.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Any, Dict, List, Optional

from engine_builder import manifest
from edge_common.fsutil import sha256_file

CURRENT = "current"
STAGING_PREFIX = ".staging-"


def model_dir(root: str, name: str) -> str:
    return os.path.join(root, name)


def onnx_path(root: str, sha256: str) -> str:
    return os.path.join(root, ".onnx", "%s.onnx" % sha256)


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
    artifact = artifact_in(os.path.join(model_dir(root, name), fingerprint))
    if artifact is None:
        return None
    data = manifest.cached(artifact, fingerprint)
    if data is not None:
        data = dict(data, artifact_path=artifact)
    return data


def fingerprints(root: str, name: str) -> List[str]:
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


def state(root: str, name: str, fingerprint: str, onnx_sha256: str) -> Dict[str, Any]:
    data = verified(root, name, fingerprint)
    return {
        "current": current(root, name),
        "cached": data is not None,
        "artifact_path": data["artifact_path"] if data else None,
        "manifest": data,
        "onnx_cached": os.path.isfile(onnx_path(root, onnx_sha256))
        and sha256_file(onnx_path(root, onnx_sha256)) == onnx_sha256,
        "fingerprints": fingerprints(root, name),
    }


def _swap_current(root: str, name: str, fingerprint: str) -> None:
    folder = model_dir(root, name)
    tmp = os.path.join(folder, ".current.%d" % os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(fingerprint, tmp)
    os.replace(tmp, os.path.join(folder, CURRENT))


def prune(root: str, name: str, keep: int, previous: Optional[str]) -> List[str]:
    """Remove engines beyond the `keep` newest; never the current nor the previous one."""
    in_use = {current(root, name), previous}
    removed = []
    for fingerprint in fingerprints(root, name)[max(keep, 1) :]:
        if fingerprint in in_use:
            continue
        shutil.rmtree(os.path.join(model_dir(root, name), fingerprint), ignore_errors=True)
        removed.append(fingerprint)
    _prune_onnx(root)
    return removed


def _prune_onnx(root: str, grace_s: float = 3600) -> None:
    """Drop ONNX models no kept engine or build in progress uses (recent transfers are kept too)."""
    wanted = set()
    for name in os.listdir(root):
        folder = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        for entry in os.listdir(folder):
            model = os.path.join(folder, entry, "model.onnx")
            if entry.startswith(STAGING_PREFIX) and os.path.islink(model):
                wanted.add(os.path.basename(os.readlink(model))[: -len(".onnx")])
        for fingerprint in fingerprints(root, name):
            artifact = artifact_in(os.path.join(folder, fingerprint))
            data = manifest.read(artifact) if artifact else None
            if data:
                wanted.add((data.get("onnx") or {}).get("sha256"))
    onnx_dir = os.path.join(root, ".onnx")
    now = time.time()
    for entry in os.listdir(onnx_dir) if os.path.isdir(onnx_dir) else []:
        path = os.path.join(onnx_dir, entry)
        if (
            entry.endswith(".onnx")
            and entry[: -len(".onnx")] not in wanted
            and now - os.path.getmtime(path) > grace_s
        ):
            os.unlink(path)


def activate(root: str, name: str, fingerprint: str, staging: Optional[str], keep: int) -> Dict[str, Any]:
    """Move a passed build into place (if given) and make it current; prune old engines."""
    folder = model_dir(root, name)
    target = os.path.join(folder, fingerprint)
    previous = current(root, name)
    if staging:
        if os.path.isdir(target):
            # A forced rebuild of the same fingerprint: the old copy goes only once the new one is in.
            old = os.path.join(folder, ".old-%s-%d" % (fingerprint, os.getpid()))
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    elif verified(root, name, fingerprint) is None:
        raise SystemExit("engine %s/%s is not in the store or does not verify" % (name, fingerprint))
    os.utime(target, None)
    _swap_current(root, name, fingerprint)
    removed = prune(root, name, keep, previous if previous != fingerprint else None)
    return {
        "previous": previous,
        "current": fingerprint,
        "removed": removed,
        "changed": previous != fingerprint or bool(staging),
    }


def staging_dir(root: str, name: str, fingerprint: str) -> str:
    return os.path.join(model_dir(root, name), STAGING_PREFIX + fingerprint)


def discard(root: str, name: str, fingerprint: str) -> Dict[str, Any]:
    path = staging_dir(root, name, fingerprint)
    existed = os.path.isdir(path)
    shutil.rmtree(path, ignore_errors=True)
    return {"removed": existed}


def prepare(root: str, name: str, fingerprint: str, onnx_sha256: str) -> Dict[str, Any]:
    """A fresh staging folder holding `model.onnx` (a link to the stored ONNX)."""
    path = staging_dir(root, name, fingerprint)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    model = os.path.join(path, "model.onnx")
    os.symlink(onnx_path(root, onnx_sha256), model)
    return {"staging": path, "model": model, "started": time.time()}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m engine_builder.store", description=__doc__)
    parser.add_argument("command", choices=("state", "prepare", "activate", "discard"))
    parser.add_argument("--root", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--fingerprint", required=True)
    parser.add_argument("--onnx-sha256")
    parser.add_argument("--staging", action="store_true", help="activate: move the staging build in")
    parser.add_argument("--keep", type=int, default=3)
    args = parser.parse_args(argv)
    os.makedirs(model_dir(args.root, args.name), exist_ok=True)
    if args.command == "state":
        result = state(args.root, args.name, args.fingerprint, args.onnx_sha256 or "")
    elif args.command == "prepare":
        result = prepare(args.root, args.name, args.fingerprint, args.onnx_sha256 or "")
    elif args.command == "activate":
        staging = staging_dir(args.root, args.name, args.fingerprint) if args.staging else None
        result = activate(args.root, args.name, args.fingerprint, staging, args.keep)
    else:
        result = discard(args.root, args.name, args.fingerprint)
    sys.stdout.write(json.dumps(result, sort_keys=True, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
