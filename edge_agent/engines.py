"""A release's engines, through engine_builder's one engine path (`engine_builder ensure`).

Staging a release asks engine_builder, for each of the release's `models:`, for an engine in the
robot's engine store that passed its gate: a cache hit when the trt_engine plugin (push) or an
earlier release already built it, else a build and a gate run on the robot (pull). The references
written into the release (.edge/engines.json) name the store's artifact and its sha256; the app
loads exactly that file, and the health gate checks it is still the one the gate passed.

engine_builder runs as a subprocess of the same interpreter with the agent's zip on PYTHONPATH
(it ships inside edge-agent.pyz), under its contract (engine_builder/contract.py).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, List, Optional

from edge_agent.errors import AgentError, Refused
from edge_common.fsutil import sha256_file
from engine_builder import contract, store


def ensure_all(
    python: str,
    pythonpath: str,
    store_root: str,
    backend: str,
    release_dir: str,
    models: List[Dict[str, Any]],
    timeout: float,
    tag: str,
    resources: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Build or reuse every model's engine; name -> reference. A gate that says no refuses the
    release (nothing is switched); any other failure is an error with engine_builder's message.
    `resources` is the robot's resource budget, checked during each engine's gate benchmark."""
    refs: Dict[str, Any] = {}
    budget = ["--resources", json.dumps(resources, sort_keys=True)] if resources else []
    for model in models:
        envelope = contract.run(
            python,
            "ensure",
            [
                "--store",
                store_root,
                "--base",
                release_dir,
                "--spec",
                json.dumps(model, sort_keys=True),
                "--backend",
                backend or "auto",
                "--lock-timeout",
                str(timeout),
                *budget,
            ],
            pythonpath,
            timeout,
        )
        if not envelope.get("ok"):
            error = envelope.get("error") or {}
            why = "release %s: engine %s: %s" % (tag, model.get("name"), contract.message(envelope))
            if error.get("kind") in ("gate", "model"):
                raise Refused(why, {"engine_builder": envelope})
            raise AgentError(why, {"engine_builder": envelope})
        refs[model["name"]] = reference(envelope, model)
    return refs


def reference(envelope: Dict[str, Any], model: Dict[str, Any]) -> Dict[str, Any]:
    """What a release records of an engine (and the app reads from active.json)."""
    gate = envelope.get("gate") or {}
    bench = gate.get("bench") or {}
    compare = ((gate.get("compare") or {}).get("outputs") or {}).values()
    accuracy = [o.get("candidate_accuracy") for o in compare if o.get("candidate_accuracy") is not None]
    return {
        "artifact": envelope["artifact"],
        "sha256": envelope["sha256"],
        "fingerprint": envelope["fingerprint"],
        "backend": envelope["backend"],
        "backend_version": envelope.get("backend_version"),
        "precision": envelope["precision"],
        "built": bool(envelope.get("built")),
        "onnx": model["onnx"],
        "onnx_sha256": envelope.get("onnx_sha256"),
        "module_class": (envelope.get("device") or {}).get("module_class"),
        "gate": {
            "passed": gate.get("passed"),
            "p99_ms": (bench.get("latency_ms") or {}).get("p99"),
            "p99_target_ms": bench.get("p99_target_ms"),
            "latency_ms": bench.get("latency_ms"),
            "accuracy": min(accuracy) if accuracy else None,
            "resources": gate.get("resources"),
        }
        if gate
        else None,
    }


def pin(store_root: str, owner: str, releases_refs: Iterable[Dict[str, Any]]) -> None:
    """Tell the store which engines the kept releases still use: retention never removes them."""
    store.pin(store_root, owner, [ref["fingerprint"] for refs in releases_refs for ref in refs.values()])


def prune(store_root: str, names: Iterable[str], keep: int) -> Dict[str, List[str]]:
    return {name: store.prune(store_root, name, keep) for name in sorted(set(names))}


def verify(refs: Dict[str, Any]) -> Optional[str]:
    """None when every engine the release names is still the file its gate passed, else why not."""
    for name, ref in sorted(refs.items()):
        artifact = ref.get("artifact")
        if not artifact or not os.path.isfile(artifact):
            return "engine %s: %s is missing" % (name, artifact)
        if ref.get("sha256") and sha256_file(artifact) != ref["sha256"]:
            return "engine %s: %s changed since its gate passed (sha256 differs)" % (name, artifact)
        if ref.get("gate") and ref["gate"].get("passed") is False:
            return "engine %s did not pass its gate" % name
    return None
